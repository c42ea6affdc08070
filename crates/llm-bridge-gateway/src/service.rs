//! Request dispatch and the headers every response carries.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_core::{Error, ErrorKind};

use crate::Gateway;
use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::http::{chat_completions, health, models};

/// Handles one request.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let request_id = request_id(request.headers().get("x-request-id"));
    let method = request.method().clone();
    let path = request.uri().path();
    let mut response = match (&method, path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            chat_completions(&gateway, request, request_id.clone()).await
        }
        (&Method::GET, "/v1/models" | "/models") => models(&gateway, request.headers()),
        (&Method::GET, "/healthz") => health(true),
        (&Method::GET, "/readyz") => health(gateway.is_ready()),
        (&Method::OPTIONS, _) => {
            let mut r = Response::new(GatewayBody::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (
            _,
            "/v1/chat/completions"
            | "/chat/completions"
            | "/v1/models"
            | "/models"
            | "/healthz"
            | "/readyz",
        ) => {
            let mut r = error_response(&Error::new(
                ErrorKind::InvalidRequest,
                format!("method {method} is not allowed on {path}"),
            ));
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        }
        _ => {
            let mut r = error_response(&Error::new(
                ErrorKind::InvalidRequest,
                format!("unknown endpoint: {method} {path}"),
            ));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    // Browser apps call the API from other origins with bearer keys (never cookies).
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    if method == Method::OPTIONS {
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("authorization, content-type, x-api-key, x-request-id"),
        );
        headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    }
    Ok(response)
}

/// The client's `x-request-id` when it is reasonable, else a new one.
fn request_id(client: Option<&HeaderValue>) -> Arc<str> {
    if let Some(id) = client.and_then(|v| v.to_str().ok()) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()) {
            return id.into();
        }
    }
    new_request_id().into()
}

/// `req_` + a random per-process prefix + a counter: unique across restarts, no syscall.
pub fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap_or_default();
        u64::from_le_bytes(b) & 0xffff_ffff_ffff
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{prefix:012x}{n:08x}")
}
