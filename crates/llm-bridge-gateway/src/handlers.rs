//! The HTTP endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_auth::{Principal, RateInfo};
use llm_bridge_core::{ChatRequest, Error, ErrorKind};
use llm_bridge_usage::{GroupBy, UsageQuery, time};
use serde_json::json;

use crate::Gateway;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::exchange::{self, Answer};
use crate::header_names as names;
use crate::request_log::RequestLog;
use crate::sse::SseBody;

/// The token of an `Authorization`-style value: what follows `Bearer ` (any case), or the
/// whole value.
pub(crate) fn bearer_token(value: &str) -> &str {
    let v = value.trim();
    match v.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => v,
    }
}

/// The name of the key a response was made for, carried in the response's extensions: the
/// access line of a request served outside the exchange names its key from it, without
/// authenticating the key a second time.
#[derive(Clone)]
pub(crate) struct KeyName(pub(crate) Arc<str>);

/// `response`, marked as made for `principal`'s key.
pub(crate) fn for_key(
    principal: &Principal,
    mut response: Response<GatewayBody>,
) -> Response<GatewayBody> {
    response
        .extensions_mut()
        .insert(KeyName(principal.name.clone()));
    response
}

/// The access key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(bearer_token(v));
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The session a request names in `x-session-id` (see [`llm_bridge_core::ChatRequest::session`]).
pub(crate) fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: Arc<str>,
) -> Response<GatewayBody> {
    let log = RequestLog::new(gateway.telemetry.clone(), request_id, "http");
    let context = log.context.clone();
    context
        .scope(chat_completions_in(gateway, request, log))
        .await
}

async fn chat_completions_in(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    mut log: RequestLog,
) -> Response<GatewayBody> {
    let (parts, body) = request.into_parts();
    log.begin_trace(&parts.headers, || "POST /v1/chat/completions".to_owned());
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let chat = match read_limited(body, &parts.headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => {
            // Kept by reference, for a token estimate should the upstream report no usage.
            log.request_body = Some(bytes.clone());
            ChatRequest::from_bytes(bytes)
        }
        Err(e) => Err(e),
    };
    let mut chat = match chat {
        Ok(chat) => chat,
        Err(e) => return error_response(&exchange::failed(log, e)),
    };
    if let Some(session) = session_header(&parts.headers) {
        chat.set_session(session);
    }
    // The head's URI and header values share hyper's read buffer: kept across the exchange,
    // they made hyper take a second 8 KB buffer for its next read of every connection.
    drop(parts);
    let started = log.started;
    let exchanged = exchange::run(gateway, log, &principal, chat).await;
    let mut response = match exchanged.result {
        Ok(Answer::Complete { body, upstream }) => {
            let mut response = json_response(StatusCode::OK, body);
            server_timing(&mut response, started.elapsed(), upstream);
            response
        }
        Ok(Answer::Stream { stream, upstream }) => {
            let body = SseBody::new(*stream, gateway.ws_connections.subscribe_cut());
            let mut response = Response::new(GatewayBody::Sse(Box::new(body)));
            server_timing(&mut response, started.elapsed(), upstream);
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // Tells nginx-style proxies in front of us not to buffer the stream.
            h.insert(names::X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
            response
        }
        // Chat completions are the pivot: nothing is forwarded natively on this path.
        Ok(Answer::Native { .. }) => error_response(&Error::internal(
            "a native answer reached the chat completions path",
        )),
        Err(e) => error_response(&e),
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

/// The `x-ratelimit-*` headers of a key with rate limits.
pub(crate) fn rate_headers(response: &mut Response<GatewayBody>, rate: &RateInfo) {
    let h = response.headers_mut();
    for (name, value) in [
        (names::X_RATELIMIT_LIMIT_REQUESTS, rate.limit_requests),
        (
            names::X_RATELIMIT_REMAINING_REQUESTS,
            rate.remaining_requests,
        ),
        (names::X_RATELIMIT_LIMIT_TOKENS, rate.limit_tokens),
        (names::X_RATELIMIT_REMAINING_TOKENS, rate.remaining_tokens),
    ] {
        if let Some(v) = value {
            h.insert(name, HeaderValue::from(v));
        }
    }
}

/// `Server-Timing: gateway;dur=…, upstream;dur=…` (milliseconds): the gateway's own time and
/// the upstream's, up to the start of the answer.
pub(crate) fn server_timing(
    response: &mut Response<GatewayBody>,
    total: std::time::Duration,
    upstream: std::time::Duration,
) {
    let gateway = total.saturating_sub(upstream);
    // Integer arithmetic: float formatting costs more than the rest of this header.
    let ms = |d: std::time::Duration| {
        let us = d.as_micros();
        (us / 1000, us % 1000)
    };
    // Written by hand: `format!` cost more than the rest of this function (callgrind).
    let mut value = String::with_capacity(64);
    for (name, d) in [("gateway;dur=", gateway), (", upstream;dur=", upstream)] {
        let (whole, frac) = ms(d);
        value.push_str(name);
        push_decimal(&mut value, whole);
        value.push('.');
        for unit in [100, 10, 1] {
            value.push(char::from(b'0' + (frac / unit % 10) as u8));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(names::SERVER_TIMING, v);
    }
}

/// `value` in decimal (itoa: `write!` costs several times more on the hot path).
fn push_decimal(out: &mut String, value: u128) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// The models a key may use, as `/v1/models` lists them: a route is listed when the key may
/// use its alias or every one of its targets (as for a chat request).
pub(crate) fn models_for(gateway: &Gateway, principal: &Principal) -> Vec<serde_json::Value> {
    gateway
        .router
        .models()
        .into_iter()
        .filter(|m| {
            principal.allows(&m.id)
                || gateway.router.resolve(&m.id).is_ok_and(|plan| {
                    let ids = plan.ids();
                    crate::exchange::permitted_names(principal, &m.id, &ids, plan.route.is_some())
                        .iter()
                        .any(|name| principal.allows(name))
                })
        })
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": gateway.started_unix,
                "owned_by": m.owned_by,
                "kind": m.kind.as_str(),
            })
        })
        .collect()
}

