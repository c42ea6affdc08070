//! Responses' WebSocket mode, as Codex speaks it (`GET /v1/responses` upgraded, the
//! `OpenAI-Beta: responses_websockets=…` header): each client text frame is
//! `{"type": "response.create", …the request…}` — the body of `POST /v1/responses` with a
//! `type` beside its fields — and each event of the answer comes back as one text frame,
//! the `data` of the server-sent event it would have been. A turn refused before its events
//! is one frame `{"type": "error", "status": 400, "error": {…}}`. `generate: false` asks for
//! an answer with no output (Codex prepares a connection so); it is answered at once and can
//! be continued with `previous_response_id`, as any other.

use bytes::Bytes;
use llm_bridge_core::{Error, IngressSocket, Result, SocketTurn};
use serde_json::{Map, Value, json};

use crate::ingress::events::EventWriter;
use crate::ingress::mounted::ResponsesIngress;
use crate::ingress::response::Echo;

impl IngressSocket for ResponsesIngress {
    fn turn(&self, frame: &[u8]) -> Result<SocketTurn> {
        let mut map = match serde_json::from_slice::<Value>(frame) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(Error::invalid_request("a frame must be a JSON object")),
            Err(e) => {
                return Err(Error::invalid_request(format!(
                    "a frame is not valid JSON: {e}"
                )));
            }
        };
        match map.remove("type") {
            Some(Value::String(kind)) if kind == "response.create" => {}
            Some(Value::String(kind)) => {
                return Err(Error::invalid_request(format!(
                    "unsupported frame type '{kind}': send 'response.create'"
                ))
                .with_param("type"));
            }
            _ => {
                return Err(
                    Error::invalid_request("a frame needs a 'type' ('response.create')")
                        .with_param("type"),
                );
            }
        }
        // One answer at a time per connection: a lane name has nothing to choose.
        map.remove("stream_id");
        if map.get("background").and_then(Value::as_bool) == Some(true) {
            return Err(
                Error::invalid_request("'background' is not supported over a WebSocket")
                    .with_param("background"),
            );
        }
        let generate = match map.remove("generate") {
            Some(Value::Bool(g)) => g,
            None | Some(Value::Null) => true,
            Some(_) => {
                return Err(
                    Error::invalid_request("'generate' must be a boolean").with_param("generate")
                );
            }
        };
        // Over a WebSocket every answer is a stream of events.
        map.insert("stream".into(), Value::Bool(true));
        let body = serde_json::to_vec(&map)
            .map_err(|e| Error::internal(format!("could not write the request: {e}")))?;
        Ok(SocketTurn {
            body: Bytes::from(body),
            generate,
        })
    }

    fn error_frame(&self, status: u16, error_body: &[u8]) -> Bytes {
        let error = serde_json::from_slice::<Value>(error_body)
            .ok()
            .and_then(|mut v| v.get_mut("error").map(Value::take))
            .unwrap_or_else(|| json!({"type": "server_error", "message": "the request failed"}));
        Bytes::from(json!({"type": "error", "status": status, "error": error}).to_string())
    }

    fn prepared(&self, body: &[u8]) -> (Vec<Bytes>, Bytes) {
        let fields: Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
        let model = fields.get("model").and_then(Value::as_str).unwrap_or("");
        let mut writer = EventWriter::with_echo(model, Echo::from_request(&fields));
        // An answer that ends before it says anything: created, in progress, completed.
        let nothing = json!({
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        });
        let events = writer
            .push(nothing.to_string().as_bytes())
            .unwrap_or_default();
        let answer = writer
            .final_response()
            .map(|r| Bytes::from(r.to_string()))
            .unwrap_or_default();
        (event_data(&events), answer)
    }

    fn final_answer(&self, event: &[u8]) -> Option<Bytes> {
        let mut value: Value = serde_json::from_slice(event).ok()?;
        let kind = value.get("type")?.as_str()?;
        if !matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ) {
            return None;
        }
        let response = value.get_mut("response")?.take();
        Some(Bytes::from(response.to_string()))
    }
}

/// The `data` of each server-sent event in `events` (as the event writer writes them: one
/// `data:` line each).
fn event_data(events: &[u8]) -> Vec<Bytes> {
    events
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
        .map(Bytes::copy_from_slice)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_create_frame_is_the_post_body_streamed() {
        let frame = br#"{"type":"response.create","model":"m","input":"hi","stream_id":"a","generate":true}"#;
        let turn = ResponsesIngress.turn(frame).unwrap();
        assert!(turn.generate);
        let body: Value = serde_json::from_slice(&turn.body).unwrap();
        assert_eq!(body, json!({"model": "m", "input": "hi", "stream": true}));
    }

    #[test]
    fn frames_that_ask_for_nothing_served_are_refused() {
        for frame in [
            &br#"{"type":"response.cancel"}"#[..],
            br#"{"model":"m"}"#,
            b"[1]",
            b"not json",
            br#"{"type":"response.create","background":true}"#,
            br#"{"type":"response.create","generate":"no"}"#,
        ] {
            let e = ResponsesIngress.turn(frame).unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn a_prepared_turn_completes_with_no_output_and_names_its_answer() {
        let body = br#"{"model":"gpt-5","input":[],"instructions":"be brief","stream":true}"#;
        let (events, answer) = ResponsesIngress.prepared(body);
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                serde_json::from_slice::<Value>(e).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["status"], "completed");
        assert_eq!(answer["output"], json!([]));
        assert_eq!(answer["instructions"], "be brief");
        let last = ResponsesIngress
            .final_answer(events.last().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&last).unwrap()["id"],
            answer["id"]
        );
        assert!(ResponsesIngress.final_answer(&events[0]).is_none());
    }

    #[test]
    fn an_error_frame_carries_the_status_and_the_error_object() {
        let frame = ResponsesIngress.error_frame(
            429,
            br#"{"error":{"type":"rate_limit_error","message":"slow down","code":null,"param":null}}"#,
        );
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["status"], 429);
        assert_eq!(v["error"]["message"], "slow down");
    }
}
