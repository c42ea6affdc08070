//! The router: names to plans, plans to attempts.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use indexmap::IndexMap;
use llm_bridge_core::{
    ChatProvider, ChatRequest, ChatResponse, ChunkStream, EMBEDDINGS, Error, ErrorKind, ModelKind,
    ModelRef, NativeRequest, NativeResponse, Price, Result, RetryConfig, StartupError, TraceParent,
};
use tokio::time::Instant;

use crate::affinity::Sessions;
use crate::config::{Affinity, RouterConfig, Strategy};
use crate::health::{Availability, Health};
use crate::retry::{AfterFailure, after_failure};
use crate::strategy::{Random, XorShift, order};

/// A provider and a model name within it.
#[derive(Clone)]
pub struct Target {
    /// The provider.
    pub provider: Arc<dyn ChatProvider>,
    /// The model's name within the provider (as configured, `<…>` tag included).
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .finish()
    }
}

impl Target {
    /// `provider/model`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.provider.name(), self.model)
    }

    /// The model's prices: its `price:` in the config, else the built-in catalog's.
    pub fn price(&self) -> Option<Price> {
        self.provider.catalog().price(&self.model).map(|p| p.price)
    }

    /// What the model serves (its `kind`, else what its name says).
    pub fn kind(&self) -> ModelKind {
        self.provider
            .catalog()
            .lookup(&self.model)
            .map_or_else(|| ModelKind::of_name(&self.model), |e| e.kind())
    }

    /// Whether this target answers requests of `operation` ([`EMBEDDINGS`], or a dialect's
    /// name): embeddings need an adapter that does them and a model of kind `embedding`.
    pub fn serves(&self, operation: &str) -> bool {
        self.provider.speaks(operation)
            && (operation != EMBEDDINGS || self.kind() == ModelKind::Embedding)
    }

    /// The model name the upstream receives.
    pub fn upstream_model(&self) -> String {
        self.provider
            .catalog()
            .lookup(&self.model)
            .map(|e| e.upstream_name().to_owned())
            .unwrap_or_else(|| self.model.clone())
    }
}

/// A route alias, validated.
struct Route {
    strategy: Strategy,
    affinity: Affinity,
    targets: Vec<Target>,
    ids: Vec<String>,
    weights: Vec<u32>,
    retry: Option<RetryConfig>,
    next: AtomicUsize,
}

/// What a model name resolves to: one target, or a route over several.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The route alias, when the name was one.
    pub route: Option<String>,
    /// The targets, unordered (a route orders them per request).
    pub targets: Vec<Target>,
}

impl Plan {
    /// `provider/model` of every target.
    pub fn ids(&self) -> Vec<String> {
        self.targets.iter().map(Target::id).collect()
    }
}

/// An answer and the target that produced it.
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The model within that provider.
    pub model: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    /// The model's prices (config, else the built-in catalog); `None`: nothing prices it.
    pub price: Option<Price>,
    /// The route alias the client named, if any.
    pub route: Option<String>,
    /// Attempts beyond the first (retries and fallbacks).
    pub retries: u32,
    /// Whether the config names the model (as opposed to a `"*"` entry letting it through).
    pub listed: bool,
}

impl<T> Served<T> {
    /// `provider/model` of the target that served.
    pub fn target(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// One try of one target, as a trace shows it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The attempt's span id: the `traceparent` its upstream request carried names it.
    pub span_id: [u8; 8],
    /// The provider tried.
    pub provider: Arc<str>,
    /// Its family in the price catalog (`openai`, `anthropic`, `google`, …), when known.
    pub family: Option<&'static str>,
    /// The model within that provider.
    pub model: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    /// When it began.
    pub started: SystemTime,
    /// How long it took to fail; `None` for the attempt that served, which lasts as long as
    /// its answer (the caller knows when that ends).
    pub failed_after: Option<Duration>,
    /// Why it failed: its kind and message.
    pub error: Option<(ErrorKind, String)>,
}

/// The attempts of one traced request, filled in by the router as it makes them.
#[derive(Debug)]
pub struct AttemptTrace {
    /// The request's own span: its trace id and flags, and the parent of every attempt span.
    pub parent: TraceParent,
    /// The attempts, in order.
    pub attempts: Vec<Attempt>,
}

impl AttemptTrace {
    /// An empty record under the request span `parent`.
    pub fn new(parent: TraceParent) -> Self {
        AttemptTrace {
            parent,
            attempts: Vec::new(),
        }
    }

