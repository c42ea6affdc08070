//! Dialects mounted in front (`POST /v1/messages` for Anthropic's Messages API, …): the
//! request is translated into the pivot, then served exactly as a chat completion (keys,
//! limits, budgets, routes, usage record, access event), and the answer, stream or error is
//! rendered back in the dialect.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_auth::Principal;
use llm_bridge_core::{Endpoint, Error, ErrorKind, Ingress, IngressState, NativeRequest};
use llm_bridge_usage::count::{Encoding, prompt_tokens_of_body};
use llm_bridge_usage::{ResponseStore, StoredResponse};

use crate::Gateway;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::exchange::{self, Answer, Dialect};
use crate::handlers::{
    for_key, json_response, presented_key, rate_headers, server_timing, session_header,
};
use crate::header_names as names;
use crate::request_log::RequestLog;
use crate::sse::SseBody;

/// The error answer of a dialect: its own body, with the headers of ours (`Retry-After`,
/// `WWW-Authenticate`).
pub(crate) fn ingress_error(ingress: &dyn Ingress, e: &Error) -> Response<GatewayBody> {
    let mut response = error_response(e);
    let (status, body) = ingress.error(e);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(response.status());
    *response.body_mut() = GatewayBody::full(body);
    response
}

/// `POST <ingress.path()>`, or a generating endpoint of a dialect whose paths name the model
/// (`at`: Gemini's `…/models/{model}:generateContent`).
pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    ingress: Arc<dyn Ingress>,
    request: Request<Incoming>,
    request_id: Arc<str>,
    at: Option<Endpoint>,
) -> Response<GatewayBody> {
    let log = RequestLog::new(gateway.telemetry.clone(), request_id, "http");
    let context = log.context.clone();
    context
        .scope(serve_in(gateway, &ingress, request, log, at.as_ref()))
        .await
}

/// The dialect's translation of a request, to its endpoint when its path names one.
fn translate(
    ingress: &dyn Ingress,
    body: &[u8],
    at: Option<&Endpoint>,
) -> Result<llm_bridge_core::IngressRequest, Error> {
    match at {
        Some(endpoint) => ingress.request_at(body, endpoint),
        None => ingress.request(body),
    }
}

