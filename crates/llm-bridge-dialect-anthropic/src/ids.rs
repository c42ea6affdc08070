//! Ids for answers an upstream did not name.

use std::hash::BuildHasher;
use std::hash::RandomState;
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

/// Whether an upstream's id can be copied into ours as it is.
pub(crate) fn is_plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