    /// Records the start of an attempt at `target` and returns the context its upstream
    /// request carries.
    fn begin(&mut self, target: &Target) -> TraceParent {
        let span_id = llm_bridge_core::trace::derived_span_id(
            self.parent.span_id,
            self.attempts.len() as u64,
        );
        self.attempts.push(Attempt {
            span_id,
            provider: target.provider.name().into(),
            family: target.provider.catalog().family(),
            model: target.model.clone(),
            upstream_model: target.upstream_model(),
            started: SystemTime::now(),
            failed_after: None,
            error: None,
        });
        self.parent.child(span_id)
    }
}

/// A route as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteView {
    /// The alias clients name.
    pub alias: String,
    /// How it chooses among its targets.
    pub strategy: Strategy,
    /// Its targets, `provider/model`, in order.
    pub targets: Vec<String>,
    /// Their weights.
    pub weights: Vec<u32>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    /// `provider/model`, or a route alias.
    pub id: String,
    /// The provider, or `llm-bridge` for a route.
    pub owned_by: String,
    /// What it serves (a route: what its first target serves).
    pub kind: ModelKind,
}

/// Resolves model names and sends requests, retrying and falling back as configured.
pub struct Router {
    providers: IndexMap<String, Arc<dyn ChatProvider>>,
    routes: IndexMap<String, Arc<Route>>,
    config: RouterConfig,
    health: Health,
    random: Arc<dyn Random>,
    sessions: Sessions,
}

impl Router {
    /// A router over these providers.
    pub fn new(
        providers: Vec<Arc<dyn ChatProvider>>,
        config: RouterConfig,
    ) -> std::result::Result<Self, StartupError> {
        Self::with_random(providers, config, Arc::new(XorShift::from_entropy()))
    }

    /// A router with a given source of randomness (tests).
    pub fn with_random(
        providers: Vec<Arc<dyn ChatProvider>>,
        config: RouterConfig,
        random: Arc<dyn Random>,
    ) -> std::result::Result<Self, StartupError> {
        let mut map = IndexMap::new();
        for p in providers {
            let name = p.name().to_owned();
            if map.insert(name.clone(), p).is_some() {
                return Err(StartupError::at(
                    format!("providers.{name}"),
                    "defined twice",
                ));
            }
        }
        if let Some(default) = &config.default_provider {
            if !map.contains_key(default) {
                return Err(StartupError::at(
                    "default_provider",
                    format!("no provider named '{default}'"),
                ));
            }
        }
        let mut router = Router {
            providers: map,
            routes: IndexMap::new(),
            health: Health::new(config.cooldown),
            config,
            random,
            sessions: Sessions::default(),
        };
        let mut routes = IndexMap::new();
        for (alias, route) in &router.config.routes {
            let at = |m: String| StartupError::at(format!("routes.{alias}"), m);
            if alias.is_empty() || alias.contains('/') {
                return Err(at(
                    "a route alias must be non-empty and contain no '/'".into()
                ));
            }
            if route.targets.is_empty() {
                return Err(at("needs at least one target".into()));
            }
            let mut targets = Vec::new();
            for spec in &route.targets {
                let target = router
                    .resolve_target(spec.model())
                    .map_err(|e| at(format!("target '{}': {}", spec.model(), e.message())))?;
                targets.push(target);
            }
            let weights: Vec<u32> = route.targets.iter().map(|t| t.weight()).collect();
            if route.strategy == Strategy::Weighted && weights.iter().all(|w| *w == 0) {
                return Err(at(
                    "a weighted route needs a target with a weight above 0".into()
                ));
            }
            routes.insert(
                alias.clone(),
                Arc::new(Route {
                    strategy: route.strategy,
                    affinity: route.affinity,
                    ids: targets.iter().map(Target::id).collect(),
                    targets,
                    weights,
                    retry: route.retry,
                    next: AtomicUsize::new(0),
                }),
            );
        }
        router.routes = routes;
        Ok(router)
    }

