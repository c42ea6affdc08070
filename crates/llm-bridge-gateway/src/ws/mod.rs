//! `GET /v1/ws`: chat over a WebSocket (README, quick start "WebSocket, in the browser"), for
//! browser apps that cannot set headers and clients that want many chats on one connection.
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
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use llm_bridge_auth::Principal;
use llm_bridge_core::Error;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use crate::Gateway;
use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::handlers::presented_key;
use crate::ids::new_request_id;

mod frames;
mod handshake;

use frames::{Ctx, error_frame, on_text, send};
pub(crate) use handshake::{accept, refuse_upgrade};

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
        response
            .extensions_mut()
            .insert(crate::handlers::KeyName(name));
    }
    response
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
                () = drain_over(drain_deadline), if drain_deadline.is_some() => {
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

/// Resolves at the drain deadline, once there is one (never before shutdown).
async fn drain_over(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
