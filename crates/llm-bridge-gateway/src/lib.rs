//! The llm-bridge server: the only crate that speaks downstream HTTP.
//!
//! It serves the OpenAI-compatible API (`/v1/chat/completions` as JSON or server-sent
//! events, `/v1/models`, health checks) on hyper with HTTP/1.1 and HTTP/2, authenticates
//! callers, sends requests through the [`Router`], renders every failure as an OpenAI error
//! with the right status, and emits one access event per request.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod body;
mod config;
mod conn;
mod console;
mod dispatch;
mod drain;
mod embeddings;
mod errors;
mod exchange;
mod handlers;
mod header_names;
mod ids;
mod ingress;
mod lanes;
mod live;
pub mod log_context;
mod meter;
mod metrics;
mod native;
mod ops;
mod otlp_wire;
mod request_log;
mod seal;
mod server;
mod socket;
mod sse;
mod traces;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use llm_bridge_auth::Authenticator;
use llm_bridge_core::Ingress;
use llm_bridge_router::Router;
use llm_bridge_usage::{Estimator, ResponseStore, UsageReader, UsageSink};

use crate::request_log::Telemetry;

pub use body::GatewayBody;
pub use config::{MetricsConfig, ServerConfig, TelemetryConfig};
pub use console::{ConsoleConfig, assets_size as console_assets_size};
pub use ids::new_request_id;
pub use lanes::Lanes;
pub use live::LiveEvent;
pub use ops::{Inventory, ProviderInfo, ProxyInfo};
pub use server::{serve, serve_on};
pub use traces::{SpanExporter, TraceCounters, Tracer, TracerSettings};

/// The usage store's two ends, as the gateway uses them.
pub struct UsageHandles {
    /// Where finished requests' records go.
    pub sink: UsageSink,
    /// Where `/v1/usage` reads from.
    pub reader: Arc<dyn UsageReader>,
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    router: Arc<Router>,
    auth: Arc<Authenticator>,
    config: ServerConfig,
    ready: AtomicBool,
    started_unix: u64,
    telemetry: Arc<Telemetry>,
    usage_reader: Option<Arc<dyn UsageReader>>,
    metrics_config: MetricsConfig,
    ws_connections: drain::Drain,
    ingresses: Vec<Arc<dyn Ingress>>,
    responses: Option<Arc<dyn ResponseStore>>,
    sealer: Option<Arc<seal::Sealer>>,
    console: console::Console,
    inventory: ops::Inventory,
}

