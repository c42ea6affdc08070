//! Composition: config + environment → providers → router → gateway.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use llm_bridge_auth::{
    Authenticator, LimitsBackend, ManagedKeys, SecretString, SystemClock, generate_key,
    parse_access_keys, parse_admin_keys,
};
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_core::{ApiKeys, ChatProvider, ProviderConfig, api_key_env_var};
use llm_bridge_gateway::{Gateway, Inventory, Lanes, ProviderInfo, ProxyInfo, UsageHandles};
use llm_bridge_http::{ClientOptions, Proxy, ProxyEnv, ProxyRules, TlsRoots, UpstreamClient};
use llm_bridge_redis::{RedisLimits, SpendSource, Spent};
use llm_bridge_router::{Router, RouterConfig};
use llm_bridge_usage::{GroupBy, UsageQuery, UsageWriter};
use tokio::net::TcpListener;

use crate::config::{AppConfig, ConfigError};
use crate::registry::Registry;
use crate::stores::Stores;

/// What the gateway reads from the environment. Only `main` fills it from the process
/// environment; tests build it by hand.
#[derive(Default)]
pub struct Environment {
    /// `ACCESS_API_KEYS`.
    pub access_api_keys: Option<SecretString>,
    /// `ADMIN_API_KEYS`.
    pub admin_api_keys: Option<SecretString>,
    /// Every other variable the gateway may read (`<NAME>_API_KEY`, proxy variables,
    /// `OTEL_*`), by name.
    pub vars: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field(
                "access_api_keys",
                &self.access_api_keys.as_ref().map(|_| "[redacted]"),
            )
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// Reads the process environment (after `.env` was loaded).
    pub fn from_process() -> Environment {
        let mut env = Environment {
            access_api_keys: std::env::var("ACCESS_API_KEYS")
                .ok()
                .map(SecretString::from),
            admin_api_keys: std::env::var("ADMIN_API_KEYS").ok().map(SecretString::from),
            vars: BTreeMap::new(),
        };
        for (k, v) in std::env::vars() {
            if k.ends_with("_API_KEY")
                || k.to_ascii_uppercase().ends_with("_PROXY")
                || k == SEALING_KEY_VAR
                || k.starts_with("OTEL_")
            {
                env.vars.insert(k, SecretString::from(v));
            }
        }
        env
    }

    /// A variable's value, if set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.expose_secret())
            .filter(|v| !v.trim().is_empty())
    }
}

/// The assembled gateway, ready to serve.
pub struct App {
    gateway: Arc<Gateway>,
    generated_key: Option<SecretString>,
    usage_writer: Option<UsageWriter>,
    shared_limits: Option<Arc<RedisLimits>>,
}

impl App {
    /// Builds providers, router and gateway from the config and the environment.
    pub fn build(config: &AppConfig, env: &Environment) -> Result<App, ConfigError> {
        Self::build_with(config, env, &Registry::builtin())
    }

