//! One usage record per request.

use llm_bridge_core::Usage;
use serde::Serialize;

/// Where a record's token counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// Reported by the upstream.
    Upstream,
    /// Counted by the gateway (the upstream reported none, or the request was interrupted).
    Estimated,
    /// No tokens were used (the request failed before the upstream answered).
    None,
}

impl UsageSource {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Upstream => "upstream",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }

    /// Reads a stored label (anything unknown is `none`).
    pub fn parse(label: &str) -> UsageSource {
        match label {
            "upstream" => UsageSource::Upstream,
            "estimated" => UsageSource::Estimated,
            _ => UsageSource::None,
        }
    }
}

/// What the gateway records about one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The request id.
    pub request_id: String,
    /// The access key's name.
    pub key: Option<String>,
    /// The provider that served (or was to serve) the request.
    pub provider: Option<String>,
    /// The model within that provider.
    pub model: Option<String>,
    /// The model name sent upstream.
    pub upstream_model: Option<String>,
    /// The route alias the client named, if any.
    pub route: Option<String>,
    /// `http` or `ws`.
    pub transport: String,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The HTTP status (for streams: of their start).
    pub status: u16,
    /// `ok`, `error` or `cancelled`.
    pub outcome: String,
    /// Token counts.
    pub usage: Usage,
    /// Where the counts come from.
    pub usage_source: UsageSource,
    /// Time to the end of the answer.
    pub latency_ms: f64,
    /// Time to the first chunk of a stream.
    pub ttft_ms: Option<f64>,
    /// Cost from the model's configured prices.
    pub cost: Option<f64>,
}
