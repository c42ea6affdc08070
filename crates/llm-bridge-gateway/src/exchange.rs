//! One chat request, from a validated body to an answer, the same for every transport:
//! routing, timing, usage and the access event live here, framing lives in the transports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use llm_bridge_auth::{Principal, RateInfo};
use llm_bridge_core::{
    ChatRequest, ChunkStream, Error, ErrorKind, Ingress, NativeRequest, NativeResponse, Usage,
    completion_usage,
};
use llm_bridge_router::{Dispatched, Plan, Served};

use crate::Gateway;
use crate::meter::MeteredStream;
use crate::native::NativeBody;
use crate::request_log::{Outcome, RequestLog};

/// A successful answer.
pub(crate) enum Answer {
    /// A complete `chat.completion` object.
    Complete {
        /// The upstream's JSON, untouched.
        body: Bytes,
        /// Time spent waiting for the upstream.
        upstream: Duration,
    },
    /// A stream of chunks.
    Stream {
        /// The chunks.
        stream: Box<MeteredStream>,
        /// Time the upstream took to start answering.
        upstream: Duration,
    },
    /// A target that speaks the client's dialect answered: its bytes, unaltered.
    Native {
        /// Its `content-type`.
        content_type: String,
        /// The body, metered as it is forwarded.
        body: Box<NativeBody>,
        /// Time the upstream took to start answering.
        upstream: Duration,
    },
}

/// How the client spoke: chat completions, or a dialect whose request may be forwarded
/// natively to targets that speak it.
#[derive(Clone, Copy)]
pub(crate) enum Dialect<'a> {
    /// Chat completions.
    Chat,
    /// A mounted dialect and its request as the client sent it.
    Ingress(&'a dyn Ingress, &'a NativeRequest),
}

/// The outcome of [`run`]: the answer, and the key's rate figures for the response headers.
pub(crate) struct Exchanged {
    /// The answer, or the error to render.
    pub result: Result<Answer, Error>,
    /// `x-ratelimit-*` figures, when the key has rate limits.
    pub rate: Option<RateInfo>,
    /// `provider/model` of the target that served.
    pub target: Option<String>,
}

/// Runs one chat request. The log is finished here, or handed to the stream.
pub(crate) async fn run(
    gateway: &Gateway,
    log: RequestLog,
    principal: &Principal,
    request: ChatRequest,
) -> Exchanged {
    run_as(gateway, log, principal, request, Dialect::Chat).await
}

/// Runs one request that arrived in `dialect`.
pub(crate) async fn run_as(
    gateway: &Gateway,
    log: RequestLog,
    principal: &Principal,
    request: ChatRequest,
    dialect: Dialect<'_>,
) -> Exchanged {
    let mut rate = None;
    let mut target = None;
    let result = serve(
        gateway,
        log,
        principal,
        request,
        dialect,
        &mut rate,
        &mut target,
    )
    .await;
    Exchanged {
        result,
        rate,
        target,
    }
}

async fn serve(
    gateway: &Gateway,
    mut log: RequestLog,
    principal: &Principal,
    mut request: ChatRequest,
    dialect: Dialect<'_>,
    rate: &mut Option<RateInfo>,
    target: &mut Option<String>,
) -> Result<Answer, Error> {
    log.model = Some(request.model().to_owned());
    log.stream = request.stream();
    let plan = match gateway.router.resolve(request.model()) {
        Ok(p) => p,
        Err(e) => return Err(failed(log, e)),
    };
    let max_output = request
        .max_completion_tokens()
        .or_else(|| request.max_tokens());
    if let Some(trace) = log.trace.as_deref_mut() {
        trace.max_tokens = max_output;
    }
    // An untraced request still passes on the client's (unsampled) trace context; a traced
    // one carries each attempt's, set by the router.
    request.set_traceparent(log.propagate);
    if let Err(e) = admit(
        gateway,
        &mut log,
        principal,
        &plan,
        request.model(),
        max_output,
        rate,
    )
    .await
    {
        return Err(failed(log, e));
    }
    let upstream_started = Instant::now();
    if let Dialect::Ingress(ingress, native) = dialect {
        let client_wants_usage = request.include_usage();
        let served = gateway
            .router
            .dispatch_planned(&plan, request, ingress.name(), native, attempts(&mut log))
            .await;
        return match served {
            Ok(served) => {
                *target = Some(served.target());
                match note_served(&mut log, served, upstream_started) {
                    Dispatched::Stream(stream) => {
                        Ok(stream_answer(log, stream, client_wants_usage))
                    }
                    Dispatched::Complete(answer) => complete_answer(log, answer.body),
                    Dispatched::Native(answer) => {
                        native_answer(log, answer, ingress, native.stream).await
                    }
                }
            }
            Err(e) => Err(failed(log, e)),
        };
    }
    if request.stream() {
        let client_wants_usage = request.include_usage();
        match gateway
            .router
            .chat_stream_planned(&plan, request, attempts(&mut log))
            .await
        {
            Ok(served) => {
                *target = Some(served.target());
                let stream = note_served(&mut log, served, upstream_started);
                Ok(stream_answer(log, stream, client_wants_usage))
            }
            Err(e) => Err(failed(log, e)),
        }
    } else {
        match gateway
            .router
            .chat_planned(&plan, request, attempts(&mut log))
            .await
        {
            Ok(served) => {
                *target = Some(served.target());
                let body = note_served(&mut log, served, upstream_started).body;
                complete_answer(log, body)
            }
            Err(e) => Err(failed(log, e)),
        }
    }
}

