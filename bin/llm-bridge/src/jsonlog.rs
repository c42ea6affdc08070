//! JSON log lines, written directly: one object a line,
//! `{"timestamp","level","message",<fields>…,"target","span":{<span fields>…,"name"}}`; a line
//! logged while a request is served has `"span":{"request_id":…,"transport":…,"name":"request"}`.
//!
//! The shape is tracing-subscriber's JSON format with flattened events; the formatter is our
//! own because that one re-parses every span's fields as JSON for every line, which cost more
//! than the rest of a request (measured with callgrind: ~42k instructions per access event,
//! against ~4k here).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llm_bridge_core::calendar::civil_from_days;
use llm_bridge_gateway::log_context::with_current;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines.
pub struct JsonLines;

/// Formats span fields as a JSON fragment (`"k":v,"k2":v2`), stored with the span.
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut out = String::new();
        let mut v = JsonVisitor {
            out: &mut out,
            first: true,
            message: None,
        };
        fields.record(&mut v);
        writer.write_str(&out)
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // An access line is about 600 bytes: room for it at once, not a copy on growing.
        let mut line = String::with_capacity(1024);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line);
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        let mut fields = String::with_capacity(768);
        let mut v = JsonVisitor {
            out: &mut fields,
            first: false,
            message: None,
        };
        event.record(&mut v);
        if let Some(message) = v.message.take() {
            line.push_str(",\"message\":");
            line.push_str(&message);
        }
        line.push_str(&fields);
        line.push_str(",\"target\":");
        escape(&mut line, event.metadata().target());
        // The request being served (see `llm_bridge_gateway::log_context`), written as the
        // span it was; or the innermost tracing span (a WebSocket connection's).
        let in_request = with_current(|request| {
            let Some(request) = request else {
                return false;
            };
            line.push_str(",\"span\":{\"request_id\":");
            escape(&mut line, request.request_id());
            line.push_str(",\"transport\":");
            escape(&mut line, request.transport());
            line.push_str(",\"name\":\"request\"}");
            true
        });
        if !in_request && let Some(span) = ctx.lookup_current() {
            line.push_str(",\"span\":{");
            let ext = span.extensions();
            if let Some(f) = ext.get::<FormattedFields<N>>() {
                if !f.fields.is_empty() {
                    line.push_str(&f.fields);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            escape(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

struct JsonVisitor<'a> {
    out: &'a mut String,
    /// No comma before the first field (span fragments).
    first: bool,
    /// The `message` field, kept to be written first.
    message: Option<String>,
}

impl JsonVisitor<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let mut m = String::with_capacity(value.len() + 2);
            escape(&mut m, value);
            self.message = Some(m);
            return;
        }
        self.key(field);
        escape(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let mut m = String::with_capacity(64);
            m.push('"');
            let _ = write!(Escaping(&mut m), "{value:?}");
            m.push('"');
            self.message = Some(m);
            return;
        }
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaping(self.out), "{value:?}");
        self.out.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        decimal(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.out.push('-');
        }
        decimal(self.out, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            number(self.out, value);
        } else {
            self.out.push_str("null");
        }
    }
}

/// A JSON string, escaped.
fn escape(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// Whether any byte is `"`, `\\` or a control character, eight bytes at a time: the check runs
/// on every name and value of every line (callgrind: 5.6k instructions an access line byte by
/// byte). Each test is the exact "has a byte below n" / "has a zero byte" bit trick.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        if below(x, 0x20) | has(x, b'"') | has(x, b'\\') != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b == b'"' || b == b'\\' || b < 0x20)
}