async fn serve_in(
    gateway: &Arc<Gateway>,
    shared: &Arc<dyn Ingress>,
    request: Request<Incoming>,
    mut log: RequestLog,
    at: Option<&Endpoint>,
) -> Response<GatewayBody> {
    let ingress = &**shared;
    let (parts, body) = request.into_parts();
    log.begin_trace(&parts.headers, || format!("POST {}", ingress.path()));
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let bytes = match read_limited(body, &parts.headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    let asked = Asked::of(ingress, &parts.headers);
    // The head's URI and header values share hyper's read buffer: dropped before the
    // exchange, hyper reads into that buffer again instead of taking a second 8 KB one
    // (see `handlers::chat_completions_in`).
    drop(parts);
    serve_read(gateway, shared, asked, &principal, bytes, log, at).await
}

/// One turn of a dialect's WebSocket: `body` as if POSTed with the upgrade's `headers`
/// (authenticated again, so that a key revoked meanwhile stops working).
pub(crate) async fn serve_turn(
    gateway: &Arc<Gateway>,
    shared: &Arc<dyn Ingress>,
    headers: &http::HeaderMap,
    body: Bytes,
    mut log: RequestLog,
) -> Response<GatewayBody> {
    let ingress = &**shared;
    log.begin_trace(headers, || format!("WS {}", ingress.path()));
    let principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let asked = Asked::of(ingress, headers);
    serve_read(gateway, shared, asked, &principal, body, log, None).await
}

/// What a request's headers ask of its exchange, copied out of them.
struct Asked {
    /// `x-session-id`.
    session: Option<String>,
    /// The headers the dialect forwards upstream.
    forwarded: Vec<(&'static str, String)>,
}

impl Asked {
    fn of(ingress: &dyn Ingress, headers: &http::HeaderMap) -> Self {
        Self {
            session: session_header(headers).map(str::to_owned),
            forwarded: forwarded_headers(ingress, headers),
        }
    }
}

/// A request whose key is known and whose body is read.
async fn serve_read(
    gateway: &Arc<Gateway>,
    shared: &Arc<dyn Ingress>,
    asked: Asked,
    principal: &Principal,
    bytes: Bytes,
    mut log: RequestLog,
    at: Option<&Endpoint>,
) -> Response<GatewayBody> {
    let ingress = &**shared;
    log.request_body = Some(bytes.clone());
    let mut translated = match translate(ingress, &bytes, at) {
        Ok(t) => t,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    // A dialect that keeps answers: continue an earlier one, and keep this one.
    let kept = ingress.state().zip(gateway.responses.clone());
    let mut bytes = bytes;
    if let Some((state, store)) = &kept {
        if let Some(earlier_id) = state.continues(&bytes) {
            match continued(
                gateway,
                ingress,
                *state,
                store,
                &earlier_id,
                principal,
                &bytes,
            )
            .await
            {
                Ok(Some(expanded)) => {
                    translated = match ingress.request(&expanded) {
                        Ok(t) => t,
                        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
                    };
                    bytes = expanded;
                }
                // Not kept here: a target that speaks the dialect may know it.
                Ok(None) => {}
                Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
            }
        }
    }
    let keeper = kept
        .filter(|(state, _)| state.keeps(&bytes))
        .map(|(state, store)| Keeper {
            store,
            key: principal.name.to_string(),
            input: state.input_items(&bytes),
        });
    if !translated.dropped.is_empty() {
        tracing::debug!(
            dialect = ingress.name(),
            dropped = ?translated.dropped,
            "left out what a translated target cannot honour"
        );
    }
    let mut pivot = translated.request;
    // Provider state the client carried back sealed goes back where it was.
    if let Some(sealer) = &gateway.sealer {
        if let Err(e) = sealer.unseal_request(&mut pivot) {
            return ingress_error(ingress, &exchange::failed(log, e));
        }
    }
    let sealer = gateway
        .sealer
        .clone()
        .filter(|_| ingress.wants_sealed_state(&bytes));
    if let Some(session) = &asked.session {
        pivot.set_session(session);
    }
    if pivot.stream() {
        // The dialect's own stream carries usage at its end: let the usage chunk through.
        pivot.set_include_usage(true);
    }
    let model = pivot.model().to_owned();
    let native = NativeRequest {
        operation: at.map_or("main", |e| e.native),
        body: bytes,
        headers: asked.forwarded,
        stream: pivot.stream(),
        session: pivot.session(),
    };
    let started = log.started;
    let dialect = Dialect::Ingress(ingress, &native);
    let exchanged = exchange::run_as(gateway, log, principal, pivot, dialect).await;
    let mut response = match exchanged.result {
        Ok(Answer::Complete { body, upstream }) => {
            let body = match &sealer {
                Some(sealer) => crate::seal::seal_answer(sealer, &body).unwrap_or(body),
                None => body,
            };
            match ingress.response(&body, &model, &native.body) {
                Ok(rendered) => {
                    if let (Some(keeper), Some(state)) = (keeper, ingress.state()) {
                        // Kept before it is answered: the client may continue it at once.
                        if let Some(id) = state.answer_id(&rendered) {
                            let answer = String::from_utf8_lossy(&rendered).into_owned();
                            if keeper.store.put_blocks() {
                                let keep = move || keeper.keep(id, answer);
                                let _ = tokio::task::spawn_blocking(keep).await;
                            } else {
                                keeper.keep(id, answer);
                            }
                        }
                    }
                    let mut response = json_response(StatusCode::OK, rendered);
                    server_timing(&mut response, started.elapsed(), upstream);
                    response
                }
                Err(e) => ingress_error(ingress, &e),
            }
        }
        Ok(Answer::Stream { stream, upstream }) => {
            let mut body = SseBody::new(*stream, gateway.ws_connections.subscribe_cut())
                .rendered_by(ingress.stream(&model, &native.body));
            if let Some(sealer) = sealer {
                body = body.sealing(sealer);
            }
            if let Some(keeper) = keeper {
                let shared = shared.clone();
                body = body.then(Box::new(move |answer: Bytes| {
                    if let Some(id) = shared.state().and_then(|s| s.answer_id(&answer)) {
                        // At the end of the stream, before its last event reaches the client
                        // (who may continue the answer at once): a store write that may block
                        // (PostgreSQL waits on its own runtime), so the async worker hands its
                        // other tasks over meanwhile.
                        let answer = String::from_utf8_lossy(&answer).into_owned();
                        if keeper.store.put_blocks() {
                            blocking(move || keeper.keep(id, answer));
                        } else {
                            keeper.keep(id, answer);
                        }
                    }
                }));
            }
            let mut response = Response::new(GatewayBody::Sse(Box::new(body)));
            server_timing(&mut response, started.elapsed(), upstream);
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(names::X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
            response
        }
        Ok(Answer::Native {
            content_type,
            body,
            upstream,
        }) => {
            let body = body.cut_by(gateway.ws_connections.subscribe_cut());
            let mut response = Response::new(GatewayBody::Native(Box::new(body)));
            server_timing(&mut response, started.elapsed(), upstream);
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(CONTENT_TYPE, v);
            }
            response
        }
        Err(e) => ingress_error(ingress, &e),
    };
    if let Some(rate) = exchanged.rate {
        rate_headers(&mut response, &rate);
    }
    if let Some(target) = exchanged
        .target
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        response
            .headers_mut()
            .insert(names::X_LLM_BRIDGE_TARGET, target);
    }
    response
}

/// `POST <ingress.count_tokens_path()>`: the prompt's tokens, counted by the gateway's
/// tokenizer and marked as an estimate (`x-llm-bridge-estimated: true`).
pub(crate) async fn count_tokens(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    request: Request<Incoming>,
    at: Option<&Endpoint>,
) -> Response<GatewayBody> {
    let (parts, body) = request.into_parts();
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &e),
    };
    let answer = count_tokens_read(gateway, ingress, &parts.headers, body, at).await;
    for_key(&principal, answer)
}

