//! OpenTelemetry traces: one trace per sampled request, a server span for the request and a
//! client span per upstream attempt, with the GenAI semantic-convention attributes, encoded
//! as OTLP protobuf and handed to an exporter by one background task.
//!
//! Nothing here runs for a request that is not traced: with no tracer configured,
//! [`RequestLog::trace`](crate::request_log::RequestLog) stays `None` and no span is built. The
//! spans are built when the request has ended, from what the access event already knows and
//! the router's attempt list, then queued (bounded, never waited on: a full queue drops the
//! trace and counts it) for the exporter task, which batches and posts them.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use llm_bridge_core::{ErrorKind, TraceParent, Usage};
use llm_bridge_router::{Attempt, AttemptTrace};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

/// Where encoded batches go: an `ExportTraceServiceRequest` in protobuf, to be posted to the
/// collector's `/v1/traces`. The binary implements it with the upstream HTTP client.
pub trait SpanExporter: Send + Sync + 'static {
    /// Sends one batch; `Err` says why it was not accepted.
    fn export(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The tracer's settings.
#[derive(Debug, Clone)]
pub struct TracerSettings {
    /// `service.name` of the resource.
    pub service_name: String,
    /// The share of new traces sampled, 0 to 1.
    pub sample_ratio: f64,
    /// Export prompts and answers.
    pub capture_content: bool,
    /// Traces waiting for export at most; more are dropped (and counted).
    pub queue_capacity: usize,
    /// Spans in one export at most.
    pub max_batch: usize,
    /// How long a batch waits for more spans before it is sent.
    pub batch_delay: Duration,
}

impl Default for TracerSettings {
    fn default() -> Self {
        TracerSettings {
            service_name: "llm-bridge".into(),
            sample_ratio: 1.0,
            capture_content: false,
            queue_capacity: 2048,
            max_batch: 512,
            batch_delay: Duration::from_millis(500),
        }
    }
}

/// How often the exporter takes the traces that arrived while a batch gathers.
const GATHER_TICK: Duration = Duration::from_millis(10);

enum Queued {
    Spans(Vec<Span>),
    Flush(oneshot::Sender<()>),
}

/// Counters of the exporter, shown in `/metrics`.
#[derive(Clone, Default)]
pub struct TraceCounters {
    /// Traces dropped because the queue was full.
    pub dropped: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Batches the collector did not accept (down, refused, timed out).
    pub failed_exports: Counter,
}

/// Decides which requests are traced, builds their spans when they end and queues them.
pub struct Tracer {
    queue: mpsc::Sender<Queued>,
    task: Mutex<Option<ExportTask>>,
    /// Trace ids whose last 8 bytes are below this are sampled.
    threshold: u64,
    sample_all: bool,
    capture_content: bool,
    counters: TraceCounters,
}

struct ExportTask {
    receiver: mpsc::Receiver<Queued>,
    exporter: Arc<dyn SpanExporter>,
    resource: Resource,
    max_batch: usize,
    batch_delay: Duration,
}

impl Tracer {
    /// A tracer exporting through `exporter`; nothing is sent before [`Tracer::start`].
    pub fn new(settings: &TracerSettings, exporter: Arc<dyn SpanExporter>) -> Self {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let ratio = if settings.sample_ratio.is_nan() {
            0.0
        } else {
            settings.sample_ratio.clamp(0.0, 1.0)
        };
        let resource = Resource {
            attributes: vec![
                kv_str("service.name", &settings.service_name),
                kv_str("telemetry.sdk.name", "llm-bridge"),
                kv_str("telemetry.sdk.language", "rust"),
                kv_str("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Resource::default()
        };
        Tracer {
            queue,
            task: Mutex::new(Some(ExportTask {
                receiver,
                exporter,
                resource,
                max_batch: settings.max_batch.max(1),
                batch_delay: settings.batch_delay,
            })),
            // Lossy only at the extremes, where `sample_all` and 0 decide.
            threshold: (ratio * u64::MAX as f64) as u64,
            sample_all: ratio >= 1.0,
            capture_content: settings.capture_content,
            counters: TraceCounters::default(),
        }
    }

    /// The counters, to be registered with the metrics.
    pub fn counters(&self) -> &TraceCounters {
        &self.counters
    }

    /// Starts the exporter task (once; later calls do nothing). Needs a Tokio runtime.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        let task = self.task.lock().ok()?.take()?;
        let counters = self.counters.clone();
        Some(tokio::spawn(task.run(counters)))
    }

    /// Sends what is queued now and waits for it, at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.queue.send(Queued::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
        .await;
    }

    /// What a request that arrived with `headers` carries: a new or continued trace that is
    /// recorded, or only the client's unsampled context, passed on upstream.
    pub fn begin(&self, headers: &HeaderMap, name: String) -> TraceStart {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let (trace_id, remote_parent, flags) = match parent {
            // The client decided for its own trace.
            Some(p) if !p.sampled() => return TraceStart::Propagate(p),
            Some(p) => (p.trace_id, Some(p.span_id), p.flags),
            None => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&random_u64().to_be_bytes());
                id[8..].copy_from_slice(&random_u64().to_be_bytes());
                let low = u64::from_be_bytes([
                    id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15],
                ]);
                if !self.sample_all && low >= self.threshold {
                    return TraceStart::Off;
                }
                (id, None, 1)
            }
        };
        let span_id = random_u64().max(1).to_be_bytes();
        TraceStart::Record(Box::new(RequestTrace {
            attempts: AttemptTrace::new(TraceParent {
                trace_id,
                span_id,
                flags,
            }),
            remote_parent,
            started: SystemTime::now(),
            name,
            max_tokens: None,
            response_model: None,
            finish_reasons: Vec::new(),
            capture_content: self.capture_content,
            answer: None,
        }))
    }

    /// Queues the spans of a finished request; a full queue drops them (counted).
    pub fn submit(&self, trace: Box<RequestTrace>, facts: &Finished<'_>) {
        let spans = trace.spans(facts);
        if self.queue.try_send(Queued::Spans(spans)).is_err() {
            self.counters.dropped.inc();
        }
    }
}

