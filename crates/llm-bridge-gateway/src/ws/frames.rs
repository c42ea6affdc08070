//! The frames of `/v1/ws`: what a client frame asks (`chat`, `cancel`, `ping`), and the
//! frames that answer (`chunk`, `done`, `error`), each request running in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use llm_bridge_auth::Principal;
use llm_bridge_core::{ChatRequest, Error, ErrorKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::Gateway;
use crate::exchange::{self, Answer};
use crate::ids::new_request_id;
use crate::meter::StreamItem;
use crate::request_log::RequestLog;

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

pub(super) struct Ctx<'a> {
    pub(super) gateway: &'a Arc<Gateway>,
    pub(super) out: &'a mpsc::Sender<Message>,
    pub(super) done: &'a mpsc::UnboundedSender<String>,
    pub(super) principal: Option<&'a Principal>,
}

pub(super) async fn on_text(
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
                Some(k) => ctx.gateway.auth.authenticate(Some(crate::handlers::bearer_token(k))),
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
    let context = log.context.clone();
    let turn = async {
        let principal = match principal {
            Ok(p) => p,
            Err(e) => return send(&out, error_frame(Some(&id), &exchange::failed(log, e))).await,
        };
        log.key = Some(principal.name.clone());
        log.request_body = Some(payload.clone());
        let request = ChatRequest::from_bytes(payload.clone()).map(|mut r| {
            // The documented form (README, quick start "WebSocket, in the browser"): over a WebSocket, answers stream unless told otherwise.
            if r.stream_given().is_none() {
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
    };
    context.scope(turn).await;
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

pub(super) fn error_frame(id: Option<&str>, e: &Error) -> String {
    // The error object of HTTP answers, with the status the HTTP answer would have had.
    let mut error = crate::errors::error_object(e);
    error["status"] = json!(e.status());
    json!({"type": "error", "id": id, "error": error}).to_string()
}

fn cancelled_frame(id: &str, e: &Error) -> String {
    json!({
        "type": "error",
        "id": id,
        "error": {"message": e.message(), "type": "cancelled", "code": "cancelled", "status": 499},
    })
    .to_string()
}

pub(super) async fn send(out: &mpsc::Sender<Message>, text: String) {
    let _ = out.send(Message::text(text)).await;
}
