//! What the gateway learns about one request while serving it, and what happens when the
//! request ends: one access event and one usage record, whatever its transport or outcome.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use llm_bridge_auth::Admission;
use llm_bridge_core::{Error, ErrorKind, Price, Usage, inspect};
use llm_bridge_usage::count::{Encoding, input_tokens_of_body, prompt_tokens_of_body};
use llm_bridge_usage::{Estimator, UsageRecord, UsageSink, UsageSource};

use crate::log_context::LogContext;
use crate::metrics::{Metrics, Observation};
use crate::traces::{Finished, RequestTrace, TraceStart, Tracer};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered completely.
    Ok,
    /// Failed with an error (before or after the answer started).
    Error,
    /// The client went away, stopped reading, or the gateway shut down before the answer
    /// was complete.
    Cancelled,
    /// The upstream ended the stream without finishing the answer.
    Truncated,
}

impl Outcome {
    /// The label used in logs and usage records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Truncated => "truncated",
        }
    }
}

/// Where finished requests go: metrics, and the usage store (if enabled). Shared by all
/// requests.
#[derive(Default)]
pub struct Telemetry {
    /// The usage writer's queue.
    pub usage: Option<UsageSink>,
    /// Where token estimates are computed, one at a time, off the async threads.
    pub estimator: Option<Estimator>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// OpenTelemetry traces, when configured.
    pub tracer: Option<Arc<Tracer>>,
    /// Listeners of access events as they happen (the console's live view).
    pub live: crate::live::Live,
}

/// What is learnt about one request as it is served, filled in as it goes and moved whole
/// into the access event, the usage record and the trace when it ends.
#[derive(Default)]
pub struct RequestFacts {
    /// The request id (the client's `x-request-id` or a generated one).
    pub request_id: Arc<str>,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// The access key's name.
    pub key: Option<Arc<str>>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The provider that served it.
    pub provider: Option<Arc<str>>,
    /// The model within the provider.
    pub provider_model: Option<String>,
    /// The model name sent upstream.
    pub upstream_model: Option<String>,
    /// The route alias the client named.
    pub route: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The HTTP status of the answer (for streams: of its start).
    pub status: u16,
    /// Time to the first chunk of a stream.
    pub ttft: Option<Duration>,
    /// Time until the upstream's answer started.
    pub upstream: Option<Duration>,
    /// Token counts reported by the upstream.
    pub usage: Option<Usage>,
    /// The model's prices.
    pub price: Option<Price>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The kind of what went wrong.
    pub error_kind: Option<ErrorKind>,
    /// Time the gateway itself spent before the answer started.
    pub overhead: Option<Duration>,
    /// Attempts beyond the first (retries and fallbacks).
    pub retries: u32,
    /// Whether the model is one the config names (not let through by a `"*"` entry): only
    /// then does its name become a metrics label.
    pub listed: bool,
    /// About a token per four bytes of the request body.
    pub prompt_estimate: u64,
    /// The key's admission, settled with the real usage when the request ends.
    pub admission: Option<Admission>,
    /// The client's request body, kept (by reference) for a token estimate.
    pub request_body: Option<Bytes>,
    /// A complete answer's body, kept for a token estimate when it reports no usage.
    pub response_body: Option<Bytes>,
    /// The text a stream delivered, for a token estimate (its first part only).
    pub delivered_text: String,
    /// Bytes of delivered text beyond what `delivered_text` keeps.
    pub delivered_extra: u64,
    /// Whether any of the answer reached the client (a stream started).
    pub answered: bool,
    /// The request's trace, when it is traced (never without a tracer).
    pub trace: Option<Box<RequestTrace>>,
    /// A client's unsampled trace context, passed on upstream as it came.
    pub propagate: Option<llm_bridge_core::TraceParent>,
    /// Whether the request is for embeddings: its prompt is `input`, not `messages`.
    pub embeddings: bool,
}

/// One request's log: its [`RequestFacts`] (reached through `Deref`), emitted once when it
/// ends (explicitly, or by `Drop` when the client abandoned it).
pub struct RequestLog {
    telemetry: Arc<Telemetry>,
    /// When the request arrived.
    pub started: Instant,
    started_wall: SystemTime,
    /// Which request the log lines emitted while it is served belong to.
    pub context: LogContext,
    /// Boxed: the log moves down through every future of the request path, each of which
    /// keeps room for it; inline, its 664 bytes made the handler's future ~3 KB larger, and
    /// that future's size shows in the memory of every open stream.
    facts: Box<RequestFacts>,
    finished: bool,
}

impl std::ops::Deref for RequestLog {
    type Target = RequestFacts;
    fn deref(&self) -> &RequestFacts {
        &self.facts
    }
}