/// What [`Tracer::begin`] decided.
pub enum TraceStart {
    /// Not traced.
    Off,
    /// Not traced here, but the client's context goes upstream as it came.
    Propagate(TraceParent),
    /// Traced.
    Record(Box<RequestTrace>),
}

/// One traced request, while it is served.
#[derive(Debug)]
pub struct RequestTrace {
    /// The request span's context and the router's attempts.
    pub attempts: AttemptTrace,
    /// The client's span, when it sent a `traceparent`.
    pub remote_parent: Option<[u8; 8]>,
    /// When the request arrived.
    pub started: SystemTime,
    /// The server span's name (`POST /v1/chat/completions`).
    pub name: String,
    /// `max_completion_tokens` / `max_tokens` of the request.
    pub max_tokens: Option<u64>,
    /// The model the answer names.
    pub response_model: Option<String>,
    /// The finish reasons of the answer.
    pub finish_reasons: Vec<String>,
    /// Whether prompts and answers are exported.
    pub capture_content: bool,
    /// A complete answer's body, kept only when content is captured.
    pub answer: Option<Bytes>,
}

impl RequestTrace {
    /// Notes the model and finish reasons of a chunk or a complete answer (chat completions).
    pub fn see_answer(&mut self, json: &[u8]) {
        let first = self.response_model.is_none();
        if let Some(facts) = llm_bridge_core::answer_facts(json, first) {
            if self.response_model.is_none() {
                self.response_model = facts.model;
            }
            self.finish_reasons.extend(facts.finish_reasons);
        }
    }
}

/// What the access event knows of a finished request, as the spans need it.
pub struct Finished<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// `http` or `ws`.
    pub transport: &'a str,
    /// The key's name.
    pub key: Option<&'a str>,
    /// The model the client named.
    pub model: Option<&'a str>,
    /// The route alias, if one was named.
    pub route: Option<&'a str>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The answer's status.
    pub status: u16,
    /// `ok`, `error`, `cancelled` or `truncated`.
    pub outcome: &'a str,
    /// Token counts.
    pub usage: &'a Usage,
    /// Whether the token counts are known (reported or estimated).
    pub usage_known: bool,
    /// The cost in USD, when the model is priced.
    pub cost: Option<f64>,
    /// What went wrong.
    pub error: Option<&'a str>,
    /// Its kind.
    pub error_kind: Option<ErrorKind>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// The whole request's duration.
    pub latency: Duration,
    /// The request body (for captured content).
    pub request_body: Option<&'a Bytes>,
    /// The streamed text delivered (for captured content; its first part only).
    pub delivered_text: &'a str,
}

