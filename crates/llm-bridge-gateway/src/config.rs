use std::fmt;

use llm_bridge_core::Seconds;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// The `server` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port to listen on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// On shutdown, how long in-flight requests and streams may take to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Seconds,
    /// Chat requests one WebSocket connection may run at once.
    #[serde(default = "default_ws_max_concurrent")]
    pub ws_max_concurrent_requests: usize,
    /// How often an idle WebSocket connection is pinged; one missed pong closes it.
    #[serde(default = "default_ws_ping_interval")]
    pub ws_ping_interval: Seconds,
    /// A connection with no request in flight is closed when no complete request head
    /// arrived within this long of its accept or of the end of its last request (HTTP/1
    /// and h2c alike, even if it never sends a byte).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Seconds,
    /// A client that accepts no byte of its answer for this long (it stopped reading) is
    /// disconnected, its upstream request cancelled.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Seconds,
    /// Connections open at once; beyond it the longest-idle one is closed to make room, or,
    /// with none idle, the new one is refused with a 503. Default: half of what the open
    /// files limit (`ulimit -n`) leaves after 64, at most 65,536.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Threads that serve connections, each with its own event loop, its connections and
    /// its pools of connections to providers (see [`crate::Lanes`]). Default: the CPUs this
    /// process may use (its affinity and cgroup quota).
    #[serde(default)]
    pub workers: Option<usize>,
}

impl ServerConfig {
    /// How many threads serve connections: `workers`, or the CPUs this process may use.
    pub fn threads(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: default_host(),
            port: default_port(),
            max_body_bytes: default_max_body_bytes(),
            drain_timeout: default_drain_timeout(),
            ws_max_concurrent_requests: default_ws_max_concurrent(),
            ws_ping_interval: default_ws_ping_interval(),
            header_read_timeout: default_header_read_timeout(),
            write_timeout: default_write_timeout(),
            max_connections: None,
            workers: None,
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_port() -> u16 {
    1219
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_drain_timeout() -> Seconds {
    Seconds(30.0)
}

fn default_ws_max_concurrent() -> usize {
    16
}

fn default_header_read_timeout() -> Seconds {
    Seconds(30.0)
}

fn default_write_timeout() -> Seconds {
    Seconds(60.0)
}

fn default_ws_ping_interval() -> Seconds {
    Seconds(30.0)
}

/// The `metrics` section of the config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    #[serde(default, deserialize_with = "secret")]
    pub token: Option<SecretString>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token: None,
        }
    }
}

impl fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn default_true() -> bool {
    true
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(SecretString::from))
}

/// The `telemetry` section of the config: OpenTelemetry traces over OTLP/HTTP.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`): spans go to
    /// `<endpoint>/v1/traces`. Unset: no traces (the default).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of new traces exported, 0 to 1; a client's `traceparent` decides for its own.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (`authorization`, `x-honeycomb-team`, …): secrets.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Export the prompt and the answer text as span attributes.
    #[serde(default)]
    pub capture_content: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: default_sample_ratio(),
            headers: Default::default(),
            capture_content: false,
        }
    }
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("capture_content", &self.capture_content)
            .finish()
    }
}

fn default_sample_ratio() -> f64 {
    1.0
}
