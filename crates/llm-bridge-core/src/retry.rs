//! How hard to try an upstream again (`retry:` on a provider or a route).

use std::time::Duration;

use serde::Deserialize;

use crate::config::Seconds;

/// Retry settings. Retries happen only on failures that another attempt may fix (connection
/// errors, timeouts before the answer started, 429, 5xx) and only while nothing has reached
/// the client.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per target, the first included (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The first backoff; each retry doubles it, with full jitter.
    #[serde(default = "default_base_delay")]
    pub base_delay: Seconds,
    /// The longest backoff.
    #[serde(default = "default_max_delay")]
    pub max_delay: Seconds,
    /// The longest `Retry-After` honoured before giving up on the target.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: Seconds,
    /// No new attempt starts this long after the request arrived.
    #[serde(default = "default_deadline")]
    pub deadline: Seconds,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            base_delay: default_base_delay(),
            max_delay: default_max_delay(),
            max_retry_after: default_max_retry_after(),
            deadline: default_deadline(),
        }
    }
}

impl RetryConfig {
    /// The ceiling of the `n`-th backoff (0-based): `base × 2ⁿ`, at most `max_delay`.
    pub fn backoff_ceiling(&self, n: u32) -> Duration {
        let base = self.base_delay.duration();
        base.checked_mul(1u32.checked_shl(n.min(30)).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.max_delay.duration())
    }
}

fn default_attempts() -> u32 {
    2
}

fn default_base_delay() -> Seconds {
    Seconds(0.25)
}

fn default_max_delay() -> Seconds {
    Seconds(4.0)
}

fn default_max_retry_after() -> Seconds {
    Seconds(10.0)
}

fn default_deadline() -> Seconds {
    Seconds(60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let r = RetryConfig::default();
        assert_eq!(r.backoff_ceiling(0), Duration::from_millis(250));
        assert_eq!(r.backoff_ceiling(1), Duration::from_millis(500));
        assert_eq!(r.backoff_ceiling(4), Duration::from_secs(4));
        assert_eq!(r.backoff_ceiling(40), Duration::from_secs(4));
    }
}
