//! `GET /v1/ws`: chat over a WebSocket (SPEC §4), for browser apps that cannot set headers
//! and clients that want many chats on one connection.
//!
//! One reader loop per connection parses frames and starts one task per chat request; the
//! tasks run the same exchange as HTTP (auth, routing, usage, access events) and send their
//! frames, in order, through one bounded queue to one writer task — so a slow client slows its
//! requests down instead of growing memory. Closing the connection cancels its requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use llm_bridge_auth::Principal;
use llm_bridge_core::{ChatRequest, Error, ErrorKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::Instrument;

use crate::Gateway;
use crate::access::RequestLog;
use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::exchange::{self, Answer};
use crate::http::presented_key;
use crate::meter::StreamItem;
use crate::service::new_request_id;

/// Frames waiting for the writer, per connection: the bound that makes a slow client push back.
const OUTBOX: usize = 64;

/// How long a closing connection's queued frames may take to reach the client.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// Answers the upgrade request and serves the connection in the background.
pub(crate) fn upgrade(
    gateway: &Arc<Gateway>,
    mut request: Request<Incoming>,
) -> Response<GatewayBody> {
    if let Some(refused) = refuse_upgrade(gateway, request.headers(), "/v1/ws") {
        return refused;
    }
    // A key on the upgrade authenticates every message; a wrong one is refused at once.
    let principal = match presented_key(request.headers()) {
        Some(k) => match gateway.auth.authenticate(Some(k)) {
            Ok(p) => Some(p),
            Err(e) => return error_response(&e),
        },
        None => None,
    };
    let gw = gateway.clone();
    let name = principal.as_ref().map(|p| p.name.clone());
    let mut response = accept(gateway, &mut request, move |ws| {
        serve_connection(gw, ws, principal)
    });
    if let Some(name) = name {
        response.extensions_mut().insert(crate::http::KeyName(name));
    }
    response
}

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

/// A frame from the client.
#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

/// An accepted WebSocket.
pub(crate) type Conn = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn serve_connection(gateway: Arc<Gateway>, ws: Conn, principal: Option<Principal>) {
    let conn_id = new_request_id();
    let span = tracing::info_span!("ws", connection = %conn_id);
    async move {
        tracing::debug!("WebSocket connection opened");
        let (mut sink, mut stream) = ws.split();
        let (out, mut outbox) = mpsc::channel::<Message>(OUTBOX);
        // Text frames the socket took: proof that the client reads (pings do not count, or a
        // dead peer would look alive until the socket buffer fills).
        let delivered = Arc::new(AtomicU64::new(0));
        let delivered_by_writer = Arc::clone(&delivered);
        // The writer: the only owner of the sink.
        let mut writer = tokio::spawn(async move {
            while let Some(frame) = outbox.recv().await {
                let closing = matches!(frame, Message::Close(_));
                let text = matches!(frame, Message::Text(_));
                if sink.send(frame).await.is_err() || closing {
                    break;
                }
                if text {
                    delivered_by_writer.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = sink.close().await;
        });
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut active: HashMap<String, AbortHandle> = HashMap::new();
        let mut shutdown = gateway.shutdown_signal();
        let mut shutting_down = *shutdown.borrow();
        let ping_every = gateway.config.ws_ping_interval.duration().max(Duration::from_millis(100));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_seen = Instant::now();
        let mut delivered_seen = 0u64;
        let mut awaiting_pong = false;
        let mut next_id = 0u64;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if shutting_down && active.is_empty() {
                let close = out.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                })));
                let _ = tokio::time::timeout(WRITER_GRACE, close).await;
                break;
            }
            let deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    last_seen = Instant::now();
                    awaiting_pong = false;
                    match frame {
                        Message::Text(text) => {
                            let ctx = Ctx { gateway: &gateway, out: &out, done: &done_tx, principal: principal.as_ref() };
                            on_text(&ctx, text.as_str(), &mut active, &mut next_id, shutting_down).await;
                        }
                        Message::Binary(_) => {
                            send(&out, error_frame(None, &Error::invalid_request("binary frames are not supported: send JSON text frames"))).await;
                        }
                        Message::Close(_) => break,
                        // Pings are answered by the protocol layer; pongs only prove liveness.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Some(id) = done_rx.recv() => {
                    active.remove(&id);
                }
                _ = ping.tick() => {
                    // A client that reads what we send is alive, even if it sends nothing.
                    let now_delivered = delivered.load(Ordering::Relaxed);
                    if now_delivered != delivered_seen {
                        delivered_seen = now_delivered;
                        last_seen = Instant::now();
                        awaiting_pong = false;
                    }
                    if last_seen.elapsed() >= ping_every {
                        if awaiting_pong {
                            // Neither a pong nor any reading for two intervals: the peer is
                            // gone or stalled. Never wait on a full outbox to say so.
                            tracing::debug!("WebSocket peer answers no ping and reads nothing: closing");
                            let _ = out.try_send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Policy,
                                reason: "no pong".into(),
                            })));
                            break;
                        }
                        awaiting_pong = true;
                        // A full outbox means the client is not reading: no ping fits, and the
                        // next tick decides.
                        if let Err(mpsc::error::TrySendError::Closed(_)) =
                            out.try_send(Message::Ping(Bytes::from_static(b"llm-bridge")))
                        {
                            break;
                        }
                    }
                }
                changed = shutdown.changed(), if !shutting_down => {
                    if changed.is_err() || *shutdown.borrow() {
                        shutting_down = true;
                        drain_deadline = Some(tokio::time::Instant::now() + gateway.config.drain_timeout.duration());
                    }
                }
                () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                    // Drain time is up: whatever still runs is cut.
                    for (_, task) in active.drain() {
                        task.abort();
                    }
                }
            }
        }
        // A closed connection cancels what it started.
        for (_, task) in active.drain() {
            task.abort();
        }
        drop(out);
        // The writer flushes what is queued; a client that reads nothing cannot hold the
        // connection (and its socket) open beyond this.
        if tokio::time::timeout(WRITER_GRACE, &mut writer).await.is_err() {
            writer.abort();
        }
        tracing::debug!("WebSocket connection closed");
    }
    .instrument(span)
    .await;
}

