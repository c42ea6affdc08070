use llm_bridge_core::Seconds;
use serde::Deserialize;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: default_host(),
            port: default_port(),
            max_body_bytes: default_max_body_bytes(),
            drain_timeout: default_drain_timeout(),
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