    /// The providers, in config order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn ChatProvider>> {
        self.providers.values()
    }

    /// What a model name resolves to.
    pub fn resolve(&self, name: &str) -> Result<Plan> {
        let name = name.trim();
        if let Some(route) = self.routes.get(name) {
            return Ok(Plan {
                route: Some(name.to_owned()),
                targets: route.targets.clone(),
            });
        }
        Ok(Plan {
            route: None,
            targets: vec![self.resolve_target(name)?],
        })
    }

    /// The one target of a `provider/model` or bare model name.
    pub fn resolve_target(&self, name: &str) -> Result<Target> {
        let name = name.trim();
        if let Some(r) = ModelRef::parse(name) {
            if let Some(provider) = self.providers.get(r.provider) {
                if provider.catalog().lookup(r.model).is_some() {
                    return Ok(Target {
                        provider: provider.clone(),
                        model: r.model.to_owned(),
                    });
                }
                return Err(not_found(format!(
                    "model '{}' is not served by provider '{}'",
                    r.model, r.provider
                )));
            }
        }
        if let Some(target) = self.resolve_bare(name) {
            return Ok(target);
        }
        Err(not_found(match ModelRef::parse(name) {
            Some(r) => format!("unknown provider '{}' in model '{name}'", r.provider),
            None => {
                format!("unknown model '{name}': name it as provider/model (see GET /v1/models)")
            }
        }))
    }

    fn resolve_bare(&self, name: &str) -> Option<Target> {
        let target = |p: &Arc<dyn ChatProvider>| Target {
            provider: p.clone(),
            model: name.to_owned(),
        };
        if let Some(default) = &self.config.default_provider {
            let p = self.providers.get(default.as_str())?;
            return p.catalog().lookup(name).is_some().then(|| target(p));
        }
        let mut listing = self.providers.values().filter(|p| p.catalog().lists(name));
        match (listing.next(), listing.next()) {
            (Some(p), None) => Some(target(p)),
            _ => None,
        }
    }

    /// A complete answer.
    pub async fn chat(&self, request: ChatRequest) -> Result<Served<ChatResponse>> {
        let plan = self.resolve(request.model())?;
        self.chat_planned(&plan, request, None).await
    }

    /// A complete answer for an already resolved plan; with `trace`, each attempt is
    /// recorded there and its upstream request carries its `traceparent`.
    pub async fn chat_planned(
        &self,
        plan: &Plan,
        request: ChatRequest,
        trace: Option<&mut AttemptTrace>,
    ) -> Result<Served<ChatResponse>> {
        let session = request.session();
        self.attempts(plan, request, session, trace, complete_attempt)
            .await
    }

    /// A stream of chunks.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<Served<ChunkStream>> {
        let plan = self.resolve(request.model())?;
        self.chat_stream_planned(&plan, request, None).await
    }

    /// A stream for an already resolved plan. The first chunk is awaited before the stream
    /// is handed out: a failure before it is still retried, nothing after it ever is.
    pub async fn chat_stream_planned(
        &self,
        plan: &Plan,
        request: ChatRequest,
        trace: Option<&mut AttemptTrace>,
    ) -> Result<Served<ChunkStream>> {
        let session = request.session();
        self.attempts(plan, request, session, trace, stream_attempt)
            .await
    }

    /// Serves a request that arrived in dialect `dialect` (an ingress's name): a target that
    /// speaks it gets `native` forwarded as bytes, any other the pivot `request`, complete
    /// or streamed as it asks. Retries and fallbacks work as for chat, across both kinds.
    pub async fn dispatch_planned(
        &self,
        plan: &Plan,
        request: ChatRequest,
        dialect: &str,
        native: &NativeRequest,
        trace: Option<&mut AttemptTrace>,
    ) -> Result<Served<Dispatched>> {
        let session = request.session();
        self.attempts(
            plan,
            request,
            session,
            trace,
            |target, request| async move {
                if target.provider.speaks(dialect) {
                    let mut native = native.clone();
                    if let Some(traceparent) = request.traceparent() {
                        native
                            .headers
                            .push(("traceparent", traceparent.to_header()));
                    }
                    return target
                        .provider
                        .forward(&target.model, native)
                        .await
                        .map(Dispatched::Native);
                }
                if request.stream() {
                    stream_attempt(target, request)
                        .await
                        .map(Dispatched::Stream)
                } else {
                    complete_attempt(target, request)
                        .await
                        .map(Dispatched::Complete)
                }
            },
        )
        .await
    }

    /// Serves a request that only targets speaking `operation` can answer ([`EMBEDDINGS`]):
    /// `native` forwarded to each in turn, with the retries and fallbacks of chat. A target
    /// that does not serve it (see [`Target::serves`]) is passed over like a missing model.
    pub async fn forward_planned(
        &self,
        plan: &Plan,
        operation: &str,
        native: &NativeRequest,
    ) -> Result<Served<NativeResponse>> {
        self.attempts(plan, (), native.session, None, |target, ()| async move {
            if !target.serves(operation) {
                return Err(Error::new(
                    ErrorKind::ModelNotFound,
                    format!("model '{}' does not serve {operation}", target.id()),
                )
                .with_param("model"));
            }
            target.provider.forward(&target.model, native.clone()).await
        })
        .await
    }

    /// Each route: its strategy and its targets (`provider/model`).
    pub fn route_views(&self) -> Vec<RouteView> {
        self.routes
            .iter()
            .map(|(alias, r)| RouteView {
                alias: alias.clone(),
                strategy: r.strategy,
                targets: r.ids.clone(),
                weights: r.weights.clone(),
            })
            .collect()
    }

    /// What the router knows now of a target's health (`provider/model`).
    pub fn target_health(&self, id: &str) -> crate::health::TargetHealthView {
        self.health.snapshot(id)
    }

    /// Every model a client can name: route aliases, then `provider/model`.
    pub fn models(&self) -> Vec<ModelListing> {
        let routes = self.routes.iter().map(|(alias, route)| ModelListing {
            id: alias.clone(),
            owned_by: "llm-bridge".into(),
            kind: route.targets.first().map_or(ModelKind::Chat, Target::kind),
        });
        let models = self.providers.values().flat_map(|p| {
            p.catalog().names().map(move |m| ModelListing {
                id: format!("{}/{m}", p.name()),
                owned_by: p.name().to_owned(),
                kind: p
                    .catalog()
                    .lookup(m)
                    .map_or_else(|| ModelKind::of_name(m), |e| e.kind()),
            })
        });
        routes.chain(models).collect()
    }

    fn retry_for(&self, route: Option<&Route>, target: &Target) -> RetryConfig {
        route
            .and_then(|r| r.retry)
            .or_else(|| {
                self.config
                    .provider_retry
                    .get(target.provider.name())
                    .copied()
            })
            .unwrap_or(self.config.retry)
    }

    /// Tries the plan's targets in the strategy's order, each up to its retry attempts.
    async fn attempts<R: Attempted, T, F, Fut>(
        &self,
        plan: &Plan,
        request: R,
        session: Option<u64>,
        mut trace: Option<&mut AttemptTrace>,
        mut op: F,
    ) -> Result<Served<T>>
    where
        F: FnMut(Target, R) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let route = plan
            .route
            .as_ref()
            .and_then(|r| self.routes.get(r))
            .cloned();
        let ids: Vec<String> = match &route {
            Some(r) => r.ids.clone(),
            None => plan.ids(),
        };
        let order = match &route {
            Some(r) => order(
                r.strategy,
                &r.ids,
                &r.weights,
                &r.next,
                &self.health,
                self.random.as_ref(),
            ),
            None => (0..plan.targets.len()).collect(),
        };
        // Resting targets are left out; if every target rests, they are tried anyway.
        let (ready, resting): (Vec<usize>, Vec<usize>) = order
            .into_iter()
            .partition(|i| matches!(self.health.peek(&ids[*i]), Availability::Ready));
        let all_resting = ready.is_empty();
        let mut sequence: Vec<usize> = if all_resting { resting } else { ready };
        // A session goes back to the target that served it while that one is ready.
        let pin = route
            .as_ref()
            .filter(|r| r.affinity == Affinity::Session && r.targets.len() > 1)
            .and_then(|_| Some((plan.route.as_deref()?, session?)));
        if let Some(pinned) = pin.and_then(|(alias, session)| self.sessions.get(alias, session)) {
            if let Some(at) = sequence.iter().position(|i| *i == pinned) {
                let first = sequence.remove(at);
                sequence.insert(0, first);
            }
        }
        let total_attempts: u32 = sequence
            .iter()
            .map(|i| {
                self.retry_for(route.as_deref(), &plan.targets[*i])
                    .attempts
                    .max(1)
            })
            .sum();
        let mut made = 0u32;
        let mut last_error: Option<Error> = None;
        let mut request = Some(request);
        for i in &sequence {
            let target = &plan.targets[*i];
            let id = &ids[*i];
            let retry = self.retry_for(route.as_deref(), target);
            let deadline = started + retry.deadline.duration();
            // Claim the target (its half-open probe, if its cooldown just ended) only now that
            // this request is about to try it; another request may have claimed it meanwhile.
            if !all_resting && matches!(self.health.acquire(id), Availability::Resting(_)) {
                continue;
            }
            for attempt in 0..retry.attempts.max(1) {
                if made > 0 && Instant::now() >= deadline {
                    break;
                }
                made += 1;
                let last = made == total_attempts;
                let this = if last {
                    request.take()
                } else {
                    request.clone()
                };
                let Some(mut this) = this else { break };
                if let Some(trace) = trace.as_deref_mut() {
                    this.stamp(trace.begin(target));
                }
                let began = Instant::now();
                let outcome = op(target.clone(), this).await;
                let e = match outcome {
                    Ok(value) => {
                        self.health.success(id, began.elapsed());
                        if let Some((alias, session)) = pin {
                            self.sessions.set(alias, session, *i);
                        }
                        return Ok(served(target, value, plan.route.clone(), made - 1));
                    }
                    // Before anything logs or keeps it: upstreams echo keys.
                    Err(e) => e.scrubbed(|m| target.provider.redact(m)),
                };
                if let Some(attempt) = trace.as_deref_mut().and_then(|t| t.attempts.last_mut()) {
                    attempt.failed_after = Some(began.elapsed());
                    attempt.error = Some((e.kind(), e.message().to_owned()));
                }
                let time_left = deadline.saturating_duration_since(Instant::now());
                let decision = after_failure(
                    e.kind(),
                    e.retry_after(),
                    attempt,
                    &retry,
                    time_left,
                    || self.random.next_f64(),
                );
                if decision == AfterFailure::Stop {
                    // The request itself is at fault: no other target will do better.
                    self.health.reachable(id);
                    return Err(e);
                }
                self.health.failure(id);
                tracing::info!(
                    target_model = %id,
                    attempt = attempt + 1,
                    error = %e,
                    "upstream attempt failed"
                );
                last_error = Some(e);
                match decision {
                    AfterFailure::Retry(wait) => tokio::time::sleep(wait).await,
                    AfterFailure::NextTarget | AfterFailure::Stop => break,
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "no target could be tried")))
    }
}