impl std::ops::DerefMut for RequestLog {
    fn deref_mut(&mut self) -> &mut RequestFacts {
        &mut self.facts
    }
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog")
            .field("request_id", &self.request_id)
            .field("model", &self.model)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RequestLog {
    /// A log for a request that just arrived.
    pub fn new(telemetry: Arc<Telemetry>, request_id: Arc<str>, transport: &'static str) -> Self {
        telemetry.metrics.request_started();
        let context = LogContext::new(request_id.clone(), transport);
        RequestLog {
            telemetry,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            context,
            facts: Box::new(RequestFacts {
                request_id,
                transport,
                status: 200,
                ..RequestFacts::default()
            }),
            finished: false,
        }
    }

    /// Starts the request's trace, when traces are configured: continues the client's
    /// `traceparent` or starts one (sampled), named `name()` (`POST /v1/chat/completions`).
    pub fn begin_trace(&mut self, headers: &http::HeaderMap, name: impl FnOnce() -> String) {
        let Some(tracer) = &self.telemetry.tracer else {
            return;
        };
        match tracer.begin(headers, name()) {
            TraceStart::Off => {}
            TraceStart::Propagate(p) => self.propagate = Some(p),
            TraceStart::Record(t) => self.trace = Some(t),
        }
    }

    /// The shared telemetry.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Keeps the delivered text bounded: what goes beyond the estimate's sample is only
    /// counted in bytes.
    pub fn bound_delivered_text(&mut self) {
        let keep = llm_bridge_usage::count::SAMPLE_BYTES;
        if self.delivered_text.len() > keep {
            let cut = llm_bridge_usage::count::prefix(&self.delivered_text, keep).len();
            self.delivered_extra += (self.delivered_text.len() - cut) as u64;
            self.delivered_text.truncate(cut);
        }
    }

    /// Notes an error.
    pub fn fail(&mut self, e: &Error) {
        self.status = e.status();
        self.error = Some(e.message().to_owned());
        self.error_kind = Some(e.kind());
    }

    /// Ends the request: emits the access event and hands the usage record to the writer.
    pub fn finish(mut self, outcome: Outcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ended = Ended {
            telemetry: self.telemetry.clone(),
            outcome,
            latency: self.started.elapsed(),
            time_ms: self
                .started_wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            context: self.context.clone(),
            facts: std::mem::take(&mut *self.facts),
        };
        if ended.needs_estimate() {
            // Counting tokens is CPU work (and the first count loads a vocabulary): keep it
            // off the async threads.
            if let Some(estimator) = self.telemetry.estimator.clone() {
                estimator.submit(move || ended.emit());
                return;
            }
        }
        ended.emit();
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        // A request dropped before it finished was abandoned by its client.
        self.end(Outcome::Cancelled);
    }
}

/// A finished request, ready to be logged and recorded.
struct Ended {
    telemetry: Arc<Telemetry>,
    outcome: Outcome,
    latency: Duration,
    time_ms: i64,
    context: LogContext,
    facts: RequestFacts,
}

impl Ended {
    /// Tokens were spent (an answer started) but the upstream did not say how many.
    fn needs_estimate(&self) -> bool {
        self.facts.usage.is_none() && self.facts.answered
    }

    fn usage(&self) -> (Usage, UsageSource) {
        if let Some(u) = self.facts.usage {
            return (u, UsageSource::Upstream);
        }
        if !self.facts.answered {
            return (Usage::default(), UsageSource::None);
        }
        let encoding =
            Encoding::for_model(self.facts.upstream_model.as_deref().unwrap_or_default());
        let prompt = self.facts.request_body.as_deref().map_or(0, |b| {
            if self.facts.embeddings {
                input_tokens_of_body(encoding, b)
            } else {
                prompt_tokens_of_body(encoding, b)
            }
        });
        let completion = match &self.facts.response_body {
            Some(body) => {
                let mut text = String::new();
                let _ = inspect(body, Some(&mut text));
                encoding.count(&text)
            }
            None => {
                encoding.count_with_extra(&self.facts.delivered_text, self.facts.delivered_extra)
            }
        };
        (Usage::new(prompt, completion), UsageSource::Estimated)
    }

    /// The requested model without its `provider/` prefix, when the provider is known.
    fn model_within_provider(&self) -> Option<String> {
        let model = self.facts.model.as_deref()?;
        Some(
            self.facts
                .provider
                .as_deref()
                .and_then(|p| model.strip_prefix(p)?.strip_prefix('/'))
                .unwrap_or(model)
                .to_owned(),
        )
    }

