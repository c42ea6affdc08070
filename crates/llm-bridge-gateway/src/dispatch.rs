//! Request dispatch and the headers every response carries.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_core::{Call, Endpoint, Error, ErrorKind};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::Gateway;
use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::handlers::{chat_completions, health, models, presented_key, usage};
use crate::ids::new_request_id;
use crate::log_context::LogContext;

/// Paths the gateway serves (for 404 versus 405).
const KNOWN: &[&str] = &[
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/models",
    "/models",
    "/v1/embeddings",
    "/embeddings",
    "/v1/usage",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/ws",
];

/// Handles one request.
pub(crate) async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let mut request = request;
    let request_id = request_id(request.headers().get("x-request-id"));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    // Gemini's endpoints: its key header or `?key=` stands for the access key.
    let endpoint = gateway
        .endpoint_at(&path)
        .filter(|_| method == Method::POST)
        .map(|(i, e)| (i.clone(), e));
    let google = request.headers().contains_key("x-goog-api-key")
        || request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    if endpoint.is_some() || gateway.models_at(&path, google).is_some() {
        google_key(&mut request);
    }
    let is_chat = method == Method::POST
        && matches!(path.as_str(), "/v1/chat/completions" | "/chat/completions");
    let ingress = gateway
        .ingress_at(&path)
        .filter(|_| method == Method::POST)
        .map(|(i, counting)| (i.clone(), counting));
    let is_embeddings =
        method == Method::POST && matches!(path.as_str(), "/v1/embeddings" | "/embeddings");
    let generating = endpoint
        .as_ref()
        .filter(|(_, e)| matches!(e.call, Call::Generate { .. } | Call::Embed { .. }));
    let mut response = if is_chat {
        // The chat path emits its own, richer access event.
        chat_completions(&gateway, request, request_id.clone()).await
    } else if is_embeddings {
        // So does the embeddings path.
        crate::embeddings::serve(&gateway, request, request_id.clone(), None).await
    } else if let Some((ingress, at)) = generating {
        // And a dialect's endpoints that answer (Gemini's, named by the path).
        if matches!(at.call, Call::Embed { .. }) {
            let dialect = Some((&**ingress, at));
            crate::embeddings::serve(&gateway, request, request_id.clone(), dialect).await
        } else {
            let (ingress, at) = (ingress.clone(), at.clone());
            crate::ingress::serve(&gateway, ingress, request, request_id.clone(), Some(at)).await
        }
    } else if let Some((ingress, false)) = ingress {
        // So does a dialect's main endpoint.
        crate::ingress::serve(&gateway, ingress, request, request_id.clone(), None).await
    } else {
        let context = LogContext::new(request_id.clone(), "http");
        let response = context
            .clone()
            .scope(route(
                &gateway,
                request,
                &method,
                &path,
                endpoint.as_ref(),
                google,
            ))
            .await;
        let quiet = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics")
            || method == Method::OPTIONS;
        let _entered = context.enter();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = response.status().as_u16();
        let key_name = response
            .extensions()
            .get::<crate::handlers::KeyName>()
            .map(|k| k.0.clone());
        if quiet {
            tracing::debug!(target: "llm_bridge::access", request_id = %request_id, transport = "http",
                method = %method, path = %path, status, latency_ms, key = key_name.as_deref(), "request finished");
        } else {
            tracing::info!(target: "llm_bridge::access", request_id = %request_id, transport = "http",
                method = %method, path = %path, status, latency_ms, key = key_name.as_deref(), "request finished");
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(crate::header_names::X_REQUEST_ID, v);
    }
    // Browser apps call the API from other origins with bearer keys (never cookies). The
    // operators' endpoints are not for other origins' pages to read.
    let operators_only =
        path == "/metrics" || path.starts_with("/admin") || path.starts_with("/console");
    if operators_only {
        return Ok(response);
    }
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

async fn route(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    method: &Method,
    path: &str,
    endpoint: Option<&(Arc<dyn llm_bridge_core::Ingress>, Endpoint)>,
    google: bool,
) -> Response<GatewayBody> {
    if method == Method::POST {
        if let Some((ingress, true)) = gateway.ingress_at(path) {
            return crate::ingress::count_tokens(gateway, &**ingress, request, None).await;
        }
        if let Some((ingress, at)) = endpoint.filter(|(_, e)| e.call == Call::CountTokens) {
            return crate::ingress::count_tokens(gateway, &**ingress, request, Some(at)).await;
        }
    }
    if method == Method::GET {
        if let Some((ingress, one)) = gateway.models_at(path, google) {
            return crate::ingress::models(gateway, &**ingress, request.headers(), one);
        }
    }
    // A dialect's kept answers: `<path>/{id}` and `<path>/{id}/input_items`.
    if let Some((ingress, rest)) = gateway.kept_at(path) {
        return crate::ingress::kept(gateway, &**ingress, method, rest, request.headers()).await;
    }
    match (method, path) {
        (&Method::GET, "/v1/models" | "/models") => models(gateway, request.headers()),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            crate::handlers::model(gateway, request.headers(), &p["/v1/models/".len()..])
        }
        (&Method::GET, "/v1/usage") => {
            usage(gateway, request.headers(), request.uri().query()).await
        }
        (&Method::GET, "/v1/ws" | "/ws") => crate::ws::upgrade(gateway, request),
        (_, p) if p == "/console" || p.starts_with("/console/") => {
            if !gateway.console.config.enabled {
                let mut r = error_response(&Error::new(
                    ErrorKind::InvalidRequest,
                    "the console is turned off on this gateway (console.enabled: false)",
                ));
                *r.status_mut() = StatusCode::NOT_FOUND;
                return r;
            }
            let client = request
                .extensions()
                .get::<crate::server::ClientAddr>()
                .map(|a| a.0);
            let (parts, body) = request.into_parts();
            crate::console::serve(gateway, &parts.method, p, &parts.headers, body, client).await
        }
        (_, p) if p.starts_with("/admin/") => {
            let admin = match crate::admin::authorize(gateway, method, request.headers()) {
                Ok(admin) => admin,
                Err(e) => return error_response(&e),
            };
            let mut r = if let Some(r) =
                crate::ops::serve(gateway, method, p, request.uri().query()).await
            {
                r
            } else if p == "/admin/keys" || p.starts_with("/admin/keys/") {
                let (parts, body) = request.into_parts();
                crate::admin::keys(gateway, &parts.method, p, &parts.headers, body).await
            } else {
                let mut r = error_response(&Error::new(
                    ErrorKind::InvalidRequest,
                    format!("unknown endpoint: {method} {path}"),
                ));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            };
            if let Some(name) = admin {
                r.extensions_mut().insert(crate::handlers::KeyName(name));
            }
            r
        }
        (&Method::GET, "/healthz") => health(true),
        (&Method::GET, "/readyz") => health(gateway.is_ready()),
        (&Method::GET, "/metrics") if gateway.metrics_config.enabled => {
            metrics(gateway, request.headers())
        }
        (&Method::OPTIONS, _) => {
            let mut r = Response::new(GatewayBody::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        // A WebSocket asked of a dialect's endpoint (Codex tries `GET /v1/responses` with
        // `OpenAI-Beta: responses_websockets=…` first): served when the dialect has a
        // WebSocket mode; else 426 tells the client at once to use HTTP, where any other
        // answer costs it retries.
        (&Method::GET, p)
            if gateway.ingress_at(p).is_some()
                && request
                    .headers()
                    .get(http::header::UPGRADE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("websocket")) =>
        {
            let ingress = gateway.ingress_at(p).filter(|(_, count)| !count);
            if let Some((ingress, _)) = ingress.filter(|(i, _)| i.socket().is_some()) {
                return crate::socket::upgrade(gateway, ingress.clone(), request);
            }
            let mut r = error_response(&Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{path} is served over HTTP only: POST it (server-sent events for streams)"
                ),
            ));
            *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
            r
        }
        (_, p)
            if (KNOWN.contains(&p) && (p != "/metrics" || gateway.metrics_config.enabled))
                || gateway.ingress_at(p).is_some() =>
        {
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
    }
}

/// Google's clients send the key in `x-goog-api-key` or as `?key=`: either becomes the
/// request's `x-api-key` (unless it names a key already), so that authentication reads it
/// where it reads every other key. The query is never logged (access events log the path).
fn google_key(request: &mut Request<Incoming>) {
    let headers = request.headers();
    if headers.contains_key(http::header::AUTHORIZATION) || headers.contains_key("x-api-key") {
        return;
    }
    let key = headers.get("x-goog-api-key").cloned().or_else(|| {
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .map(|k| percent_encoding::percent_decode_str(k).decode_utf8_lossy())
            .and_then(|k| HeaderValue::from_str(&k).ok())
    });
    if let Some(mut key) = key {
        key.set_sensitive(true);
        request.headers_mut().insert("x-api-key", key);
    }
}

/// `GET /metrics`, behind `metrics.token` when one is configured.
fn metrics(gateway: &Gateway, headers: &http::HeaderMap) -> Response<GatewayBody> {
    if let Some(token) = &gateway.metrics_config.token {
        let presented = presented_key(headers).unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
            return error_response(&Error::new(
                ErrorKind::Authentication,
                "/metrics requires the metrics token: 'Authorization: Bearer <metrics.token>'",
            ));
        }
    }
    // OpenMetrics only for scrapers that ask for it; the classic text format otherwise,
    // each with its own content type so that strict parsers read the counters right.
    let openmetrics = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = gateway.telemetry.metrics.render(
        gateway.telemetry.usage.as_ref(),
        gateway.auth.shared_limits_unavailable(),
    );
    let (text, content_type) = if openmetrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            crate::metrics::to_prometheus_text(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = Response::new(GatewayBody::full(Bytes::from(text)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
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
