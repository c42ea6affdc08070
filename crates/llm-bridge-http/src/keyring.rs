//! A provider's API keys: requests are spread over them in turn, and a key the upstream
//! throttled (429) rests for a while so that the others carry the load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;

/// How long a throttled key rests when the upstream did not say.
pub const DEFAULT_REST: Duration = Duration::from_secs(10);

/// The keys, as ready-made (sensitive) header values.
pub struct KeyRing {
    keys: Vec<HeaderValue>,
    next: AtomicUsize,
    /// Per key: resting until this many milliseconds after `epoch` (0 = not resting).
    resting_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing([{} redacted])", self.keys.len())
    }
}

impl KeyRing {
    /// A ring of these header values (mark them sensitive first).
    pub fn new(keys: Vec<HeaderValue>) -> Self {
        KeyRing {
            resting_until: keys.iter().map(|_| AtomicU64::new(0)).collect(),
            keys,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// `text` with these keys (with or without their `Bearer ` prefix), any bearer token and
    /// URL credentials replaced by `[redacted]`.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let secrets: Vec<&str> = self
            .keys
            .iter()
            .filter_map(|k| k.to_str().ok())
            .map(|k| k.strip_prefix("Bearer ").unwrap_or(k))
            .collect();
        llm_bridge_core::redact::redact(text, &secrets)
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next key in turn that is not resting (if all rest, the one that wakes first), and
    /// its index for [`KeyRing::rest`].
    pub fn pick(&self) -> Option<(usize, &HeaderValue)> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if n == 1 {
            return Some((0, &self.keys[0]));
        }
        let now = self.now();
        let mut soonest = (u64::MAX, start % n);
        for step in 0..n {
            let i = (start + step) % n;
            let until = self.resting_until[i].load(Ordering::Relaxed);
            if until <= now {
                return Some((i, &self.keys[i]));
            }
            if until < soonest.0 {
                soonest = (until, i);
            }
        }
        Some((soonest.1, &self.keys[soonest.1]))
    }

    /// The key for a request of `session`: the session's own key (by its hash) while that
    /// key is not resting, so that a session keeps hitting the provider's prompt cache;
    /// otherwise, and without a session, the next key in turn ([`KeyRing::pick`]).
    pub fn pick_for(&self, session: Option<u64>) -> Option<(usize, &HeaderValue)> {
        let n = self.keys.len() as u64;
        if let Some(hash) = session.filter(|_| n > 1) {
            let i = usize::try_from(hash % n).unwrap_or(0);
            if self.resting_until[i].load(Ordering::Relaxed) <= self.now() {
                return Some((i, &self.keys[i]));
            }
        }
        self.pick()
    }

    /// Whether some key is not resting now.
    pub fn any_ready(&self) -> bool {
        let now = self.now();
        self.resting_until
            .iter()
            .any(|u| u.load(Ordering::Relaxed) <= now)
    }

    /// Rests key `index` for `duration` (it was throttled).
    pub fn rest(&self, index: usize, duration: Duration) {
        if let Some(slot) = self.resting_until.get(index) {
            let until = self.now() + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2);
            slot.fetch_max(until, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        KeyRing::new((0..n).map(|i| HeaderValue::from(i as u64)).collect())
    }

    #[test]
    fn a_session_keeps_its_key_while_it_is_not_resting() {
        let r = ring(4);
        let session = Some(llm_bridge_core::session_hash("session-a"));
        let first = r.pick_for(session).unwrap().0;
        for _ in 0..10 {
            assert_eq!(r.pick_for(session).unwrap().0, first);
        }
        r.rest(first, Duration::from_secs(60));
        assert_ne!(r.pick_for(session).unwrap().0, first);
        let spread: std::collections::HashSet<usize> = (0..40)
            .map(|i| {
                r.pick_for(Some(llm_bridge_core::session_hash(&format!("s{i}"))))
                    .unwrap()
                    .0
            })
            .collect();
        assert!(
            spread.len() >= 3,
            "sessions spread over the keys: {spread:?}"
        );
    }

    #[test]
    fn keys_take_turns_and_a_throttled_key_rests() {
        let r = ring(3);
        let picks: Vec<usize> = (0..6).map(|_| r.pick().unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        r.rest(1, Duration::from_secs(60));
        let picks: Vec<usize> = (0..6).map(|_| r.pick().unwrap().0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(r.any_ready());
        // All resting: the one that wakes first.
        r.rest(0, Duration::from_secs(30));
        r.rest(2, Duration::from_secs(90));
        assert_eq!(r.pick().unwrap().0, 0);
        assert!(ring(0).pick().is_none());
        assert!(!format!("{:?}", ring(2)).contains('0'));
    }
}