async fn count_tokens_read(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    headers: &http::HeaderMap,
    body: Incoming,
    at: Option<&Endpoint>,
) -> Response<GatewayBody> {
    let bytes = match read_limited(body, headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => return ingress_error(ingress, &e),
    };
    let mut pivot = match translate(ingress, &bytes, at) {
        Ok(t) => t.request,
        Err(e) => return ingress_error(ingress, &e),
    };
    if let Some(session) = session_header(headers) {
        pivot.set_session(session);
    }
    let plan = match gateway.router.resolve(pivot.model()) {
        Ok(plan) => plan,
        Err(e) => return ingress_error(ingress, &e),
    };
    // A target that speaks the dialect counts for itself.
    if let Some(target) = plan
        .targets
        .iter()
        .find(|t| t.provider.speaks(ingress.name()))
    {
        let native = NativeRequest {
            operation: at.map_or("count_tokens", |e| e.native),
            body: bytes,
            headers: forwarded_headers(ingress, headers),
            stream: false,
            session: pivot.session(),
        };
        return match target.provider.forward(&target.model, native).await {
            Ok(answer) => {
                let mut whole = Vec::new();
                let mut body = answer.body;
                while let Some(piece) = body.next().await {
                    match piece {
                        Ok(piece) => whole.extend_from_slice(&piece),
                        Err(e) => return ingress_error(ingress, &e),
                    }
                }
                json_response(StatusCode::OK, whole.into())
            }
            Err(e) => {
                let e = e.scrubbed(|m| target.provider.redact(m));
                ingress_error(ingress, &e)
            }
        };
    }
    // Counting is CPU work (and may load a vocabulary): off the async threads.
    let pivot = pivot.to_bytes();
    let counted =
        tokio::task::spawn_blocking(move || prompt_tokens_of_body(Encoding::for_model(""), &pivot))
            .await;
    let Ok(tokens) = counted else {
        return ingress_error(ingress, &Error::internal("counting tokens failed"));
    };
    let mut response = json_response(StatusCode::OK, ingress.count_tokens_answer(tokens));
    response
        .headers_mut()
        .insert("x-llm-bridge-estimated", HeaderValue::from_static("true"));
    response
}

/// `GET <ingress.models_path()>[/{id}]`: the models the key may use, in the dialect's shape
/// (404 in it for a model the key may not use).
pub(crate) fn models(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    headers: &http::HeaderMap,
    one: Option<&str>,
) -> Response<GatewayBody> {
    let principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &e),
    };
    let one = one.map(|id| percent_encoding::percent_decode_str(id).decode_utf8_lossy());
    let models: Vec<(String, llm_bridge_core::ModelKind)> =
        crate::handlers::models_for(gateway, &principal)
            .into_iter()
            .filter_map(|m| {
                let id = m["id"].as_str()?.to_owned();
                let kind = if m["kind"] == "embedding" {
                    llm_bridge_core::ModelKind::Embedding
                } else {
                    llm_bridge_core::ModelKind::Chat
                };
                Some((id, kind))
            })
            .filter(|(id, _)| one.as_deref().is_none_or(|want| want == id))
            .collect();
    if let (Some(id), true) = (&one, models.is_empty()) {
        let e = Error::new(
            ErrorKind::ModelNotFound,
            format!("the model '{id}' does not exist or this key may not use it"),
        );
        return for_key(&principal, ingress_error(ingress, &e));
    }
    let answer = json_response(
        StatusCode::OK,
        ingress.models_answer(&models, one.is_some()),
    );
    for_key(&principal, answer)
}

/// The client's headers that the dialect forwards upstream.
fn forwarded_headers(
    ingress: &dyn Ingress,
    headers: &http::HeaderMap,
) -> Vec<(&'static str, String)> {
    ingress
        .forwarded_headers()
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((*name, value.to_owned()))
        })
        .collect()
}

