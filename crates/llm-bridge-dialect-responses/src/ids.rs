//! Ids of responses and of their output items.
//!
//! A response id is `resp_` + 12 hex digits of the time in milliseconds + 12 random hex
//! digits + 16 hex digits of a fingerprint of the upstream's chat completion id: unique even
//! when an upstream repeats its ids (some local servers answer every request as
//! `chatcmpl-123`), which matters because a store keys responses by it. The time comes first
//! so that a store's index of ids grows at its end: with ids random from the first digit,
//! each kept answer wrote a page of that index somewhere else (SQLite: 4 KB more to the
//! write-ahead log per answer). An id is no secret: a kept answer is only given to the key
//! that made it. Item ids reuse the response id's body with the item's kind as prefix and
//! its output index as suffix (`msg_<body>_0`, `rs_<body>_1`, `fc_<body>_2`), so that the
//! same item has the same id in the stream and in the final response.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 96 unpredictable bits as hex.
pub(crate) fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // RandomState is seeded from the OS: good enough for ids, no extra dependency.
    let a = RandomState::new().hash_one((n, nanos));
    let b = RandomState::new().hash_one((nanos, n, a));
    format!("{a:016x}{:08x}", b as u32)
}

/// FNV-1a, 64 bits: a stable fingerprint (the same in every process).
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fresh response id for the answer to the chat completion `chat_id` (see the module
/// docs): `resp_` followed by 40 hex digits.
pub fn response_id(chat_id: Option<&str>) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "resp_{:012x}{}{:016x}",
        ms & 0xffff_ffff_ffff,
        &random_hex()[..12],
        fingerprint(chat_id.unwrap_or_default())
    )
}

/// The id of the output item at `output_index` of `response_id`; `prefix` is `msg`, `rs`
/// or `fc`.
pub fn item_id(response_id: &str, prefix: &str, output_index: usize) -> String {
    let body = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{body}_{output_index}")
}

/// A call id for a tool call the upstream did not name.
pub(crate) fn call_id() -> String {
    format!("call_{}", random_hex())
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = response_id(Some("chatcmpl-123"));
        let b = response_id(Some("chatcmpl-123"));
        assert_ne!(a, b, "an upstream repeating its ids must not repeat ours");
        assert!(a.starts_with("resp_") && a.len() == 45, "{a}");
        assert_eq!(a[29..], b[29..], "same fingerprint");
        assert!(a[5..].bytes().all(|c| c.is_ascii_hexdigit()));
        let item = item_id(&a, "fc", 2);
        assert!(item.starts_with("fc_") && item.ends_with("_2"));
        assert_eq!(&item[3..43], &a[5..]);
    }

    #[test]
    fn ids_made_later_sort_later() {
        let mut last = response_id(None);
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let next = response_id(None);
            assert!(last < next, "{last} then {next}");
            last = next;
        }
    }
}