impl RequestTrace {
    fn spans(self: Box<Self>, f: &Finished<'_>) -> Vec<Span> {
        let RequestTrace {
            attempts,
            remote_parent,
            started,
            name,
            max_tokens,
            response_model,
            finish_reasons,
            capture_content,
            answer,
        } = *self;
        let AttemptTrace { parent, attempts } = attempts;
        let start_ns = unix_nanos(started);
        let end_ns = start_ns.saturating_add(nanos(f.latency));
        let served = attempts.iter().rposition(|a| a.error.is_none());
        let served_attempt = served.map(|i| &attempts[i]);
        let failed = f.outcome != "ok";

        let mut attrs = vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("llm_bridge.request_id", f.request_id),
            kv_str("llm_bridge.transport", f.transport),
            kv_bool("llm_bridge.stream", f.stream),
            kv_str("llm_bridge.outcome", f.outcome),
            kv_int("llm_bridge.retries", i64::from(f.retries)),
            kv_int("http.response.status_code", i64::from(f.status)),
        ];
        if let Some((method, path)) = name.split_once(' ') {
            attrs.push(kv_str("http.request.method", method));
            attrs.push(kv_str("url.path", path));
        }
        let push_str = |attrs: &mut Vec<KeyValue>, k: &str, v: Option<&str>| {
            if let Some(v) = v {
                attrs.push(kv_str(k, v));
            }
        };
        push_str(&mut attrs, "gen_ai.request.model", f.model);
        push_str(&mut attrs, "llm_bridge.key", f.key);
        push_str(&mut attrs, "llm_bridge.route", f.route);
        if let Some(a) = served_attempt {
            attrs.push(kv_str("gen_ai.provider.name", &provider_name(a)));
            attrs.push(kv_str("llm_bridge.provider", &a.provider));
            attrs.push(kv_str(
                "llm_bridge.target",
                &format!("{}/{}", a.provider, a.model),
            ));
        }
        push_str(
            &mut attrs,
            "gen_ai.response.model",
            response_model.as_deref(),
        );
        if let Some(n) = max_tokens {
            attrs.push(kv_int("gen_ai.request.max_tokens", clamp_i64(n)));
        }
        let usage_attrs = |attrs: &mut Vec<KeyValue>| {
            if f.usage_known {
                attrs.push(kv_int(
                    "gen_ai.usage.input_tokens",
                    clamp_i64(f.usage.prompt_tokens),
                ));
                attrs.push(kv_int(
                    "gen_ai.usage.output_tokens",
                    clamp_i64(f.usage.completion_tokens),
                ));
                if f.usage.cached_tokens > 0 {
                    attrs.push(kv_int(
                        "gen_ai.usage.cache_read.input_tokens",
                        clamp_i64(f.usage.cached_tokens),
                    ));
                }
                if f.usage.cache_write_tokens > 0 {
                    attrs.push(kv_int(
                        "gen_ai.usage.cache_creation.input_tokens",
                        clamp_i64(f.usage.cache_write_tokens),
                    ));
                }
            }
            if !finish_reasons.is_empty() {
                attrs.push(kv_strs("gen_ai.response.finish_reasons", &finish_reasons));
            }
        };
        usage_attrs(&mut attrs);
        if let Some(cost) = f.cost {
            attrs.push(kv_f64("llm_bridge.cost_usd", cost));
        }
        if let Some(kind) = f.error_kind.filter(|_| failed) {
            attrs.push(kv_str("error.type", kind.label()));
        }
        if capture_content {
            if let Some(input) = f.request_body.and_then(|b| input_messages(b)) {
                attrs.push(kv_str("gen_ai.input.messages", &input));
            }
            let text = match &answer {
                Some(body) => answer_text(body),
                None => f.delivered_text.to_owned(),
            };
            if !text.is_empty() {
                attrs.push(kv_str(
                    "gen_ai.output.messages",
                    &output_messages(&text, finish_reasons.first().map(String::as_str)),
                ));
            }
        }
        let status = |error: Option<&str>| {
            error.map(|message| Status {
                code: StatusCode::Error as i32,
                message: message.to_owned(),
            })
        };
        let server = Span {
            trace_id: parent.trace_id.to_vec(),
            span_id: parent.span_id.to_vec(),
            parent_span_id: remote_parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x100 | (u32::from(remote_parent.is_some()) << 9) | u32::from(parent.flags),
            name,
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: end_ns,
            attributes: attrs,
            status: status(if failed {
                f.error.or(Some(f.outcome))
            } else {
                None
            }),
            ..Span::default()
        };

