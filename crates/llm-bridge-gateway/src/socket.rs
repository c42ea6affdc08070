//! A dialect spoken over a WebSocket on its own path (Responses' WebSocket mode, which
//! Codex tries first: `GET /v1/responses` upgraded). Each client frame asks for one turn,
//! served exactly as the same request POSTed (keys, limits, routes, usage record, access
//! event with transport `ws`); its server-sent events go back one text frame each, as they
//! come. One turn at a time per connection, as Codex sends them.
//!
//! The connection remembers its last answer, so that a turn may continue it by
//! `previous_response_id` even when nothing is kept (`store: false`, as Codex sends): its
//! input and output go before the turn's own input, as for a kept answer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use llm_bridge_core::{Error, ErrorKind, Ingress, IngressSocket};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use crate::Gateway;
use crate::body::GatewayBody;
use crate::exchange;
use crate::handlers::presented_key;
use crate::ids::new_request_id;
use crate::ingress::{ingress_error, serve_turn};
use crate::request_log::{Outcome, RequestLog};
use crate::ws::{Conn, accept, refuse_upgrade};

/// Answers `GET <ingress.path()>` asking for a WebSocket: refused as HTTP (in the dialect's
/// error shape) when the key is wrong, else upgraded.
pub(crate) fn upgrade(
    gateway: &Arc<Gateway>,
    ingress: Arc<dyn Ingress>,
    mut request: Request<Incoming>,
) -> Response<GatewayBody> {
    if let Some(refused) = refuse_upgrade(gateway, request.headers(), ingress.path()) {
        return refused;
    }
    let principal = match gateway.auth.authenticate(presented_key(request.headers())) {
        Ok(p) => p,
        Err(e) => return ingress_error(&*ingress, &e),
    };
    // Each turn is authenticated with these; the upgrade's own headers are not a request's.
    let mut headers = request.headers().clone();
    for name in [
        "openai-beta",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    ] {
        headers.remove(name);
    }
    let gw = gateway.clone();
    let response = accept(gateway, &mut request, move |ws| {
        serve_connection(gw, ingress, headers, ws)
    });
    crate::handlers::for_key(&principal, response)
}

/// The last answer of a connection, which the next turn may continue.
struct Last {
    id: String,
    /// The input items the answer was made for (the whole of them).
    input: String,
    answer: Bytes,
}

async fn serve_connection(
    gateway: Arc<Gateway>,
    ingress: Arc<dyn Ingress>,
    headers: HeaderMap,
    mut ws: Conn,
) {
    let span = tracing::info_span!("ws", connection = %new_request_id(), dialect = ingress.name());
    async move {
        let Some(socket) = ingress.socket() else {
            return;
        };
        let mut shutdown = gateway.shutdown_signal();
        let mut last: Option<Last> = None;
        loop {
            let frame = tokio::select! {
                frame = ws.next() => frame,
                () = shutting_down(&mut shutdown) => {
                    let _ = ws
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: "server shutting down".into(),
                        })))
                        .await;
                    break;
                }
            };
            let Some(Ok(frame)) = frame else { break };
            let text = match frame {
                Message::Text(text) => text,
                Message::Binary(_) => {
                    let e = Error::invalid_request(
                        "binary frames are not supported: send JSON text frames",
                    );
                    if send(&mut ws, refusal(&*ingress, socket, &e)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Message::Close(_) => break,
                // Pings are answered by the protocol layer.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if turn(
                &gateway,
                &ingress,
                socket,
                &headers,
                &mut ws,
                text.as_bytes(),
                &mut last,
            )
            .await
            .is_err()
            {
                break;
            }
        }
        let _ = ws.close(None).await;
        tracing::debug!("WebSocket connection closed");
    }
    .instrument(span)
    .await;
}