    fn emit(mut self) {
        let (usage, source) = self.usage();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let cost = self.facts.price.map(|p| p.cost(&usage));
        if let Some(admission) = self.facts.admission.take() {
            admission.settle(usage.total_tokens, cost.unwrap_or(0.0));
        }
        let model = self
            .facts
            .provider_model
            .take()
            .or_else(|| self.model_within_provider());
        let provider = self.facts.provider.as_deref().unwrap_or_default();
        // Labels come from the config only: a client's made-up model name must not make a
        // series of its own.
        let model_label = match (&self.facts.provider, &model) {
            (Some(p), Some(m)) if self.facts.listed => format!("{p}/{m}"),
            (Some(p), Some(_)) => format!("{p}/*"),
            _ => "unknown".to_owned(),
        };
        self.telemetry.metrics.request_finished(&Observation {
            provider,
            model: &model_label,
            status: self.facts.status,
            transport: self.facts.transport,
            latency_s: self.latency.as_secs_f64(),
            // The histogram is of streams' first chunks; a complete answer's ttft is its latency.
            ttft_s: self
                .facts
                .ttft
                .filter(|_| self.facts.stream)
                .map(|d| d.as_secs_f64()),
            overhead_s: self.facts.overhead.map(|d| d.as_secs_f64()),
            usage: &usage,
            upstream_error: self
                .facts
                .error_kind
                .filter(|k| k.is_upstream())
                .map(ErrorKind::label),
            truncated: self.outcome == Outcome::Truncated,
        });
        let _entered = self.context.enter();
        tracing::info!(
            target: "llm_bridge::access",
            request_id = %self.facts.request_id,
            transport = self.facts.transport,
            key = self.facts.key.as_deref(),
            model = self.facts.model.as_deref(),
            route = self.facts.route.as_deref(),
            provider = self.facts.provider.as_deref(),
            upstream_model = self.facts.upstream_model.as_deref(),
            stream = self.facts.stream,
            status = self.facts.status,
            outcome = self.outcome.as_str(),
            latency_ms = ms(self.latency),
            ttft_ms = self.facts.ttft.map(ms),
            upstream_ms = self.facts.upstream.map(ms),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cached_tokens = usage.cached_tokens,
            cache_write_tokens = usage.cache_write_tokens,
            reasoning_tokens = usage.reasoning_tokens,
            usage_source = source.as_str(),
            cost = cost,
            retries = self.facts.retries,
            error = self.facts.error.as_deref(),
            "request finished"
        );
        if let Some(trace) = self.facts.trace.take() {
            if let Some(tracer) = &self.telemetry.tracer {
                tracer.submit(
                    trace,
                    &Finished {
                        request_id: &self.facts.request_id,
                        transport: self.facts.transport,
                        key: self.facts.key.as_deref(),
                        model: self.facts.model.as_deref(),
                        route: self.facts.route.as_deref(),
                        stream: self.facts.stream,
                        status: self.facts.status,
                        outcome: self.outcome.as_str(),
                        usage: &usage,
                        usage_known: source != UsageSource::None,
                        cost,
                        error: self.facts.error.as_deref(),
                        error_kind: self.facts.error_kind,
                        retries: self.facts.retries,
                        latency: self.latency,
                        request_body: self.facts.request_body.as_ref(),
                        delivered_text: &self.facts.delivered_text,
                    },
                );
            }
        }
        if self.telemetry.live.listening() {
            self.telemetry.live.send(crate::live::LiveEvent {
                time: llm_bridge_usage::time::rfc3339(self.time_ms),
                request_id: self.facts.request_id.to_string(),
                transport: self.facts.transport,
                key: self.facts.key.as_deref().map(str::to_owned),
                model: self.facts.model.clone(),
                provider: self.facts.provider.as_deref().map(str::to_owned),
                stream: self.facts.stream,
                status: self.facts.status,
                outcome: self.outcome.as_str(),
                latency_ms: ms(self.latency),
                ttft_ms: self.facts.ttft.map(ms),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost,
                error: self.facts.error.clone(),
            });
        }
        let Some(sink) = &self.telemetry.usage else {
            return;
        };
        // Requests nobody authenticated belong to no one: they are logged, not recorded.
        if self.facts.key.is_none() {
            return;
        }
        sink.record(UsageRecord {
            time_ms: self.time_ms,
            request_id: self.facts.request_id.to_string(),
            key: self.facts.key.as_deref().map(str::to_owned),
            provider: self.facts.provider.as_deref().map(str::to_owned),
            model,
            upstream_model: self.facts.upstream_model.take(),
            route: self.facts.route.take(),
            transport: self.facts.transport.to_owned(),
            stream: self.facts.stream,
            status: self.facts.status,
            outcome: self.outcome.as_str().to_owned(),
            usage,
            usage_source: source,
            latency_ms: ms(self.latency),
            ttft_ms: self.facts.ttft.map(ms),
            cost,
        });
    }
}