/// Where the router records the attempts of a traced request.
fn attempts(log: &mut RequestLog) -> Option<&mut llm_bridge_router::AttemptTrace> {
    log.trace.as_deref_mut().map(|t| &mut t.attempts)
}

/// The key's permissions, limits and budgets, checked against the name the client used and
/// the provider/model it resolves to; the admission goes on the log.
async fn admit(
    gateway: &Gateway,
    log: &mut RequestLog,
    principal: &Principal,
    plan: &Plan,
    model: &str,
    max_output: Option<u64>,
    rate: &mut Option<RateInfo>,
) -> Result<(), Error> {
    log.route = plan.route.clone();
    let prompt_estimate = log
        .request_body
        .as_ref()
        .map_or(0, |b| b.len() as u64)
        .div_ceil(4);
    log.prompt_estimate = prompt_estimate;
    let ids = plan.ids();
    let names = permitted_names(principal, model, &ids, plan.route.is_some());
    match gateway
        .auth
        .admit(principal, &names, prompt_estimate, max_output)
        .await
    {
        Ok(admission) => {
            *rate = Some(admission.rate()).filter(RateInfo::is_limited);
            log.admission = Some(admission);
            Ok(())
        }
        Err(rejection) => {
            *rate = rejection.rate;
            Err(*rejection.error)
        }
    }
}

/// The names a key may be allowed `asked` (resolved to target `ids`) under: the rule for
/// requests and for `/v1/models` alike. A direct model by the name used or by its
/// `provider/model`; a route by its alias, or when the key may use every one of its targets.
pub(crate) fn permitted_names<'a>(
    principal: &Principal,
    asked: &'a str,
    ids: &'a [String],
    route: bool,
) -> Vec<&'a str> {
    let mut names = vec![asked];
    if !route || ids.iter().all(|id| principal.allows(id)) {
        names.extend(ids.iter().map(String::as_str));
    }
    names
}

/// Runs one request that only targets speaking `operation` serve (embeddings): forwarded as
/// the client sent it, `model` excepted, with keys, limits, budgets, routes and the usage
/// record as for chat; `usage` reads the answer's token counts.
pub(crate) async fn forward(
    gateway: &Gateway,
    mut log: RequestLog,
    principal: &Principal,
    model: &str,
    operation: &'static str,
    native: &NativeRequest,
    usage: fn(&[u8]) -> Option<Usage>,
) -> Exchanged {
    let mut rate = None;
    let mut target = None;
    log.model = Some(model.to_owned());
    let result = async {
        let plan = match gateway.router.resolve(model) {
            Ok(p) => p,
            Err(e) => return Err(failed(log, e)),
        };
        if !plan.targets.iter().any(|t| t.serves(operation)) {
            let e = Error::invalid_request(format!("model '{model}' does not serve {operation}"))
                .with_param("model");
            return Err(failed(log, e));
        }
        if let Err(e) = admit(gateway, &mut log, principal, &plan, model, None, &mut rate).await {
            return Err(failed(log, e));
        }
        let upstream_started = Instant::now();
        let answer = match gateway
            .router
            .forward_planned(&plan, operation, native)
            .await
        {
            Ok(served) => {
                target = Some(served.target());
                note_served(&mut log, served, upstream_started)
            }
            Err(e) => return Err(failed(log, e)),
        };
        let upstream = log.upstream.unwrap_or_default();
        log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
        let whole = match collect(answer.body).await {
            Ok(whole) => whole,
            Err(e) => return Err(failed(log, e)),
        };
        log.answered = true;
        log.ttft = Some(log.started.elapsed());
        log.usage = usage(&whole);
        log.finish(Outcome::Ok);
        Ok(Answer::Native {
            content_type: answer.content_type,
            body: Box::new(NativeBody::complete(whole)),
            upstream,
        })
    }
    .await;
    Exchanged {
        result,
        rate,
        target,
    }
}