/// One attempt at a complete answer.
async fn complete_attempt(target: Target, request: ChatRequest) -> Result<ChatResponse> {
    let answer = target.provider.chat(&target.model, request).await?;
    // An answer that is not a JSON object (an HTML page, a cut body) is the target's fault:
    // retried like a 5xx, never handed to the client. Only its shape is checked here; the
    // gateway parses its usage once, later.
    if let Err(e) = llm_bridge_core::json_object(&answer.body) {
        return Err(Error::new(
            ErrorKind::UpstreamBadResponse,
            format!("upstream answered with invalid JSON: {e}"),
        )
        .with_provider(target.provider.name()));
    }
    Ok(answer)
}

/// One attempt at a stream, resolved once its first chunk arrived.
async fn stream_attempt(target: Target, request: ChatRequest) -> Result<ChunkStream> {
    let provider = target.provider.clone();
    let stream = target.provider.chat_stream(&target.model, request).await?;
    // Errors after the start go to the client too: scrub them like the others.
    let mut stream: ChunkStream =
        Box::pin(stream.map(move |item| item.map_err(|e| e.scrubbed(|m| provider.redact(m)))));
    match stream.next().await {
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => {
            let rest: ChunkStream =
                Box::pin(futures_util::stream::once(async { Ok(first) }).chain(stream));
            Ok(rest)
        }
        None => Ok(stream),
    }
}

/// What a dialect request became (see [`Router::dispatch_planned`]).
pub enum Dispatched {
    /// A target that speaks the dialect answered; its answer is unaltered.
    Native(NativeResponse),
    /// A complete pivot answer.
    Complete(ChatResponse),
    /// A pivot stream.
    Stream(ChunkStream),
}

fn served<T>(target: &Target, value: T, route: Option<String>, retries: u32) -> Served<T> {
    Served {
        upstream_model: target.upstream_model(),
        price: target.price(),
        provider: target.provider.name().into(),
        model: target.model.clone(),
        listed: target.provider.catalog().lists(&target.model),
        value,
        route,
        retries,
    }
}

fn not_found(message: String) -> Error {
    Error::new(ErrorKind::ModelNotFound, message).with_param("model")
}

/// What an attempt sends: a chat request carries the attempt's trace context upstream; a
/// forwarded request (`()`, its bytes shared by every attempt) carries none.
trait Attempted: Clone {
    fn stamp(&mut self, _traceparent: TraceParent) {}
}

impl Attempted for ChatRequest {
    fn stamp(&mut self, traceparent: TraceParent) {
        self.set_traceparent(Some(traceparent));
    }
}

impl Attempted for () {}
