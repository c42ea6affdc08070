//! The order in which a route's targets are tried.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Strategy;
use crate::health::Health;

/// Randomness, injectable for tests.
pub trait Random: Send + Sync {
    /// A number in `[0, 1)`.
    fn next_f64(&self) -> f64;
}

/// xorshift64*, seeded from the OS: fast, and good enough for load spreading and jitter.
pub struct XorShift(Mutex<u64>);

impl XorShift {
    /// Seeded from the operating system (or the clock, if that fails).
    pub fn from_entropy() -> Self {
        let mut b = [0u8; 8];
        let seed = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64),
        };
        Self::seeded(seed)
    }

    /// A fixed sequence (tests).
    pub fn seeded(seed: u64) -> Self {
        XorShift(Mutex::new(seed | 1))
    }
}

impl Random for XorShift {
    fn next_f64(&self) -> f64 {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let x = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How often `least_latency` tries a target other than the fastest, to keep learning.
pub(crate) const EXPLORATION: f64 = 0.1;

/// The order of `targets` (indices) for one request.
pub(crate) fn order(
    strategy: Strategy,
    ids: &[String],
    weights: &[u32],
    rr: &AtomicUsize,
    health: &Health,
    random: &dyn Random,
) -> Vec<usize> {
    let n = ids.len();
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return order;
    }
    let first = match strategy {
        Strategy::Fallback => 0,
        Strategy::RoundRobin => rr.fetch_add(1, Ordering::Relaxed) % n,
        Strategy::Weighted => weighted_pick(weights, random),
        Strategy::LeastLatency => {
            // Unmeasured targets first (each gets a sample), then mostly the fastest.
            let latencies: Vec<Option<f64>> = ids.iter().map(|id| health.latency(id)).collect();
            if let Some(unmeasured) = latencies.iter().position(Option::is_none) {
                unmeasured
            } else if random.next_f64() < EXPLORATION {
                ((random.next_f64() * n as f64) as usize).min(n - 1)
            } else {
                (0..n)
                    .min_by(|a, b| {
                        latencies[*a]
                            .unwrap_or(f64::MAX)
                            .total_cmp(&latencies[*b].unwrap_or(f64::MAX))
                    })
                    .unwrap_or(0)
            }
        }
    };
    order.remove(first);
    order.insert(0, first);
    if strategy == Strategy::LeastLatency {
        // Fallbacks by latency too.
        order[1..].sort_by(|a, b| {
            health
                .latency(&ids[*a])
                .unwrap_or(f64::MAX)
                .total_cmp(&health.latency(&ids[*b]).unwrap_or(f64::MAX))
        });
    }
    order
}

/// An index drawn in proportion to the weights (zero weights are never drawn first, unless
/// all are zero).
pub(crate) fn weighted_pick(weights: &[u32], random: &dyn Random) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let mut x = random.next_f64() * total as f64;
    for (i, w) in weights.iter().enumerate() {
        x -= f64::from(*w);
        if x < 0.0 {
            return i;
        }
    }
    weights.iter().rposition(|w| *w > 0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_split_is_within_statistical_bounds_over_10000_picks() {
        let r = XorShift::seeded(42);
        let weights = [1u32, 3, 6];
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[weighted_pick(&weights, &r)] += 1;
        }
        // Binomial standard deviation at n = 10,000 is at most 50: allow four of them.
        for (count, expected) in counts.iter().zip([1_000.0, 3_000.0, 6_000.0]) {
            assert!((f64::from(*count) - expected).abs() < 200.0, "{counts:?}");
        }
        assert_eq!(weighted_pick(&[0, 0], &r), 0);
        assert!((0..1000).all(|_| weighted_pick(&[0, 5], &r) == 1));
    }

    #[test]
    fn random_numbers_are_in_range() {
        let r = XorShift::from_entropy();
        assert!(
            (0..10_000)
                .map(|_| r.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