/// One turn, answered on `ws`; `Err` when the client is gone (a turn under way is then
/// dropped, and its request recorded as cancelled).
async fn turn(
    gateway: &Arc<Gateway>,
    ingress: &Arc<dyn Ingress>,
    socket: &dyn IngressSocket,
    headers: &HeaderMap,
    ws: &mut Conn,
    frame: &[u8],
    last: &mut Option<Last>,
) -> Result<(), ()> {
    if frame.len() > gateway.config.max_body_bytes {
        let e = Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "frame is larger than the limit of {} bytes (server.max_body_bytes)",
                gateway.config.max_body_bytes
            ),
        );
        return refuse_turn(gateway, ingress, socket, headers, ws, e, None).await;
    }
    let asked = match socket.turn(frame) {
        Ok(asked) => asked,
        Err(e) => return refuse_turn(gateway, ingress, socket, headers, ws, e, None).await,
    };
    let mut body = asked.body;
    let state = ingress.state();
    if let (Some(state), Some(earlier)) = (state, last.as_ref()) {
        if state.continues(&body).as_deref() == Some(earlier.id.as_str()) {
            let answer = String::from_utf8_lossy(&earlier.answer);
            body = match state.expand(&body, &earlier.input, &answer) {
                Ok(expanded) => expanded,
                Err(e) => {
                    let model = requested_model(&body);
                    return refuse_turn(gateway, ingress, socket, headers, ws, e, model).await;
                }
            };
        }
    }
    // What the next turn may continue: a turn that still names an earlier answer (one kept
    // in the store, expanded while it is served) is not whole here, and is not remembered.
    let remember = |body: &Bytes, answer: Bytes| -> Option<Last> {
        let state = state?;
        if state.continues(body).is_some() {
            return None;
        }
        Some(Last {
            id: state.answer_id(&answer)?,
            input: state.input_items(body),
            answer,
        })
    };
    if !asked.generate {
        // Answered here, without an upstream: logged and recorded (no tokens) all the same.
        let mut log = RequestLog::new(gateway.telemetry.clone(), new_request_id().into(), "ws");
        log.model = requested_model(&body);
        match gateway.auth.authenticate(presented_key(headers)) {
            Ok(principal) => log.key = Some(principal.name.clone()),
            Err(e) => {
                let e = exchange::failed(log, e);
                return send(ws, refusal(&**ingress, socket, &e)).await;
            }
        }
        let (events, answer) = socket.prepared(&body);
        log.status = 200;
        for event in events {
            // The client gone: `log` is dropped, and recorded as cancelled.
            send(ws, event).await?;
        }
        log.finish(Outcome::Ok);
        *last = remember(&body, answer);
        return Ok(());
    }
    let log = RequestLog::new(gateway.telemetry.clone(), new_request_id().into(), "ws");
    let context = log.context.clone();
    let response = context
        .scope(serve_turn(gateway, ingress, headers, body.clone(), log))
        .await;
    let status = response.status();
    let mut answer = response.into_body();
    if !status.is_success() {
        let Ok(whole) = answer.collect().await;
        return send(ws, socket.error_frame(status.as_u16(), &whole.to_bytes())).await;
    }
    let mut events = Events::default();
    while let Some(piece) = answer.frame().await {
        let Ok(piece) = piece;
        let Ok(data) = piece.into_data() else {
            continue;
        };
        for event in events.push(&data) {
            if let Some(whole) = socket.final_answer(&event) {
                *last = remember(&body, whole);
            }
            send(ws, event).await?;
        }
    }
    Ok(())
}

/// Splits server-sent events as their bytes arrive (in any pieces): the `data` of each
/// complete event, its lines joined.
#[derive(Default)]
struct Events {
    pending: BytesMut,
}

impl Events {
    fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, gap)) = event_end(&self.pending) {
            let event = self.pending.split_to(end + gap);
            let mut data = Vec::new();
            for line in event[..end].split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(value) = line.strip_prefix(b"data:") {
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
                }
            }
            if !data.is_empty() && data != b"[DONE]" {
                out.push(Bytes::from(data));
            }
        }
        out
    }
}

/// Where the first complete event of `bytes` ends, and the length of the blank line after it.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|i| (i, 2));
    let crlf = memchr::memmem::find(bytes, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Returns once shutdown has begun.
async fn shutting_down(signal: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *signal.borrow_and_update() {
            return;
        }
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// Answers a turn refused before it was served (too large, not a turn, an earlier answer that
/// cannot be continued) with its error frame, and leaves its access event, and its usage
/// record when the key is known, as a refused POST does.
async fn refuse_turn(
    gateway: &Arc<Gateway>,
    ingress: &Arc<dyn Ingress>,
    socket: &dyn IngressSocket,
    headers: &HeaderMap,
    ws: &mut Conn,
    e: Error,
    model: Option<String>,
) -> Result<(), ()> {
    let mut log = RequestLog::new(gateway.telemetry.clone(), new_request_id().into(), "ws");
    log.model = model;
    if let Ok(principal) = gateway.auth.authenticate(presented_key(headers)) {
        log.key = Some(principal.name.clone());
    }
    let e = exchange::failed(log, e);
    send(ws, refusal(&**ingress, socket, &e)).await
}

/// The `model` a turn names, for its log; `None` when it names none (or is not JSON).
fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
    }
    serde_json::from_slice::<Named>(body).ok()?.model
}

/// A refusal before a turn's events, as a frame.
fn refusal(ingress: &dyn Ingress, socket: &dyn IngressSocket, e: &Error) -> Bytes {
    let (status, body) = ingress.error(e);
    socket.error_frame(status, &body)
}

/// Sends one text frame; `Err` when the client is gone.
async fn send(ws: &mut Conn, frame: Bytes) -> Result<(), ()> {
    // Events are JSON, so UTF-8; anything else is not sent.
    let Ok(text) = Utf8Bytes::try_from(frame) else {
        return Ok(());
    };
    ws.send(Message::Text(text)).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn events_are_split_whatever_the_pieces() {
        let stream = b"event: a\ndata: {\"n\":1}\n\nevent: b\r\ndata: {\"n\":2}\r\n\r\n: comment\n\ndata: [DONE]\n\ndata: x\ndata: y\n\n";
        for size in 1..stream.len() {
            let mut events = Events::default();
            let mut got = Vec::new();
            for piece in stream.chunks(size) {
                got.extend(events.push(piece));
            }
            let want: Vec<Bytes> = vec![
                Bytes::from_static(b"{\"n\":1}"),
                Bytes::from_static(b"{\"n\":2}"),
                Bytes::from_static(b"x\ny"),
            ];
            assert_eq!(got, want, "pieces of {size}");
        }
    }
}
