//! The HTTP endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_auth::Principal;
use llm_bridge_core::{ChatRequest, Error};
use serde_json::json;

use crate::Gateway;
use crate::access::RequestLog;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::exchange::{self, Answer};
use crate::sse::SseBody;

/// The access key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        return Some(match v.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
            _ => v,
        });
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: Arc<str>,
) -> Response<GatewayBody> {
    let mut log = RequestLog::new(request_id, "http");
    let (parts, body) = request.into_parts();
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let chat = match read_request(gateway, body, &parts.headers).await {
        Ok(chat) => chat,
        Err(e) => return error_response(&exchange::failed(log, e)),
    };
    match exchange::run(gateway, log, chat).await {
        Ok(Answer::Complete { body, .. }) => json_response(StatusCode::OK, body),
        Ok(Answer::Stream(stream)) => {
            let mut response = Response::new(GatewayBody::Sse(Box::new(SseBody::new(*stream))));
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // Tells nginx-style proxies in front of us not to buffer the stream.
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            response
        }
        Err(e) => error_response(&e),
    }
}

async fn read_request(
    gateway: &Gateway,
    body: Incoming,
    headers: &HeaderMap,
) -> Result<ChatRequest, Error> {
    let bytes = read_limited(body, headers, gateway.config.max_body_bytes).await?;
    ChatRequest::from_slice(&bytes)
}

/// `GET /v1/models`.
pub fn models(gateway: &Gateway, headers: &HeaderMap) -> Response<GatewayBody> {
    let _principal: Principal = match gateway.auth.authenticate(presented_key(headers)) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let data: Vec<_> = gateway
        .router
        .models()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": gateway.started_unix,
                "owned_by": m.owned_by,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        Bytes::from(json!({"object": "list", "data": data}).to_string()),
    )
}

/// `GET /healthz` and `GET /readyz`.
pub fn health(ready: bool) -> Response<GatewayBody> {
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
pub fn json_response(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
