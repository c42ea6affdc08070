//! What to do after an attempt failed: a pure decision, so that every rule of it is tested
//! without a clock, a runtime or an upstream.

use std::time::Duration;

use llm_bridge_core::{ErrorKind, RetryConfig};

/// The next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The request itself is at fault (a 400, a refused key): no target will do better.
    Stop,
    /// Try the same target again after this pause.
    Retry(Duration),
    /// Go on to the next target (none left: the request fails with this error).
    NextTarget,
}

/// The failure of `kind` (whose upstream asked for `retry_after`, if it did) on attempt
/// `attempt` (from 0) of a target with `retry`, with `time_left` before the target's
/// deadline. `jitter` (in [0, 1)) is drawn only when a backoff is computed.
pub(crate) fn after_failure(
    kind: ErrorKind,
    retry_after: Option<Duration>,
    attempt: u32,
    retry: &RetryConfig,
    time_left: Duration,
    jitter: impl FnOnce() -> f64,
) -> AfterFailure {
    if !kind.is_retryable() && !falls_back(kind) {
        return AfterFailure::Stop;
    }
    if !kind.is_retryable() || attempt + 1 >= retry.attempts.max(1) {
        return AfterFailure::NextTarget;
    }
    let wait = match retry_after {
        // Waiting longer than the cap is worse than another target.
        Some(asked) if asked > retry.max_retry_after.duration() => {
            return AfterFailure::NextTarget;
        }
        Some(asked) => asked,
        None => retry.backoff_ceiling(attempt).mul_f64(jitter()),
    };
    if wait < time_left {
        AfterFailure::Retry(wait)
    } else {
        // The wait would pass the deadline.
        AfterFailure::NextTarget
    }
}

/// Failures that are the target's, not the request's, though retrying it will not help: its
/// key is refused, or it does not have the model. Another target may.
pub(crate) fn falls_back(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::UpstreamAuth | ErrorKind::UpstreamRejected(404) | ErrorKind::ModelNotFound
    )
}

#[cfg(test)]
mod tests {
    use llm_bridge_core::Seconds;

    use super::*;
    use AfterFailure::{NextTarget, Retry, Stop};

    fn retry(attempts: u32) -> RetryConfig {
        RetryConfig {
            attempts,
            base_delay: Seconds(0.5),
            max_delay: Seconds(4.0),
            max_retry_after: Seconds(10.0),
            deadline: Seconds(60.0),
        }
    }

    const PLENTY: Duration = Duration::from_secs(60);

    fn no_jitter() -> f64 {
        panic!("no backoff should be drawn")
    }

    #[test]
    fn the_requests_own_faults_stop_at_once() {
        for kind in [ErrorKind::InvalidRequest, ErrorKind::UpstreamRejected(400)] {
            assert_eq!(
                after_failure(kind, None, 0, &retry(3), PLENTY, no_jitter),
                Stop
            );
        }
    }

    #[test]
    fn a_refused_key_or_a_missing_model_goes_to_the_next_target_without_retrying() {
        for kind in [
            ErrorKind::UpstreamAuth,
            ErrorKind::UpstreamRejected(404),
            ErrorKind::ModelNotFound,
        ] {
            assert_eq!(
                after_failure(kind, None, 0, &retry(3), PLENTY, no_jitter),
                NextTarget
            );
        }
    }

    #[test]
    fn retryable_failures_back_off_with_full_jitter_up_to_the_ceiling() {
        let kind = ErrorKind::UpstreamUnavailable;
        let r = retry(5);
        assert_eq!(
            after_failure(kind, None, 0, &r, PLENTY, || 0.5),
            Retry(Duration::from_millis(250))
        );
        assert_eq!(
            after_failure(kind, None, 2, &r, PLENTY, || 0.5),
            Retry(Duration::from_secs(1))
        );
        // 0.5 s × 2⁴ = 8 s, capped at max_delay (4 s).
        assert_eq!(
            after_failure(kind, None, 3, &r, PLENTY, || 0.999),
            Retry(Duration::from_secs(4).mul_f64(0.999))
        );
        // The last attempt on a target goes on to the next one.
        assert_eq!(
            after_failure(kind, None, 4, &r, PLENTY, no_jitter),
            NextTarget
        );
        assert_eq!(
            after_failure(kind, None, 0, &retry(1), PLENTY, no_jitter),
            NextTarget
        );
        assert_eq!(
            after_failure(kind, None, 0, &retry(0), PLENTY, no_jitter),
            NextTarget
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap_and_the_deadline() {
        let kind = ErrorKind::UpstreamRateLimited;
        let r = retry(3);
        let asked = Some(Duration::from_secs(2));
        assert_eq!(
            after_failure(kind, asked, 0, &r, PLENTY, no_jitter),
            Retry(Duration::from_secs(2))
        );
        let too_long = Some(Duration::from_secs(11));
        assert_eq!(
            after_failure(kind, too_long, 0, &r, PLENTY, no_jitter),
            NextTarget
        );
        let left = Duration::from_secs(2);
        assert_eq!(
            after_failure(kind, asked, 0, &r, left, no_jitter),
            NextTarget
        );
        assert_eq!(
            after_failure(kind, None, 0, &r, Duration::ZERO, || 0.0),
            NextTarget
        );
    }
}