        let mut spans = Vec::with_capacity(attempts.len() + 1);
        for (i, a) in attempts.iter().enumerate() {
            let a_start = unix_nanos(a.started);
            let a_end = match a.failed_after {
                Some(d) => a_start.saturating_add(nanos(d)),
                None => end_ns,
            };
            let is_served = Some(i) == served;
            let mut attrs = vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_str("gen_ai.provider.name", &provider_name(a)),
                kv_str("gen_ai.request.model", &a.upstream_model),
                kv_str("llm_bridge.provider", &a.provider),
                kv_str("llm_bridge.target", &format!("{}/{}", a.provider, a.model)),
                kv_int("llm_bridge.attempt", clamp_i64(i as u64 + 1)),
            ];
            if let Some(n) = max_tokens {
                attrs.push(kv_int("gen_ai.request.max_tokens", clamp_i64(n)));
            }
            let error = match &a.error {
                Some((kind, message)) => {
                    attrs.push(kv_str("error.type", kind.label()));
                    if let ErrorKind::UpstreamRejected(status) = kind {
                        attrs.push(kv_int("http.response.status_code", i64::from(*status)));
                    }
                    Some(message.as_str())
                }
                None if is_served => {
                    push_str(
                        &mut attrs,
                        "gen_ai.response.model",
                        response_model.as_deref(),
                    );
                    usage_attrs(&mut attrs);
                    if failed {
                        if let Some(kind) = f.error_kind {
                            attrs.push(kv_str("error.type", kind.label()));
                        }
                        f.error.or(Some(f.outcome))
                    } else {
                        None
                    }
                }
                None => None,
            };
            spans.push(Span {
                trace_id: parent.trace_id.to_vec(),
                span_id: a.span_id.to_vec(),
                parent_span_id: parent.span_id.to_vec(),
                flags: 0x100 | u32::from(parent.flags),
                name: format!("chat {}", a.upstream_model),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: a_start,
                end_time_unix_nano: a_end.max(a_start),
                attributes: attrs,
                status: status(error),
                ..Span::default()
            });
        }
        spans.insert(0, server);
        spans
    }
}