    /// Like [`App::build`], with a registry that may hold third-party adapters.
    pub fn build_with(
        config: &AppConfig,
        env: &Environment,
        registry: &Registry,
    ) -> Result<App, ConfigError> {
        let (providers, inventory) = build_providers(config, env, registry)?;
        let router = Router::new(
            providers,
            RouterConfig {
                default_provider: config.default_provider.clone(),
                routes: config.routes.clone(),
                retry: config.retry,
                cooldown: config.cooldown,
                provider_retry: config
                    .providers
                    .iter()
                    .filter_map(|(name, p)| p.retry.map(|r| (name.clone(), r)))
                    .collect(),
            },
        )
        .map_err(|e| ConfigError::new(e.to_string()))?;

        let (keys, generated_key) = match env
            .access_api_keys
            .as_ref()
            .map(|k| parse_access_keys(k.expose_secret()))
            .transpose()
            .map_err(|e| ConfigError::new(e.message()))?
        {
            Some(keys) if !keys.is_empty() => (keys, None),
            _ => {
                let key = generate_key();
                let keys = parse_access_keys(key.expose_secret())
                    .map_err(|e| ConfigError::new(e.message()))?;
                (keys, Some(key))
            }
        };
        let admin_keys = env
            .admin_api_keys
            .as_ref()
            .map(|k| parse_admin_keys(k.expose_secret()))
            .transpose()
            .map_err(|e| ConfigError::new(e.message()))?
            .unwrap_or_default();
        let mut authenticator =
            Authenticator::new(keys, admin_keys).with_reservation(config.limits.budget_reservation);
        let stores = Stores::new(&config.usage.database)
            .map_err(|e| ConfigError::new(format!("usage.database: {e}")))?;
        match open_managed_keys(&stores) {
            Ok(managed) => authenticator = authenticator.with_managed(managed),
            // Static keys still work; managed keys come back when the database does.
            Err(e) => tracing::error!(error = %e, "managed keys unavailable"),
        }
        let shared_limits = match (&config.limits.backend, &config.limits.url) {
            (LimitsBackend::Redis, Some(url)) => {
                let reader = stores.usage_reader();
                let source: SpendSource = Arc::new(move |name: &str| spent_by(&*reader, name));
                let limits = RedisLimits::new(
                    url,
                    config.limits.on_unavailable,
                    Arc::new(SystemClock),
                    source,
                )
                .map_err(ConfigError::new)?;
                authenticator =
                    authenticator.with_shared_limits(limits.clone(), config.limits.on_unavailable);
                Some(limits)
            }
            _ => None,
        };
        let auth = Arc::new(authenticator);

        let (usage, usage_writer) = if config.usage.enabled {
            let (writer, sink) = UsageWriter::start(
                stores.usage_opener(),
                config.usage.queue_capacity,
                config.usage.flush_interval.duration(),
            )
            .map_err(|e| ConfigError::new(format!("usage: cannot start the writer thread: {e}")))?;
            let handles = UsageHandles {
                sink,
                reader: stores.usage_reader(),
            };
            (Some(handles), Some(writer))
        } else {
            (None, None)
        };
        let gateway = Gateway::new(
            Arc::new(router),
            auth,
            config.server.clone(),
            config.metrics.clone(),
            usage,
        )
        // The dialects served in front besides chat completions.
        .with_ingresses(vec![
            Arc::new(llm_bridge_dialect_anthropic::MessagesIngress),
            Arc::new(llm_bridge_dialect_responses::ResponsesIngress),
            Arc::new(llm_bridge_dialect_gemini::GeminiIngress),
        ]);
        // Kept Responses answers live in the usage database.
        let gateway = match stores.responses(config.responses.ttl.duration()) {
            Ok(store) => gateway.with_response_store(store),
            Err(e) => {
                tracing::error!(error = %e, "kept Responses answers unavailable (store, previous_response_id)");
                gateway
            }
        };
        let roots = match &config.tls {
            Some(tls) => {
                TlsRoots::load(tls).map_err(|e| ConfigError::new(format!("tls.{}", e.message())))?
            }
            None => TlsRoots::webpki(),
        };
        let gateway = match crate::otlp::tracer(&config.telemetry, env, &roots)? {
            Some(tracer) => gateway.with_tracer(tracer),
            None => gateway,
        };
        let gateway = gateway.with_console(config.console.clone(), inventory);
        let gateway = match sealing_key(env, stores.sealing_key_folder()) {
            Ok(key) => gateway.with_sealing_key(&key),
            Err(e) => {
                tracing::error!(error = %e, "no sealing key: encrypted_content is not offered");
                gateway
            }
        };
        Ok(App {
            gateway,
            generated_key,
            usage_writer,
            shared_limits,
        })
    }

    /// The gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The Redis limits, with `limits.backend: redis`.
    pub fn shared_limits(&self) -> Option<&Arc<RedisLimits>> {
        self.shared_limits.as_ref()
    }

    /// The access key generated because none was configured, if any.
    pub fn generated_key(&self) -> Option<&SecretString> {
        self.generated_key.as_ref()
    }

    /// Binds the configured address (`host`/`port` may be overridden by the caller's config).
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        let c = self.gateway.config();
        TcpListener::bind((c.host.as_str(), c.port)).await
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests and
    /// writes every usage record.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve_on(listener, None, shutdown).await;
    }

    /// [`App::serve`], with connections served on `lanes` (`llm-bridge serve` runs one per
    /// `server.workers`); `None` serves them on the runtime this runs on.
    pub async fn serve_on(
        self,
        listener: TcpListener,
        lanes: Option<Arc<Lanes>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let gateway = self.gateway.clone();
        llm_bridge_gateway::serve_on(self.gateway, listener, lanes, shutdown).await;
        // Records of the last requests may still be counting their tokens.
        for _ in 0..500 {
            if gateway.records_in_preparation() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Some(store) = gateway.response_store().cloned() {
            let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::error!(error = %e, "kept answers could not all be written before exit");
            }
        }
        if let Some(writer) = self.usage_writer {
            let flushed = tokio::task::spawn_blocking(move || {
                writer.shutdown(std::time::Duration::from_secs(15))
            })
            .await
            .unwrap_or(false);
            if flushed {
                tracing::info!("usage records written");
            } else {
                tracing::error!("usage records could not all be written before exit");
            }
        }
    }

    /// Binds an ephemeral port on 127.0.0.1 and serves in the background; for tests and
    /// embedding. The returned handle stops the server when told to.
    pub async fn spawn_local(self) -> std::io::Result<RunningApp> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = self.gateway.clone();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningApp {
            addr,
            gateway,
            stop: Some(stop),
            task,
        })
    }
}

