//! What the router remembers about each target: a circuit breaker (closed → open after
//! repeated failures → half-open after the cooldown, one probe decides) and a decaying
//! average of its latency.

// foldhash, not std's SipHash: looked up on every attempt (seeded per process).
use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::CooldownConfig;

/// Weight of the newest latency sample in the average.
const ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Circuit {
    Closed,
    Open {
        until: Instant,
    },
    /// A probe was claimed; other requests skip the target until the probe reports or its
    /// lease ends (a probe whose request was abandoned must not keep the target out for good).
    HalfOpen {
        until: Instant,
    },
}

#[derive(Debug)]
struct TargetHealth {
    circuit: Circuit,
    failures: u32,
    latency: Option<f64>,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            circuit: Circuit::Closed,
            failures: 0,
            latency: None,
        }
    }
}

/// Whether a target may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Healthy, or its cooldown is over and this request is its probe.
    Ready,
    /// Resting until then.
    Resting(Instant),
}

/// A target's health as the router sees it at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetHealthView {
    /// How long it still rests, when it is in cooldown.
    pub cooldown_remaining: Option<Duration>,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Its recent latency (decaying average), in seconds.
    pub latency: Option<f64>,
}

/// Health of every target, by `provider/model`.
#[derive(Debug)]
pub(crate) struct Health {
    cooldown: CooldownConfig,
    targets: Mutex<HashMap<String, TargetHealth>>,
}

impl Health {
    /// Empty health records.
    pub(crate) fn new(cooldown: CooldownConfig) -> Self {
        Health {
            cooldown,
            targets: Mutex::new(HashMap::default()),
        }
    }

    fn with<R>(&self, id: &str, f: impl FnOnce(&mut TargetHealth) -> R) -> R {
        let mut map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before `entry`, which would copy the id on every request.
        if let Some(health) = map.get_mut(id) {
            return f(health);
        }
        f(map.entry(id.to_owned()).or_default())
    }

    /// Whether `id` may be tried now, without claiming anything.
    pub(crate) fn peek(&self, id: &str) -> Availability {
        let now = Instant::now();
        self.with(id, |h| match h.circuit {
            Circuit::Closed => Availability::Ready,
            Circuit::Open { until } | Circuit::HalfOpen { until } if now >= until => {
                Availability::Ready
            }
            Circuit::Open { until } | Circuit::HalfOpen { until } => Availability::Resting(until),
        })
    }

    /// Whether `id` may be tried; claims the probe when its cooldown is over. Call it just
    /// before the attempt, so that a probe is only claimed by a request that makes it.
    pub(crate) fn acquire(&self, id: &str) -> Availability {
        let now = Instant::now();
        let lease = self.cooldown.duration.duration();
        self.with(id, |h| match h.circuit {
            Circuit::Closed => Availability::Ready,
            Circuit::Open { until } | Circuit::HalfOpen { until } if now >= until => {
                h.circuit = Circuit::HalfOpen { until: now + lease };
                Availability::Ready
            }
            // Resting, or another request is probing: wait for its verdict.
            Circuit::Open { until } | Circuit::HalfOpen { until } => Availability::Resting(until),
        })
    }

    /// A successful attempt: closes the circuit, feeds the latency average.
    pub(crate) fn success(&self, id: &str, latency: Duration) {
        self.with(id, |h| {
            h.circuit = Circuit::Closed;
            h.failures = 0;
            let sample = latency.as_secs_f64();
            h.latency = Some(
                h.latency
                    .map_or(sample, |avg| ALPHA * sample + (1.0 - ALPHA) * avg),
            );
        });
    }

    /// A failed attempt: a failed probe, or too many failures in a row, open the circuit.
    pub(crate) fn failure(&self, id: &str) {
        let cooldown = self.cooldown;
        self.with(id, |h| {
            h.failures += 1;
            let probe_failed = matches!(h.circuit, Circuit::HalfOpen { .. });
            if probe_failed || h.failures >= cooldown.failures.max(1) {
                h.circuit = Circuit::Open {
                    until: Instant::now() + cooldown.duration.duration(),
                };
                tracing::warn!(target = id, failures = h.failures, "target put in cooldown");
            }
        });
    }

    /// The target answered, though not with success (it refused the request): it is up.
    pub(crate) fn reachable(&self, id: &str) {
        self.with(id, |h| {
            h.circuit = Circuit::Closed;
            h.failures = 0;
        });
    }

    /// What the router knows of a target now.
    pub(crate) fn snapshot(&self, id: &str) -> TargetHealthView {
        let now = Instant::now();
        let map = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = map.get(id) else {
            return TargetHealthView::default();
        };
        let resting = match h.circuit {
            Circuit::Closed => None,
            Circuit::Open { until } | Circuit::HalfOpen { until } => {
                (until > now).then(|| until - now)
            }
        };
        TargetHealthView {
            cooldown_remaining: resting,
            consecutive_failures: h.failures,
            latency: h.latency,
        }
    }

    /// The latency average of a target, in seconds.
    pub(crate) fn latency(&self, id: &str) -> Option<f64> {
        self.with(id, |h| h.latency)
    }
}