impl ExportTask {
    async fn run(mut self, counters: TraceCounters) {
        let mut batch: Vec<Span> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let Some(first) = self.receiver.recv().await else {
                break;
            };
            self.take(first, &mut batch, &mut flushes);
            let deadline = tokio::time::Instant::now() + self.batch_delay;
            // What arrived is taken every GATHER_TICK, not as each trace arrives: a request
            // served on another thread (a lane; this task runs on the main thread) would
            // otherwise wake this one for every trace.
            let mut closed = false;
            while !closed && flushes.is_empty() && batch.len() < self.max_batch {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep_until(deadline.min(now + GATHER_TICK)).await;
                while batch.len() < self.max_batch {
                    match self.receiver.try_recv() {
                        Ok(next) => self.take(next, &mut batch, &mut flushes),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            // Whatever else is already waiting goes too.
            while batch.len() < self.max_batch {
                match self.receiver.try_recv() {
                    Ok(next) => self.take(next, &mut batch, &mut flushes),
                    Err(_) => break,
                }
            }
            self.send(&mut batch, &counters).await;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        self.send(&mut batch, &counters).await;
    }

    fn take(&self, item: Queued, batch: &mut Vec<Span>, flushes: &mut Vec<oneshot::Sender<()>>) {
        match item {
            Queued::Spans(spans) => batch.extend(spans),
            Queued::Flush(done) => flushes.push(done),
        }
    }

    async fn send(&self, batch: &mut Vec<Span>, counters: &TraceCounters) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let n = spans.len() as u64;
        let body = encode(&self.resource, &spans);
        match self.exporter.export(body).await {
            Ok(()) => {
                counters.exported.inc_by(n);
            }
            Err(e) => {
                counters.failed_exports.inc();
                tracing::warn!(error = %e, spans = n, "could not export traces");
            }
        }
    }
}

/// An `ExportTraceServiceRequest` of `spans`, in protobuf.
fn encode(resource: &Resource, spans: &[Span]) -> Bytes {
    let scope = InstrumentationScope {
        name: "llm-bridge".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    Bytes::from(crate::otlp_wire::encode(resource, &scope, spans))
}

/// `gen_ai.provider.name`: the semantic conventions' name of the provider's family, else
/// the provider's configured name.
fn provider_name(a: &Attempt) -> String {
    match a.family {
        Some("google") => "gcp.gemini".into(),
        Some("mistral") => "mistral_ai".into(),
        Some("xai") => "x_ai".into(),
        Some(family) => family.into(),
        None => a.provider.to_string(),
    }
}

/// The `messages` (and `system`) of a request body, as JSON.
fn input_messages(body: &[u8]) -> Option<String> {
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let mut out = serde_json::Map::new();
    for key in ["system", "instructions", "messages", "input"] {
        if let Some(v) = value.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    match out.len() {
        0 => None,
        1 if out.contains_key("messages") => out.remove("messages").map(|v| v.to_string()),
        _ => Some(serde_json::Value::Object(out).to_string()),
    }
}

/// The text of a complete answer: a chat completion's, or a native answer as it came.
fn answer_text(body: &[u8]) -> String {
    let mut text = String::new();
    if llm_bridge_core::inspect(body, Some(&mut text)).is_ok() && !text.is_empty() {
        return text;
    }
    String::from_utf8_lossy(body).into_owned()
}

fn output_messages(text: &str, finish_reason: Option<&str>) -> String {
    let mut message = serde_json::json!({
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
    });
    if let Some(reason) = finish_reason {
        message["finish_reason"] = reason.into();
    }
    serde_json::Value::Array(vec![message]).to_string()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

fn kv_bool(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

fn kv_strs(key: &str, values: &[String]) -> KeyValue {
    kv(
        key,
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .iter()
                .map(|v| AnyValue {
                    value: Some(any_value::Value::StringValue(v.clone())),
                })
                .collect(),
        }),
    )
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, nanos)
}

/// Ids for spans and traces: xorshift64* per thread, seeded once from the OS.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            let seed = u64::from_le_bytes(b);
            if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed }
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;
    impl SpanExporter for Nowhere {
        fn export(
            &self,
            _body: Bytes,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn tracer(ratio: f64) -> Tracer {
        Tracer::new(
            &TracerSettings {
                sample_ratio: ratio,
                ..TracerSettings::default()
            },
            Arc::new(Nowhere),
        )
    }

    #[test]
    fn a_sampled_traceparent_is_continued_and_an_unsampled_one_passed_on() {
        let t = tracer(0.0);
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        match t.begin(&headers, "POST /x".into()) {
            TraceStart::Record(r) => {
                assert_eq!(r.attempts.parent.trace_id[0], 0x4b);
                assert_eq!(
                    r.remote_parent,
                    Some([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
                );
                assert_ne!(
                    r.attempts.parent.span_id,
                    [0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
                );
            }
            _ => panic!("a sampled parent is traced whatever the ratio"),
        }
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            t.begin(&headers, "POST /x".into()),
            TraceStart::Propagate(_)
        ));
    }

    #[test]
    fn the_ratio_samples_new_traces() {
        let none = HeaderMap::new();
        let count = |t: &Tracer| {
            (0..2000)
                .filter(|_| matches!(t.begin(&none, "POST /x".into()), TraceStart::Record(_)))
                .count()
        };
        assert_eq!(count(&tracer(0.0)), 0);
        assert_eq!(count(&tracer(1.0)), 2000);
        let half = count(&tracer(0.5));
        assert!((800..1200).contains(&half), "{half}");
    }
}
