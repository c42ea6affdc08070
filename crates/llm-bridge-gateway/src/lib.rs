//! The llm-bridge server: the only crate that speaks downstream HTTP.
//!
//! It serves the OpenAI-compatible API (`/v1/chat/completions` as JSON or server-sent
//! events, `/v1/models`, health checks) on hyper with HTTP/1.1 and HTTP/2, authenticates
//! callers, sends requests through the [`Router`], renders every failure as an OpenAI error
//! with the right status, and emits one access event per request.

mod access;
mod body;
mod config;
mod errors;
mod exchange;
mod http;
mod meter;
mod server;
mod service;
mod sse;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use llm_bridge_auth::Authenticator;
use llm_bridge_router::Router;

pub use body::GatewayBody;
pub use config::ServerConfig;
pub use server::serve;
pub use service::new_request_id;

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    router: Arc<Router>,
    auth: Arc<Authenticator>,
    config: ServerConfig,
    ready: AtomicBool,
    started_unix: u64,
}

impl Gateway {
    /// A gateway over this router and these keys.
    pub fn new(router: Arc<Router>, auth: Arc<Authenticator>, config: ServerConfig) -> Arc<Self> {
        Arc::new(Gateway {
            router,
            auth,
            config,
            ready: AtomicBool::new(true),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The server settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether `/readyz` reports ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Sets what `/readyz` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