fn stream_answer(mut log: RequestLog, stream: ChunkStream, client_wants_usage: bool) -> Answer {
    let upstream = log.upstream.unwrap_or_default();
    log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
    Answer::Stream {
        stream: Box::new(MeteredStream::new(stream, client_wants_usage, log)),
        upstream,
    }
}

fn complete_answer(mut log: RequestLog, body: Bytes) -> Result<Answer, Error> {
    match completion_usage(&body) {
        Ok(usage) => {
            if let Some(trace) = log.trace.as_deref_mut() {
                trace.see_answer(&body);
                if trace.capture_content {
                    trace.answer = Some(body.clone());
                }
            }
            log.answered = true;
            // The whole answer is its first token's arrival.
            log.ttft = Some(log.started.elapsed());
            log.usage = usage;
            if usage.is_none() {
                log.response_body = Some(body.clone());
            }
            let upstream = log.upstream.unwrap_or_default();
            log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
            log.finish(Outcome::Ok);
            Ok(Answer::Complete { body, upstream })
        }
        Err(parse) => {
            let e = Error::new(
                ErrorKind::UpstreamBadResponse,
                format!("upstream answered with invalid JSON: {parse}"),
            );
            Err(failed(log, e))
        }
    }
}

type Pieces =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = llm_bridge_core::Result<Bytes>> + Send>>;

/// The most of a complete native answer that is read.
const MAX_NATIVE_BYTES: usize = 64 * 1024 * 1024;

/// A native answer: a stream is forwarded as it arrives (metered on the way); a complete
/// answer is read whole, its usage taken from it.
async fn native_answer(
    mut log: RequestLog,
    answer: NativeResponse,
    ingress: &dyn Ingress,
    stream: bool,
) -> Result<Answer, Error> {
    let upstream = log.upstream.unwrap_or_default();
    log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
    if stream && answer.content_type.starts_with("text/event-stream") {
        return Ok(Answer::Native {
            content_type: answer.content_type,
            body: Box::new(NativeBody::new(answer.body, ingress, log)),
            upstream,
        });
    }
    let whole = match collect(answer.body).await {
        Ok(whole) => whole,
        Err(e) => return Err(failed(log, e)),
    };
    if let Some(trace) = log.trace.as_deref_mut().filter(|t| t.capture_content) {
        trace.answer = Some(whole.clone());
    }
    log.answered = true;
    log.ttft = Some(log.started.elapsed());
    log.usage = ingress.native_usage(&whole);
    log.finish(Outcome::Ok);
    Ok(Answer::Native {
        content_type: answer.content_type,
        body: Box::new(NativeBody::complete(whole)),
        upstream,
    })
}

/// A complete native answer, read whole (up to [`MAX_NATIVE_BYTES`]).
async fn collect(mut body: Pieces) -> Result<Bytes, Error> {
    let mut whole = bytes::BytesMut::new();
    while let Some(piece) = body.next().await {
        let piece = piece?;
        if whole.len() + piece.len() > MAX_NATIVE_BYTES {
            return Err(Error::new(
                ErrorKind::UpstreamBadResponse,
                "the upstream's answer is larger than 64 MiB",
            ));
        }
        whole.extend_from_slice(&piece);
    }
    Ok(whole.freeze())
}

fn note_served<T>(log: &mut RequestLog, served: Served<T>, upstream_started: Instant) -> T {
    log.upstream = Some(upstream_started.elapsed());
    tracing::debug!(
        provider = %served.provider,
        model = %served.model,
        upstream_model = %served.upstream_model,
        upstream_ms = upstream_started.elapsed().as_secs_f64() * 1000.0,
        "upstream answered"
    );
    log.retries = served.retries;
    log.provider = Some(served.provider);
    log.provider_model = Some(served.model);
    log.upstream_model = Some(served.upstream_model);
    log.price = served.price;
    log.listed = served.listed;
    served.value
}

/// Finishes the log of a request that failed before its answer started.
pub(crate) fn failed(mut log: RequestLog, e: Error) -> Error {
    if log.provider.is_none() {
        log.provider = e.provider().map(Into::into);
    }
    log.fail(&e);
    log.finish(Outcome::Error);
    e
}
