//! W3C trace context (`traceparent`): what a request carries to its upstream so that the
//! upstream's spans join the gateway's trace. Pure: no exporter, no clock, no randomness.

use std::fmt;

/// A parsed `traceparent` header (version `00`): the trace, the span the next hop is a child
/// of, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The parent span's id (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value as W3C Trace Context says: `00-<32 hex>-<16 hex>-<2 hex>`,
    /// lowercase; a higher version is read by its first four fields; all-zero ids and version
    /// `ff` are invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim().as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff
            || (version == 0 && v.len() != 55)
            || (version > 0 && v.len() > 55 && v[55] != b'-')
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The same trace and flags, with `span_id` as the parent the next hop sees.
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { span_id, ..*self }
    }

    /// The header value, `00-<trace id>-<span id>-<flags>`.
    /// Written by hand: it goes on every traced upstream request, and `{:02x}` per byte
    /// through the formatter cost 7k instructions a header (callgrind).
    pub fn to_header(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        fn hex(out: &mut String, bytes: &[u8]) {
            for b in bytes {
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        hex(&mut out, &self.trace_id);
        out.push('-');
        hex(&mut out, &self.span_id);
        out.push('-');
        hex(&mut out, &[self.flags]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

/// Lowercase hex only, as the spec asks.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// A span id derived from a seed and an index (splitmix64): distinct for distinct indexes,
/// never zero. The router names its attempt spans with it, from the request span's id.
pub fn derived_span_id(seed: [u8; 8], index: u64) -> [u8; 8] {
    let mut z = u64::from_be_bytes(seed)
        .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 {
        z = 1;
    }
    z.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_spec_example() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).unwrap();
        assert!(t.sampled());
        assert_eq!(t.to_header(), s);
        assert_eq!(t.to_string(), s);
        let all = TraceParent {
            trace_id: [0xff; 16],
            span_id: [0x0a; 8],
            flags: 0,
        };
        assert_eq!(
            all.to_header(),
            "00-ffffffffffffffffffffffffffffffff-0a0a0a0a0a0a0a0a-00"
        );
        assert_eq!(t.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may add fields after a dash.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz")
                .is_some()
        );
    }

    #[test]
    fn derived_ids_differ_by_index() {
        let seed = [1, 2, 3, 4, 5, 6, 7, 8];
        let ids: std::collections::HashSet<_> =
            (0..100).map(|i| derived_span_id(seed, i)).collect();
        assert_eq!(ids.len(), 100);
        assert!(!ids.contains(&[0; 8]));
    }
}