/// The escaped contents of a JSON string (without the quotes).
fn escape_into(out: &mut String, s: &str) {
    // Most values (and every field name) need no escaping: copy them whole.
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Writes `Debug`/`Display` output escaped, without an intermediate string.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// A finite number with at most three decimals (`12.345`), as durations in milliseconds
/// are logged; cheaper than the shortest round-trip form.
fn number(out: &mut String, value: f64) {
    if !value.is_finite() || value.abs() >= 1e15 {
        let _ = write!(out, "{value}");
        return;
    }
    let thousandths = (value * 1000.0).round() as i64;
    let (sign, abs) = if thousandths < 0 {
        ("-", -thousandths)
    } else {
        ("", thousandths)
    };
    let (int, frac) = (abs.unsigned_abs() / 1000, abs.unsigned_abs() % 1000);
    out.push_str(sign);
    decimal(out, int);
    if frac != 0 {
        out.push('.');
        padded(out, frac, 3);
        while out.ends_with('0') {
            out.pop();
        }
    }
}

/// `value` in decimal. `write!` goes through the formatting machinery, which costs several
/// times more for the handful of integers every access line carries (callgrind); itoa does not.
fn decimal(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// `value` in decimal, zero-padded to `width` digits (`value` must fit them).
fn padded(out: &mut String, value: u64, width: u32) {
    let mut unit = 10u64.pow(width.saturating_sub(1));
    while unit > 0 {
        out.push(char::from(b'0' + (value / unit % 10) as u8));
        unit /= 10;
    }
}

/// `2026-11-26T13:05:00.123456Z`.
fn timestamp(out: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    write_timestamp(out, now);
}

/// `now` (since the Unix epoch) as [`timestamp`] writes it. The date, hour and minute are
/// written once a minute by each thread and copied after that: the whole timestamp was 1k
/// instructions of an access line's 8.7k (callgrind).
fn write_timestamp(out: &mut String, now: Duration) {
    thread_local! {
        /// The minute (since the epoch) and its `2026-11-26T13:05:`.
        static MINUTE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let secs = now.as_secs();
    MINUTE.with_borrow_mut(|(minute, prefix)| {
        if *minute != secs / 60 {
            *minute = secs / 60;
            prefix.clear();
            write_minute(prefix, secs);
        }
        out.push_str(prefix);
    });
    padded(out, secs % 60, 2);
    out.push('.');
    padded(out, u64::from(now.subsec_micros()), 6);
    out.push('Z');
}

/// `2026-11-26T13:05:` for `secs` since the epoch.
fn write_minute(out: &mut String, secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    if !(0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}");
    } else {
        padded(out, y as u64, 4);
    }
    for (sep, value, width) in [
        ('-', m as u64, 2),
        ('-', d as u64, 2),
        ('T', rem / 3600, 2),
        (':', rem % 3600 / 60, 2),
    ] {
        out.push(sep);
        padded(out, value, width);
    }
    out.push(':');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_needs() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_rule() {
        let slow = |s: &[u8]| s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
        // Every byte value at every place of words and tails, among bytes that need nothing.
        for len in 1..=19 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_escape(&s), slow(&s), "{b:#x} at {at} of {len}");
                    // Next to the bytes just above and below the ones that count.
                    s.iter_mut().for_each(|c| *c = 0x21);
                    s[at] = b;
                    assert_eq!(needs_escape(&s), slow(&s), "{b:#x} at {at} of {len}");
                    s.iter_mut().for_each(|c| *c = 0xff);
                    s[at] = b;
                    assert_eq!(needs_escape(&s), slow(&s), "{b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("chatcmpl-0123456789abcdef é ü".as_bytes()));
    }

    #[test]
    fn numbers_keep_three_decimals() {
        for (v, text) in [
            (0.0, "0"),
            (1.5, "1.5"),
            (12.3456, "12.346"),
            (-0.25, "-0.25"),
            (1e20, "100000000000000000000"),
        ] {
            let mut s = String::new();
            number(&mut s, v);
            assert_eq!(s, text);
        }
    }

    #[test]
    fn integers_as_the_formatter_writes_them() {
        for v in [0u64, 7, 10, 99, 1_000, 123_456_789, u64::MAX] {
            let mut s = String::new();
            decimal(&mut s, v);
            assert_eq!(s, v.to_string());
        }
        for (v, width) in [(0u64, 3), (5, 2), (42, 6), (999_999, 6), (2026, 4)] {
            let mut s = String::new();
            padded(&mut s, v, width);
            assert_eq!(s, format!("{v:0width$}", width = width as usize));
        }
    }

    #[test]
    fn a_timestamp_is_the_same_whether_its_minute_was_cached_or_not() {
        // Seconds within one minute, across minutes, days, a leap day and years, and back:
        // each written after the one before it, on one thread, against `format!`.
        let instants = [
            1_764_162_300,
            1_764_162_301,
            1_764_162_359,
            1_764_162_360,
            1_764_162_300,
            1_709_164_799, // 2024-02-28T23:59:59
            1_709_164_800, // 2024-02-29T00:00:00
            1_735_689_599, // 2024-12-31T23:59:59
            1_735_689_600,
            0,
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        for (i, secs) in instants.into_iter().enumerate() {
            let micros = (i as u32 * 123_457) % 1_000_000;
            let mut s = String::new();
            write_timestamp(&mut s, Duration::new(secs, micros * 1_000));
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days as i64);
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            assert_eq!(s, want, "{secs}");
        }
        let mut s = String::new();
        write_timestamp(&mut s, Duration::new(1_709_164_800, 5_000));
        write_timestamp(&mut s, Duration::new(1_764_162_359, 999_999_000));
        assert_eq!(s, "2024-02-29T00:00:00.000005Z2025-11-26T13:05:59.999999Z");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let mut s = String::new();
        timestamp(&mut s);
        assert_eq!(s.len(), 27, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
    }
}
