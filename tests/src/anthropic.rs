//! Anthropic-shaped traffic for the mock upstream: recorded Messages answers and event streams
//! (from `tests/fixtures/`, see SOURCES.md), error answers written the way Anthropic writes
//! them (429 with `retry-after`, 529 `overloaded_error`, 401), and an echo of `POST
//! /v1/messages` requests (used by the mock's default behaviour, so that the `mock-upstream`
//! binary serves Anthropic clients too).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::mock::{Behavior, Echo, Recorded, StreamEnd};

/// The provider key test configs give Anthropic providers.
pub const API_KEY: &str = "sk-ant-api03-test-key-0123456789";

/// A provider entry (`adapter: anthropic`) for a config built with [`crate::config_with`],
/// with [`API_KEY`]; `url` is the mock's root.
pub fn anthropic_provider(name: &str, url: &str, models: &str) -> String {
    format!(
        "  {name}:\n    adapter: anthropic\n    base_url: \"{url}\"\n    api_key: {API_KEY}\n    models:\n{models}"
    )
}

/// Anthropic's `usage` object.
pub fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output
    })
}

/// A whole answer (`type: message`) with these content blocks.
pub fn message(content: Value, stop_reason: &str, usage: Value) -> Value {
    json!({
        "id": "msg_mock_0001",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

/// Events framed as Anthropic frames them: `event: <type>` then `data: <json>`, one per frame.
pub fn sse(events: &[Value]) -> Behavior {
    Behavior::Stream {
        status: 200,
        pieces: events.iter().map(frame).collect(),
        delay: std::time::Duration::ZERO,
        end: StreamEnd::Close,
    }
}

fn frame(event: &Value) -> Bytes {
    let kind = event["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

/// A recorded event stream replayed as is, one event per frame. The recordings lost the
/// blank line after their last event; it is put back, as Anthropic sends it.
pub fn replay(recorded: &str) -> Behavior {
    let mut text = recorded.trim_end().to_owned();
    text.push_str("\n\n");
    Behavior::replay(&text, std::time::Duration::ZERO)
}

/// Anthropic's error body.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message},
           "request_id": "req_mock_0001"})
}

/// 529 `overloaded_error`, as Anthropic answers when it is out of capacity.
pub fn overloaded() -> Behavior {
    Behavior::json(529, error("overloaded_error", "Overloaded"))
}

/// 429 `rate_limit_error` with a `retry-after` of `seconds`.
pub fn rate_limited(seconds: u64) -> Behavior {
    Behavior::json_with_headers(
        429,
        error(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
        ),
        &[("retry-after", &seconds.to_string())],
    )
}

/// 401 `authentication_error`; the message quotes the key, as a careless upstream might.
pub fn authentication_error() -> Behavior {
    Behavior::json(
        401,
        error(
            "authentication_error",
            &format!("invalid x-api-key: {API_KEY}"),
        ),
    )
}

/// For a `POST …/v1/messages` request: `(content type, body pieces)` of an echo answer
/// (`echo: <last user text>`, JSON or a stream as asked); `None` for any other request.
pub fn echo(recorded: &Recorded, echo: &Echo) -> Option<(&'static str, Vec<Bytes>)> {
    let path = recorded.uri.split('?').next().unwrap_or_default();
    if !path.ends_with("/v1/messages") {
        return None;
    }
    let request: Value = serde_json::from_slice(&recorded.body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("claude").to_owned();
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            blocks => blocks
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"].as_str())
                .collect(),
        })
        .unwrap_or_default();
    let text = format!("echo: {last}");
    let (prompt, completion) = echo.usage.unwrap_or((0, 0));
    if request["stream"] != Value::Bool(true) {
        let mut body = message(
            json!([{"type": "text", "text": text}]),
            "end_turn",
            usage(prompt, completion, 0, 0),
        );
        body["model"] = json!(model);
        return Some(("application/json", vec![Bytes::from(body.to_string())]));
    }
    let mut start = message(json!([]), "", usage(prompt, 1, 0, 0));
    start["model"] = json!(model);
    start["stop_reason"] = Value::Null;
    let mut events = vec![
        json!({"type": "message_start", "message": start}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(echo.chunks.max(1)).max(1);
    for piece in chars.chunks(per) {
        let s: String = piece.iter().collect();
        events.push(json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": s}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": completion}}));
    events.push(json!({"type": "message_stop"}));
    Some(("text/event-stream", events.iter().map(frame).collect()))
}
