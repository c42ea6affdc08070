//! Dialects mounted in front (`POST /v1/messages` for Anthropic's Messages API, …): the
//! request is translated into the pivot, then served exactly as a chat completion (keys,
//! limits, budgets, routes, usage record, access event), and the answer, stream or error is
//! rendered back in the dialect.

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_core::{Error, Ingress, NativeRequest};
use llm_bridge_usage::count::{Encoding, prompt_tokens_of_body};
use tracing::Instrument;

use crate::Gateway;
use crate::access::RequestLog;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::exchange::{self, Answer, Dialect};
use crate::http::{json_response, presented_key, rate_headers, server_timing, session_header};
use crate::sse::SseBody;

/// The error answer of a dialect: its own body, with the headers of ours (`Retry-After`,
/// `WWW-Authenticate`).
pub fn ingress_error(ingress: &dyn Ingress, e: &Error) -> Response<GatewayBody> {
    let mut response = error_response(e);
    let (status, body) = ingress.error(e);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(response.status());
    *response.body_mut() = GatewayBody::full(body);
    response
}

/// `POST <ingress.path()>`.
pub async fn serve(
    gateway: &Arc<Gateway>,
    ingress: Arc<dyn Ingress>,
    request: Request<Incoming>,
    request_id: Arc<str>,
) -> Response<GatewayBody> {
    let log = RequestLog::new(gateway.telemetry.clone(), request_id, "http");
    let span = log.span.clone();
    serve_in(gateway, &*ingress, request, log)
        .instrument(span)
        .await
}

async fn serve_in(
    gateway: &Arc<Gateway>,
    ingress: &dyn Ingress,
    request: Request<Incoming>,
    mut log: RequestLog,
) -> Response<GatewayBody> {
    let (parts, body) = request.into_parts();
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let bytes = match read_limited(body, &parts.headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    log.request_body = Some(bytes.clone());
    let translated = match ingress.request(&bytes) {
        Ok(t) => t,
        Err(e) => return ingress_error(ingress, &exchange::failed(log, e)),
    };
    if !translated.dropped.is_empty() {
        tracing::debug!(
            dialect = ingress.name(),
            dropped = ?translated.dropped,
            "left out what a translated target cannot honour"
        );
    }
    let mut pivot = translated.request;
    if let Some(session) = session_header(&parts.headers) {
        pivot.set_session(session);
    }
    if pivot.stream() {
        // The dialect's own stream carries usage at its end: let the usage chunk through.
        pivot.set_include_usage(true);
    }
    let model = pivot.model().to_owned();
    let native = NativeRequest {
        operation: "main",
        body: bytes,
        headers: forwarded_headers(ingress, &parts.headers),
        stream: pivot.stream(),
        session: pivot.session(),
    };
    let started = log.started;
    let dialect = Dialect::Ingress(ingress, &native);
    let exchanged = exchange::run_as(gateway, log, &principal, pivot, dialect).await;
    let mut response = match exchanged.result {
        Ok(Answer::Complete { body, upstream }) => {
            match ingress.response(&body, &model, &native.body) {
                Ok(rendered) => {
                    let mut response = json_response(StatusCode::OK, rendered);
                    server_timing(&mut response, started.elapsed(), upstream);
                    response
                }
                Err(e) => ingress_error(ingress, &e),
            }
        }
        Ok(Answer::Stream { stream, upstream }) => {
            let body = SseBody::new(*stream, gateway.ws_connections.subscribe_cut())
                .rendered_by(ingress.stream(&model, &native.body));
            let mut response = Response::new(GatewayBody::Sse(Box::new(body)));
            server_timing(&mut response, started.elapsed(), upstream);
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
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
        response.headers_mut().insert("x-llm-bridge-target", target);
    }
    response
}

/// `POST <ingress.count_tokens_path()>`: the prompt's tokens, counted by the gateway's
/// tokenizer and marked as an estimate (`x-llm-bridge-estimated: true`).
pub async fn count_tokens(
    gateway: &Gateway,
    ingress: &dyn Ingress,
    request: Request<Incoming>,
) -> Response<GatewayBody> {
    let (parts, body) = request.into_parts();
    if let Err(e) = gateway.auth.authenticate(presented_key(&parts.headers)) {
        return ingress_error(ingress, &e);
    }
    let bytes = match read_limited(body, &parts.headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => return ingress_error(ingress, &e),
    };
    let mut pivot = match ingress.request(&bytes) {
        Ok(t) => t.request,
        Err(e) => return ingress_error(ingress, &e),
    };
    if let Some(session) = session_header(&parts.headers) {
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
            operation: "count_tokens",
            body: bytes,
            headers: forwarded_headers(ingress, &parts.headers),
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
