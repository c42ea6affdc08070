//! The WebSocket handshake, shared by `/v1/ws` and the dialects' sockets (`socket.rs`).

use std::sync::Arc;

use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use llm_bridge_core::{Error, ErrorKind};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::Conn;
use crate::Gateway;
use crate::body::GatewayBody;
use crate::errors::error_response;

/// Why an upgrade request to `path` cannot become a WebSocket, if it cannot: not an upgrade
/// (426), another protocol version, or the gateway shutting down.
pub(crate) fn refuse_upgrade(
    gateway: &Gateway,
    headers: &http::HeaderMap,
    path: &str,
) -> Option<Response<GatewayBody>> {
    let wants_upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && headers
            .get(CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            });
    if !wants_upgrade || !headers.contains_key(SEC_WEBSOCKET_KEY) {
        let mut r = error_response(&Error::invalid_request(format!(
            "{path} is a WebSocket endpoint: connect with a WebSocket client"
        )));
        *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
        r.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Some(r);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut r = error_response(&Error::invalid_request(
            "unsupported WebSocket version: 13 is required",
        ));
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Some(r);
    }
    if gateway.is_shutting_down() {
        return Some(error_response(&Error::new(
            ErrorKind::Unavailable,
            "the gateway is shutting down",
        )));
    }
    None
}

/// Switches protocols (the request passed [`refuse_upgrade`]) and runs `serve` on the
/// WebSocket in the background, counted among the connections that shutdown waits for.
pub(crate) fn accept<F, Fut>(
    gateway: &Arc<Gateway>,
    request: &mut Request<Incoming>,
    serve: F,
) -> Response<GatewayBody>
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accept = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()));
    let on_upgrade = hyper::upgrade::on(&mut *request);
    let connection = gateway.ws_connections.enter();
    // Frames up to this size are read and answered with an error frame when over
    // max_body_bytes; beyond it the connection is closed (1009).
    let largest = gateway
        .config
        .max_body_bytes
        .saturating_mul(4)
        .max(16 << 20);
    tokio::spawn(async move {
        let _connection = connection;
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0)
                    .max_message_size(Some(largest))
                    .max_frame_size(Some(largest));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(v) = accept.and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}