impl Gateway {
    /// A gateway over this router and these keys, recording usage if `usage` is given.
    pub fn new(
        router: Arc<Router>,
        auth: Arc<Authenticator>,
        config: ServerConfig,
        metrics_config: MetricsConfig,
        usage: Option<UsageHandles>,
    ) -> Arc<Self> {
        let (sink, usage_reader) = match usage {
            Some(u) => (Some(u.sink), Some(u.reader)),
            None => (None, None),
        };
        Arc::new(Gateway {
            router,
            auth,
            config,
            ready: AtomicBool::new(true),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            telemetry: Arc::new(Telemetry {
                usage: sink,
                estimator: Estimator::start()
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "no estimator thread: estimates run inline"),
                    )
                    .ok(),
                ..Telemetry::default()
            }),
            usage_reader,
            metrics_config,
            ws_connections: drain::Drain::default(),
            ingresses: Vec::new(),
            responses: None,
            sealer: None,
            console: console::Console::new(ConsoleConfig::default()),
            inventory: ops::Inventory::default(),
        })
    }

    /// The same gateway sealing translated answers' provider state for clients that ask for
    /// it (Responses' `encrypted_content`) with this 256-bit key (before it serves).
    pub fn with_sealing_key(self: Arc<Self>, key: &[u8; 32]) -> Arc<Self> {
        let mut gateway = Arc::try_unwrap(self).unwrap_or_else(|_| {
            panic!("Gateway::with_sealing_key must be called before the gateway is shared")
        });
        gateway.sealer = Some(Arc::new(seal::Sealer::new(key)));
        Arc::new(gateway)
    }

    /// The same gateway with these console settings and this description of its providers
    /// for `/admin/status` (before it serves).
    pub fn with_console(self: Arc<Self>, config: ConsoleConfig, inventory: Inventory) -> Arc<Self> {
        let mut gateway = Arc::try_unwrap(self).unwrap_or_else(|_| {
            panic!("Gateway::with_console must be called before the gateway is shared")
        });
        gateway.console = console::Console::new(config);
        gateway.inventory = inventory;
        Arc::new(gateway)
    }

    /// The same gateway keeping the answers of dialects that keep them (OpenAI Responses'
    /// `store`) in `store` (before it serves).
    pub fn with_response_store(self: Arc<Self>, store: Arc<dyn ResponseStore>) -> Arc<Self> {
        let mut gateway = Arc::try_unwrap(self).unwrap_or_else(|_| {
            panic!("Gateway::with_response_store must be called before the gateway is shared")
        });
        gateway.responses = Some(store);
        Arc::new(gateway)
    }

    /// The same gateway also serving these dialects at their paths (before it serves).
    pub fn with_ingresses(self: Arc<Self>, ingresses: Vec<Arc<dyn Ingress>>) -> Arc<Self> {
        let mut gateway = Arc::try_unwrap(self).unwrap_or_else(|_| {
            panic!("Gateway::with_ingresses must be called before the gateway is shared")
        });
        gateway.ingresses = ingresses;
        Arc::new(gateway)
    }

    /// The same gateway recording traces with `tracer` (before it serves); its exporter task
    /// starts with [`serve`].
    pub fn with_tracer(self: Arc<Self>, tracer: Tracer) -> Arc<Self> {
        let mut gateway = Arc::try_unwrap(self).unwrap_or_else(|_| {
            panic!("Gateway::with_tracer must be called before the gateway is shared")
        });
        let telemetry = Arc::get_mut(&mut gateway.telemetry)
            .unwrap_or_else(|| panic!("Gateway::with_tracer must be called before it serves"));
        telemetry.metrics.register_traces(tracer.counters());
        telemetry.tracer = Some(Arc::new(tracer));
        Arc::new(gateway)
    }

    /// The tracer, when traces are configured.
    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.telemetry.tracer.as_ref()
    }

    /// The dialect that keeps answers under `path` (`/v1/responses/{id}…`), and the rest.
    fn kept_at<'p>(&self, path: &'p str) -> Option<(&Arc<dyn Ingress>, &'p str)> {
        self.ingresses.iter().find_map(|i| {
            i.state()?;
            let rest = path.strip_prefix(i.path())?.strip_prefix('/')?;
            (!rest.is_empty()).then_some((i, rest))
        })
    }

    /// The dialect mounted at `path`, and whether `path` is its token-counting endpoint.
    fn ingress_at(&self, path: &str) -> Option<(&Arc<dyn Ingress>, bool)> {
        self.ingresses.iter().find_map(|i| {
            if i.path() == path {
                Some((i, false))
            } else if i.count_tokens_path() == Some(path) {
                Some((i, true))
            } else {
                None
            }
        })
    }

    /// The dialect whose paths name the model and the method (Gemini) and the endpoint
    /// `path` names in it.
    fn endpoint_at(&self, path: &str) -> Option<(&Arc<dyn Ingress>, llm_bridge_core::Endpoint)> {
        self.ingresses
            .iter()
            .find_map(|i| Some((i, i.endpoint(path)?)))
    }

    /// The dialect listing its models under `path` (`/v1beta/models`, `/v1beta/models/{id}`),
    /// and the model asked for, if one is. `google`: the request carries Google's key
    /// (`x-goog-api-key` or `?key=`), so `/v1/models…` is Gemini's too (the Google GenAI SDK
    /// uses `v1` when given a base URL) rather than OpenAI's.
    fn models_at<'p>(
        &self,
        path: &'p str,
        google: bool,
    ) -> Option<(&Arc<dyn Ingress>, Option<&'p str>)> {
        self.ingresses.iter().find_map(|i| {
            let prefix = i.models_path()?;
            let rest = match path.strip_prefix(prefix) {
                Some(rest) => rest,
                None if google => path.strip_prefix("/v1/models")?,
                None => return None,
            };
            if rest.is_empty() {
                return Some((i, None));
            }
            let id = rest.strip_prefix('/')?;
            let id = id.strip_prefix("models/").unwrap_or(id);
            (!id.is_empty()).then_some((i, Some(id)))
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

    /// Whether `/readyz` reports ready: serving, and the usage store (if any) writable.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.telemetry.usage.as_ref().is_none_or(UsageSink::healthy)
    }

    /// Finished requests whose usage record is still being prepared (token estimates).
    pub fn records_in_preparation(&self) -> usize {
        self.telemetry
            .estimator
            .as_ref()
            .map_or(0, Estimator::pending)
    }

    /// Where kept answers live, when they are kept.
    pub fn response_store(&self) -> Option<&Arc<dyn ResponseStore>> {
        self.responses.as_ref()
    }

    /// Whether shutdown began (new WebSocket requests are refused, connections close).
    pub fn is_shutting_down(&self) -> bool {
        self.ws_connections.started()
    }

    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ws_connections.subscribe()
    }

    /// Sets what `/readyz` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