struct Ctx<'a> {
    gateway: &'a Arc<Gateway>,
    out: &'a mpsc::Sender<Message>,
    done: &'a mpsc::UnboundedSender<String>,
    principal: Option<&'a Principal>,
}

async fn on_text(
    ctx: &Ctx<'_>,
    text: &str,
    active: &mut HashMap<String, AbortHandle>,
    next_id: &mut u64,
    shutting_down: bool,
) {
    if text.len() > ctx.gateway.config.max_body_bytes {
        let e = Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "frame is larger than the limit of {} bytes (server.max_body_bytes)",
                ctx.gateway.config.max_body_bytes
            ),
        );
        return send(ctx.out, error_frame(None, &e)).await;
    }
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return send(
                ctx.out,
                error_frame(
                    None,
                    &Error::invalid_request(format!("frame is not valid JSON: {e}")),
                ),
            )
            .await;
        }
    };
    let given_id = match &frame.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return send(
                ctx.out,
                error_frame(
                    None,
                    &Error::invalid_request("'id' must be a string or a number"),
                ),
            )
            .await;
        }
    };
    match frame.kind.as_deref() {
        Some("ping") => send(ctx.out, json!({"type": "pong", "id": given_id}).to_string()).await,
        Some("cancel") => {
            let Some(id) = given_id else {
                return send(
                    ctx.out,
                    error_frame(
                        None,
                        &Error::invalid_request("cancel needs the 'id' of the request to cancel"),
                    ),
                )
                .await;
            };
            match active.remove(&id) {
                Some(task) => {
                    task.abort();
                    let e =
                        Error::new(ErrorKind::InvalidRequest, "request cancelled by the client");
                    send(ctx.out, cancelled_frame(&id, &e)).await;
                }
                None => {
                    send(
                        ctx.out,
                        error_frame(
                            Some(&id),
                            &Error::invalid_request(format!("no request '{id}' is running")),
                        ),
                    )
                    .await
                }
            }
        }
        Some("chat") => {
            let id = given_id.unwrap_or_else(|| {
                *next_id += 1;
                format!("req-{next_id}")
            });
            if shutting_down {
                return send(
                    ctx.out,
                    error_frame(
                        Some(&id),
                        &Error::new(ErrorKind::Unavailable, "the gateway is shutting down"),
                    ),
                )
                .await;
            }
            if active.contains_key(&id) {
                return send(
                    ctx.out,
                    error_frame(
                        Some(&id),
                        &Error::invalid_request(format!(
                            "a request with id '{id}' is already running"
                        )),
                    ),
                )
                .await;
            }
            let limit = ctx.gateway.config.ws_max_concurrent_requests;
            if active.len() >= limit {
                let e = Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "this connection already runs {limit} requests (server.ws_max_concurrent_requests): wait for one to finish"
                    ),
                );
                return send(ctx.out, error_frame(Some(&id), &e)).await;
            }
            let Some(payload) = frame.payload else {
                return send(
                    ctx.out,
                    error_frame(
                        Some(&id),
                        &Error::invalid_request(
                            "a chat frame needs a 'payload' (a chat completion request)",
                        )
                        .with_param("payload"),
                    ),
                )
                .await;
            };
            let principal = match frame.api_key.as_deref() {
                Some(k) => ctx.gateway.auth.authenticate(Some(crate::http::bearer_token(k))),
                None => ctx.principal.cloned().ok_or_else(|| {
                    Error::new(ErrorKind::Authentication, "missing API key: send 'api_key' in the frame or 'Authorization' on the upgrade")
                }),
            };
            let task = tokio::spawn(chat(
                ctx.gateway.clone(),
                ctx.out.clone(),
                ctx.done.clone(),
                id.clone(),
                principal,
                Bytes::copy_from_slice(payload.get().as_bytes()),
            ));
            active.insert(id, task.abort_handle());
        }
        Some(other) => {
            send(
                ctx.out,
                error_frame(
                    given_id.as_deref(),
                    &Error::invalid_request(format!(
                        "unknown frame type '{other}': use chat, cancel or ping"
                    )),
                ),
            )
            .await
        }
        None => {
            send(
                ctx.out,
                error_frame(
                    given_id.as_deref(),
                    &Error::invalid_request("a frame needs a 'type': chat, cancel or ping"),
                ),
            )
            .await
        }
    }
}