/// Where and whose an answer is kept.
struct Keeper {
    store: Arc<dyn ResponseStore>,
    key: String,
    input: String,
}

/// Runs blocking work on an async worker: on a multi-threaded runtime its other tasks move to
/// other workers meanwhile (`block_in_place`); elsewhere (a single-threaded test runtime) it
/// just runs.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

impl Keeper {
    fn keep(self, id: String, response: String) {
        let record = StoredResponse {
            id,
            created_ms: llm_bridge_usage::time::now_ms(),
            key: self.key,
            input: self.input,
            response,
        };
        if let Err(e) = self.store.put(record) {
            tracing::error!(error = %e, "could not keep the answer (store)");
        }
    }
}

/// The request continuing the kept answer `earlier_id`, expanded with it; `None` when it is
/// not kept here (or not this key's) but a target that speaks the dialect may know it; an
/// error when no target could.
async fn continued(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    state: &dyn IngressState,
    store: &Arc<dyn ResponseStore>,
    earlier_id: &str,
    principal: &Principal,
    body: &[u8],
) -> Result<Option<Bytes>, Error> {
    if let Some(earlier) = kept_answer(store, earlier_id, principal).await? {
        return state
            .expand(body, &earlier.input, &earlier.response)
            .map(Some);
    }
    let model = ingress
        .request(body)
        .map(|t| t.request.model().to_owned())?;
    let native = gateway.router.resolve(&model).is_ok_and(|plan| {
        plan.targets
            .iter()
            .any(|t| t.provider.speaks(ingress.name()))
    });
    if native {
        return Ok(None);
    }
    Err(Error::invalid_request(format!(
        "Previous response with id '{earlier_id}' not found."
    ))
    .with_param("previous_response_id"))
}

/// The kept answer with this id, if this key (or an admin) may read it.
async fn kept_answer(
    store: &Arc<dyn ResponseStore>,
    id: &str,
    principal: &Principal,
) -> Result<Option<StoredResponse>, Error> {
    let (store, id) = (store.clone(), id.to_owned());
    let found =
        tokio::task::spawn_blocking(move || store.get(&id, llm_bridge_usage::time::now_ms()))
            .await
            .map_err(|_| Error::internal("reading the kept answers failed"))?
            .map_err(|e| {
                tracing::error!(error = %e, "kept answers cannot be read");
                Error::new(
                    ErrorKind::Unavailable,
                    "kept answers cannot be read right now",
                )
            })?;
    Ok(found.filter(|r| principal.admin || r.key == *principal.name))
}

/// `GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`,
/// `DELETE /v1/responses/{id}`: a kept answer, read or forgotten.
pub(crate) async fn kept(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    method: &http::Method,
    rest: &str,
    headers: &http::HeaderMap,
) -> Response<GatewayBody> {
    let (Some(state), Some(store)) = (ingress.state(), gateway.responses.as_ref()) else {
        return ingress_error(ingress, &Error::new(ErrorKind::NotFound, "not found"));
    };
    let principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &e),
    };
    let answer = kept_for(ingress, state, store, method, rest, &principal).await;
    for_key(&principal, answer)
}

async fn kept_for(
    ingress: &dyn Ingress,
    state: &dyn IngressState,
    store: &Arc<dyn ResponseStore>,
    method: &http::Method,
    rest: &str,
    principal: &Principal,
) -> Response<GatewayBody> {
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let found = match kept_answer(store, id, principal).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return ingress_error(
                ingress,
                &Error::new(
                    ErrorKind::NotFound,
                    format!("Response with id '{id}' not found."),
                ),
            );
        }
        Err(e) => return ingress_error(ingress, &e),
    };
    match (method, items) {
        (&http::Method::GET, false) => json_response(StatusCode::OK, found.response.into()),
        (&http::Method::GET, true) => {
            json_response(StatusCode::OK, state.input_items_page(&found.input))
        }
        (&http::Method::DELETE, false) => {
            let (store, id) = (store.clone(), id.to_owned());
            match tokio::task::spawn_blocking(move || store.delete(&id)).await {
                Ok(Ok(_)) => json_response(StatusCode::OK, state.deleted(&found.id)),
                _ => ingress_error(
                    ingress,
                    &Error::new(
                        ErrorKind::Unavailable,
                        "kept answers cannot be changed right now",
                    ),
                ),
            }
        }
        _ => {
            let mut r = ingress_error(
                ingress,
                &Error::invalid_request(format!("method {method} is not allowed here")),
            );
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        }
    }
}
