//! Router settings: the `default_provider`, `routes` and `retry` sections of the config.

use indexmap::IndexMap;
use llm_bridge_core::{RetryConfig, Seconds};
use serde::Deserialize;

/// Router settings from the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The provider for model names without `provider/`.
    #[serde(default)]
    pub default_provider: Option<String>,
    /// Aliases that spread over several targets.
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    /// Retries of every request; providers and routes may override it.
    #[serde(default)]
    pub retry: RetryConfig,
    /// When a target is skipped for failing.
    #[serde(default)]
    pub cooldown: CooldownConfig,
    /// Per-provider retry settings (`providers.<name>.retry`), filled in by the binary.
    #[serde(skip)]
    pub provider_retry: IndexMap<String, RetryConfig>,
}

/// `routes.<alias>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// How targets are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// `provider/model` names, or `{model, weight}`.
    pub targets: Vec<TargetSpec>,
    /// Retries for this route (else the providers' or the global ones).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Whether requests of one session stay on one target (`session`, the default) or are
    /// spread by the strategy alone (`none`).
    #[serde(default)]
    pub affinity: Affinity,
}

/// Session affinity of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    /// A session (`x-session-id`, `prompt_cache_key`, `user`, Anthropic's
    /// `metadata.user_id`) keeps the target that served it while that target is healthy.
    #[default]
    Session,
    /// Every request is placed by the strategy.
    None,
}

/// How a route chooses among its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In order: the next only when the previous fails.
    #[default]
    Fallback,
    /// At random, in proportion to `weight`; the others as fallbacks.
    Weighted,
    /// Each request starts at the next target; the others as fallbacks.
    RoundRobin,
    /// The one with the lowest recent latency (time to first byte for streams), exploring
    /// the others now and then.
    LeastLatency,
}

/// A route target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// `provider/model`.
    Name(String),
    /// `{model: provider/model, weight: 3}`.
    Weighted {
        /// `provider/model`.
        model: String,
        /// Relative share (default 1).
        #[serde(default = "default_weight")]
        weight: u32,
    },
}

fn default_weight() -> u32 {
    1
}

impl TargetSpec {
    /// `provider/model`.
    pub fn model(&self) -> &str {
        match self {
            TargetSpec::Name(m) | TargetSpec::Weighted { model: m, .. } => m,
        }
    }

    /// Relative share.
    pub fn weight(&self) -> u32 {
        match self {
            TargetSpec::Name(_) => 1,
            TargetSpec::Weighted { weight, .. } => *weight,
        }
    }
}

/// The circuit breaker: after `failures` failures in a row a target rests for `duration`,
/// then one request probes it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownConfig {
    /// Failures in a row that open the circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long the target is skipped.
    #[serde(default = "default_duration")]
    pub duration: Seconds,
}

impl Default for CooldownConfig {
    fn default() -> Self {
        CooldownConfig {
            failures: default_failures(),
            duration: default_duration(),
        }
    }
}

fn default_failures() -> u32 {
    3
}

fn default_duration() -> Seconds {
    Seconds(30.0)
}
