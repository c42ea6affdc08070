//! Which route target served each session lately: bounded in entries and in age, so that a
//! gateway serving millions of sessions keeps a fixed amount of memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Sessions remembered at most.
const CAPACITY: usize = 100_000;
/// A session not seen for this long is forgotten (a provider's prompt cache is long cold).
const TTL: Duration = Duration::from_secs(3600);

/// `(route, session)` → the index of the target that served it, and when.
#[derive(Default)]
pub(crate) struct Sessions {
    pins: Mutex<HashMap<u64, (usize, Instant)>>,
}

fn slot(route: &str, session: u64) -> u64 {
    llm_bridge_core::session_hash(route) ^ session.rotate_left(17)
}

impl Sessions {
    /// The target that last served this session on this route, if it is remembered.
    pub(crate) fn get(&self, route: &str, session: u64) -> Option<usize> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.get(&slot(route, session))
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(target, _)| *target)
    }

    /// Remembers that `target` served this session on this route.
    pub(crate) fn set(&self, route: &str, session: u64, target: usize) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if pins.len() >= CAPACITY {
            pins.retain(|_, (_, at)| at.elapsed() < TTL);
            if pins.len() >= CAPACITY {
                // Still full of live sessions: forget the older half.
                let mut ages: Vec<Instant> = pins.values().map(|(_, at)| *at).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                pins.retain(|_, (_, at)| *at > cutoff);
            }
        }
        pins.insert(slot(route, session), (target, Instant::now()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pins.lock().map(|p| p.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_are_remembered_per_route_bounded_and_forgotten_when_old() {
        let s = Sessions::default();
        s.set("smart", 7, 2);
        assert_eq!(s.get("smart", 7), Some(2));
        assert_eq!(s.get("other", 7), None);
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(s.get("smart", 7), None);
        for i in 0..(CAPACITY as u64 + 10) {
            s.set("smart", i, 0);
        }
        assert!(s.len() <= CAPACITY, "{}", s.len());
    }
}