/// A gateway serving in the background.
pub struct RunningApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApp {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// What a key has spent today, this month and in total, from the usage records (to seed
/// the budget counters Redis lost).
fn spent_by(reader: &dyn llm_bridge_usage::UsageReader, name: &str) -> Result<Spent, String> {
    let now = llm_bridge_usage::time::now_ms();
    let spent = |from_ms: i64| -> Result<(u64, f64), String> {
        let q = UsageQuery {
            from_ms,
            to_ms: now + 1,
            group_by: GroupBy::None,
            key: Some(name.to_owned()),
        };
        let report = reader.query(&q).map_err(|e| e.to_string())?;
        Ok(report
            .data
            .first()
            .map_or((0, 0.0), |g| (g.total_tokens, g.cost.unwrap_or(0.0))))
    };
    Ok(Spent {
        day: spent(llm_bridge_auth::clock::start_of_day(now))?,
        month: spent(llm_bridge_auth::clock::start_of_month(now))?,
        total: spent(0)?,
    })
}

/// The managed keys of the database, with what each has spent so far (from the usage
/// records), watched for changes made by other processes and instances.
fn open_managed_keys(stores: &Stores) -> Result<Arc<ManagedKeys>, String> {
    let store = stores.keys()?;
    let managed = match ManagedKeys::open(store.clone(), Arc::new(SystemClock)) {
        Ok(m) => m,
        // A shared database that is down now: serve static keys, load the managed ones
        // when it is back (their spending so far is then not counted against budgets).
        Err(e) if stores.is_shared() => {
            tracing::error!(error = %e, "managed keys cannot be loaded now: retrying in the background");
            let managed = ManagedKeys::unloaded(store, Arc::new(SystemClock));
            managed
                .watch(stores.key_watch_interval())
                .map_err(|e| e.message().to_owned())?;
            return Ok(managed);
        }
        Err(e) => return Err(e.message().to_owned()),
    };
    let reader = stores.usage_reader();
    let now = llm_bridge_usage::time::now_ms();
    let spent = |from_ms: i64| -> std::collections::HashMap<String, (u64, f64)> {
        let q = UsageQuery {
            from_ms,
            to_ms: now + 1,
            group_by: GroupBy::Key,
            key: None,
        };
        reader
            .query(&q)
            .map(|r| {
                r.data
                    .into_iter()
                    .map(|g| (g.group, (g.total_tokens, g.cost.unwrap_or(0.0))))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (day, month, total) = (
        spent(llm_bridge_auth::clock::start_of_day(now)),
        spent(llm_bridge_auth::clock::start_of_month(now)),
        spent(0),
    );
    for (name, all) in &total {
        let d = day.get(name).copied().unwrap_or_default();
        let m = month.get(name).copied().unwrap_or_default();
        managed.seed_spend(name, d, m, *all);
    }
    managed
        .watch(stores.key_watch_interval())
        .map_err(|e| e.message().to_owned())?;
    Ok(managed)
}

fn build_providers(
    config: &AppConfig,
    env: &Environment,
    registry: &Registry,
) -> Result<(Vec<Arc<dyn ChatProvider>>, Inventory), ConfigError> {
    let proxies = ProxyRules::new(&config.proxy, &proxy_env(env))
        .map_err(|e| ConfigError::new(e.message()))?;
    // Loaded once: providers without their own `tls` share it.
    let default_roots = match &config.tls {
        Some(tls) => {
            TlsRoots::load(tls).map_err(|e| ConfigError::new(format!("tls.{}", e.message())))?
        }
        None => TlsRoots::webpki(),
    };
    let mut providers = Vec::new();
    let mut inventory = Inventory::default();
    for (scheme, url) in [("https", &config.proxy.https), ("http", &config.proxy.http)] {
        let Some(url) = url
            .as_ref()
            .filter(|u| !u.expose_secret().trim().is_empty())
        else {
            continue;
        };
        // Shown without credentials; a URL that does not parse is shown as its scheme only.
        let (shown, has_credentials) = match Proxy::parse(url.expose_secret()) {
            Ok(p) => (p.to_string(), p.has_credentials()),
            Err(_) => ("(invalid URL)".to_owned(), false),
        };
        inventory.proxies.push(ProxyInfo {
            scheme: scheme.to_owned(),
            url: shown,
            has_credentials,
        });
    }
    for (name, provider) in &config.providers {
        let mut provider: ProviderConfig = provider.clone();
        if let Some(keys) = env.var(&api_key_env_var(name)) {
            provider.api_key = ApiKeys::from_list(keys);
        }
        let mut client_options = client_options(name, &provider, &proxies, &default_roots)?;
        // One pool per serving thread (lane); a gateway served without lanes uses the first.
        client_options.pools = config.server.threads();
        inventory.providers.push(ProviderInfo {
            name: name.clone(),
            adapter: provider.adapter.clone(),
            base_url: without_userinfo(&provider.base_url),
            models: provider.models.keys().cloned().collect(),
            key_prefixes: provider
                .api_key
                .keys()
                .iter()
                .map(|k| key_prefix(k.expose_secret()))
                .collect(),
            proxy: client_options.proxy.as_ref().map(ToString::to_string),
        });
        let client = UpstreamClient::new(&client_options)
            .map_err(|e| ConfigError::new(format!("providers.{name}: {}", e.message())))?;
        let built = registry
            .build(name, &provider, client)
            .map_err(|e| ConfigError::new(e.within(&format!("providers.{name}")).to_string()))?;
        providers.push(built);
    }
    Ok((providers, inventory))
}

/// The first few characters of a provider key, enough to tell keys apart.
fn key_prefix(key: &str) -> String {
    let shown: String = key
        .chars()
        .take(if key.chars().count() > 16 { 6 } else { 3 })
        .collect();
    format!("{shown}…")
}

/// A URL without the `user:password@` part.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// `HTTPS_PROXY` & co., upper case first as curl and hyper-util read them.
fn proxy_env(env: &Environment) -> ProxyEnv {
    let first = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|n| env.var(n))
            .map(|v| SecretString::from(v.to_owned()))
    };
    ProxyEnv {
        http: first(["HTTP_PROXY", "http_proxy"]),
        https: first(["HTTPS_PROXY", "https_proxy"]),
        all: first(["ALL_PROXY", "all_proxy"]),
        no: ["NO_PROXY", "no_proxy"]
            .into_iter()
            .find_map(|n| env.var(n))
            .map(str::to_owned),
    }
}

/// One provider's proxy (see [`ProxyRules`] for the precedence) and trusted roots.
fn client_options(
    name: &str,
    provider: &ProviderConfig,
    proxies: &ProxyRules,
    default_roots: &TlsRoots,
) -> Result<ClientOptions, ConfigError> {
    let tls = match &provider.tls {
        Some(tls) => TlsRoots::load(tls)
            .map_err(|e| ConfigError::new(format!("providers.{name}.tls.{}", e.message())))?,
        None => default_roots.clone(),
    };
    let choice = proxies
        .choose(
            name,
            &provider.base_url,
            provider.proxy.as_ref(),
            provider.requires_proxy,
        )
        .map_err(|e| ConfigError::new(e.message()))?;
    match &choice.proxy {
        Some(proxy) => {
            tracing::info!(provider = %name, proxy = %proxy, via = %choice.reason, "outbound proxy")
        }
        None => tracing::debug!(provider = %name, via = %choice.reason, "direct connections"),
    }
    Ok(ClientOptions {
        proxy: choice.proxy,
        tls,
        ..ClientOptions::default()
    })
}

/// The environment variable holding the key that seals provider state into
/// `encrypted_content` (64 hex digits); without it, a key is generated once and kept beside
/// the usage database (`sealing.key`, readable by its owner only).
pub const SEALING_KEY_VAR: &str = "LLM_BRIDGE_SEALING_KEY";

fn sealing_key(env: &Environment, database: Option<&std::path::Path>) -> Result<[u8; 32], String> {
    let parse = |text: &str| -> Result<[u8; 32], String> {
        let text = text.trim();
        let mut key = [0u8; 32];
        if text.len() != 64 {
            return Err(format!("{SEALING_KEY_VAR}: expected 64 hex digits"));
        }
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{SEALING_KEY_VAR}: expected 64 hex digits"))?;
        }
        Ok(key)
    };
    if let Some(text) = env.var(SEALING_KEY_VAR) {
        return parse(text);
    }
    let path = match database {
        Some(db) => db.with_file_name("sealing.key"),
        None => {
            // Instances sharing PostgreSQL must share the key too, or one cannot open what
            // another sealed.
            tracing::warn!(
                "usage.database is PostgreSQL but {SEALING_KEY_VAR} is not set: using data/sealing.key, which other instances do not share"
            );
            std::path::PathBuf::from("data/sealing.key")
        }
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        return parse(&text).map_err(|e| format!("{}: {e}", path.display()));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a sealing key: {e}"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    write_private(&path, &hex).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the key that seals encrypted_content");
    Ok(key)
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