/// `GET /v1/models`.
pub(crate) fn models(gateway: &Gateway, headers: &HeaderMap) -> Response<GatewayBody> {
    let principal: Principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let data = models_for(gateway, &principal);
    let answer = json_response(
        StatusCode::OK,
        Bytes::from(json!({"object": "list", "data": data}).to_string()),
    );
    for_key(&principal, answer)
}

/// `GET /v1/models/{id}`, as OpenAI answers it; the id's `/` may come literal or as `%2F`
/// (the OpenAI SDK sends the latter). Unknown models and models the key may not use are
/// both 404, so that a key learns nothing about models it cannot use.
pub(crate) fn model(gateway: &Gateway, headers: &HeaderMap, id: &str) -> Response<GatewayBody> {
    let principal: Principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
    let found = models_for(gateway, &principal)
        .into_iter()
        .find(|m| m["id"] == *id);
    let answer = match found {
        Some(m) => json_response(StatusCode::OK, Bytes::from(m.to_string())),
        None => error_response(
            &Error::new(
                ErrorKind::ModelNotFound,
                format!("the model '{id}' does not exist or this key may not use it"),
            )
            .with_param("model"),
        ),
    };
    for_key(&principal, answer)
}

/// `GET /healthz` and `GET /readyz`.
pub(crate) fn health(ready: bool) -> Response<GatewayBody> {
    if ready {
        json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(br#"{"status":"unavailable"}"#),
        )
    }
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /v1/usage?from=&to=&group_by=key|model|provider|day&key=`: a key sees its own usage,
/// an admin key everyone's.
pub(crate) async fn usage(
    gateway: &Gateway,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response<GatewayBody> {
    let principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let answer = usage_for(gateway, &principal, query).await;
    for_key(&principal, answer)
}

async fn usage_for(
    gateway: &Gateway,
    principal: &Principal,
    query: Option<&str>,
) -> Response<GatewayBody> {
    let Some(reader) = gateway.usage_reader.clone() else {
        return error_response(&Error::new(
            ErrorKind::InvalidRequest,
            "usage recording is disabled on this gateway (usage.enabled: false)",
        ));
    };
    let q = match usage_query(query, principal) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    match tokio::task::spawn_blocking(move || reader.query(&q)).await {
        Ok(Ok(report)) => json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&report).unwrap_or_default()),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "usage query failed");
            error_response(&Error::new(
                ErrorKind::Unavailable,
                "the usage database cannot be read right now",
            ))
        }
        Err(_) => error_response(&Error::internal("the usage query failed")),
    }
}

fn usage_query(query: Option<&str>, principal: &Principal) -> Result<UsageQuery, Error> {
    let now = time::now_ms();
    let mut q = UsageQuery {
        from_ms: now - 30 * llm_bridge_core::calendar::DAY_MS,
        to_ms: now + 1,
        group_by: GroupBy::None,
        key: None,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let bad = |m: String| Error::invalid_request(m).with_param(k.to_owned());
        match k {
            "from" => q.from_ms = time::parse_instant(&v, now).map_err(bad)?,
            "to" => q.to_ms = time::parse_instant(&v, now).map_err(bad)?,
            "group_by" => q.group_by = GroupBy::parse(&v).map_err(bad)?,
            "key" => q.key = Some(v),
            _ => return Err(bad(format!("unknown query parameter '{k}'"))),
        }
    }
    if !principal.admin {
        match &q.key {
            Some(k) if k.as_str() != &*principal.name => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "a key may only read its own usage; use an admin key for others",
                )
                .with_code("admin_key_required"));
            }
            _ => q.key = Some(principal.name.to_string()),
        }
    }
    Ok(q)
}

/// Decodes `%XX` escapes and `+` (a space, in a query) in a query value.
fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn server_timing_as_the_formatter_wrote_it() {
        for (total_us, upstream_us) in [(0, 0), (1_234, 1_000), (5_000_001, 7), (99, 120)] {
            let (total, upstream) = (
                Duration::from_micros(total_us),
                Duration::from_micros(upstream_us),
            );
            let mut response = Response::new(GatewayBody::empty());
            server_timing(&mut response, total, upstream);
            let g = total.saturating_sub(upstream).as_micros();
            let u = upstream.as_micros();
            let expected = format!(
                "gateway;dur={}.{:03}, upstream;dur={}.{:03}",
                g / 1000,
                g % 1000,
                u / 1000,
                u % 1000
            );
            assert_eq!(response.headers()["server-timing"], expected.as_str());
        }
    }
}