/// One chat request on a connection.
async fn chat(
    gateway: Arc<Gateway>,
    out: mpsc::Sender<Message>,
    done: mpsc::UnboundedSender<String>,
    id: String,
    principal: Result<Principal, Error>,
    payload: Bytes,
) {
    let mut log = RequestLog::new(gateway.telemetry.clone(), new_request_id().into(), "ws");
    log.begin_trace(&http::HeaderMap::new(), || "WS /v1/ws".to_owned());
    let span = log.span.clone();
    async {
        let principal = match principal {
            Ok(p) => p,
            Err(e) => return send(&out, error_frame(Some(&id), &exchange::failed(log, e))).await,
        };
        log.key = Some(principal.name.clone());
        log.request_body = Some(payload.clone());
        let request = ChatRequest::from_slice(&payload).map(|mut r| {
            // The seed's form: over a WebSocket, answers stream unless told otherwise.
            if r.get("stream").is_none_or(Value::is_null) {
                r.set_stream(true);
            }
            r
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => return send(&out, error_frame(Some(&id), &exchange::failed(log, e))).await,
        };
        let id_json = serde_json::to_string(&id).unwrap_or_else(|_| "null".into());
        match exchange::run(&gateway, log, &principal, request)
            .await
            .result
        {
            Ok(Answer::Complete { body, .. }) => {
                send(&out, wrap("completion", &id_json, &body)).await;
            }
            Ok(Answer::Stream { mut stream, .. }) => {
                while let Some(item) = stream.next().await {
                    match item {
                        StreamItem::Chunk(data) => {
                            // Waits while the client is slow: backpressure, not buffering.
                            if out
                                .send(Message::text(wrap("chunk", &id_json, &data)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        StreamItem::Failed(e) => {
                            return send(&out, error_frame(Some(&id), &e)).await;
                        }
                    }
                }
                let usage = stream
                    .usage()
                    .map(|u| u.to_openai_json())
                    .unwrap_or(Value::Null);
                send(
                    &out,
                    format!("{{\"type\":\"done\",\"id\":{id_json},\"usage\":{usage}}}"),
                )
                .await;
            }
            // Chat completions are the pivot: nothing is forwarded natively here.
            Ok(Answer::Native { .. }) => {
                let e = Error::internal("a native answer reached the WebSocket path");
                send(&out, error_frame(Some(&id), &e)).await;
            }
            Err(e) => send(&out, error_frame(Some(&id), &e)).await,
        }
    }
    .instrument(span)
    .await;
    let _ = done.send(id);
}

/// `{"type": kind, "id": id, "data": <json>}` without re-serialising the JSON.
fn wrap(kind: &str, id_json: &str, data: &[u8]) -> String {
    let data = String::from_utf8_lossy(data);
    let mut s = String::with_capacity(data.len() + id_json.len() + 32);
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push_str("\",\"id\":");
    s.push_str(id_json);
    s.push_str(",\"data\":");
    s.push_str(&data);
    s.push('}');
    s
}

fn error_frame(id: Option<&str>, e: &Error) -> String {
    json!({
        "type": "error",
        "id": id,
        "error": {"message": e.message(), "type": e.error_type(), "code": e.code(), "status": e.status()},
    })
    .to_string()
}

fn cancelled_frame(id: &str, e: &Error) -> String {
    json!({
        "type": "error",
        "id": id,
        "error": {"message": e.message(), "type": "cancelled", "code": "cancelled", "status": 499},
    })
    .to_string()
}

async fn send(out: &mpsc::Sender<Message>, text: String) {
    let _ = out.send(Message::text(text)).await;
}
