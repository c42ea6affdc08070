//! Anthropic Messages answer → pivot `chat.completion`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use llm_bridge_core::{ChatResponse, Error, ErrorKind, Result};
use serde_json::{Map, Value, json};

use crate::egress::request::JSON_OUTPUT_TOOL;
use crate::errors::error_from_event;
use crate::ids;
use crate::thinking;
use crate::usage::MessagesUsage;
use crate::wire::MessageResponse;

/// Anthropic's `stop_reason` → OpenAI's `finish_reason`. `tool_use` is `stop` when the only
/// tool called was the one carrying a `response_format` answer. Reasons OpenAI has no word
/// for are passed on as they are, never disguised as `stop`.
pub fn finish_reason(stop_reason: &str, answered_with_json: bool) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "tool_use" if answered_with_json => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `chatcmpl-<Anthropic's message id>`: it lets an operator find the answer in Anthropic's
/// console. Ids with odd characters are not copied.
pub(crate) fn completion_id(message_id: Option<&str>) -> String {
    match message_id {
        Some(id) if ids::is_plain(id) => format!("chatcmpl-{id}"),
        _ => format!("chatcmpl-{}", ids::random_hex()),
    }
}

pub(crate) fn bad_response(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::UpstreamBadResponse, message)
}

/// A tool call in OpenAI's shape; `arguments` is the input serialised.
pub(crate) fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// Translates a complete Messages answer into a `chat.completion` for `model_for_client`.
/// An error object (even in a 200) is the `Err` it describes; a body that is not a message
/// is `UpstreamBadResponse`.
pub fn chat_completion(body: &[u8], model_for_client: &str) -> Result<ChatResponse> {
    let message: MessageResponse = serde_json::from_slice(body).map_err(|e| {
        bad_response(format!(
            "Anthropic sent an answer that is not a Messages response: {e}"
        ))
    })?;
    if message.error.is_some() || message.kind.as_deref() == Some("error") {
        return Err(error_from_event(body));
    }
    let mut text = String::new();
    let mut json_answer: Option<String> = None;
    let mut reasoning = String::new();
    let mut blocks = Vec::new();
    let mut calls = Vec::new();
    for block in &message.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "thinking" => {
                let t = block.thinking.as_deref().unwrap_or_default();
                reasoning.push_str(t);
                blocks.push(thinking::thinking_block(
                    t,
                    block.signature.as_deref().unwrap_or_default(),
                ));
            }
            "redacted_thinking" => {
                blocks.push(thinking::redacted_block(
                    block.data.as_deref().unwrap_or_default(),
                ));
            }
            "tool_use" => {
                let input = block.input.clone().unwrap_or_else(|| json!({}));
                let name = block.name.as_deref().unwrap_or_default();
                if name == JSON_OUTPUT_TOOL {
                    json_answer = Some(input.to_string());
                } else {
                    let id = block.id.as_deref().unwrap_or_default();
                    calls.push(tool_call(id, name, &input.to_string()));
                }
            }
            // Server tools (web search, code execution) ran at Anthropic; their blocks
            // have no place in a chat completion, and the text that follows tells the story.
            _ => {}
        }
    }
    let answered_with_json = json_answer.is_some() && calls.is_empty();
    let content = json_answer.unwrap_or(text);
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    msg.insert(
        "content".into(),
        if content.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    if !reasoning.is_empty() {
        msg.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), calls.into());
    }
    if !blocks.is_empty() {
        msg.insert("extra_content".into(), thinking::extra_content(blocks));
    }
    let reason = finish_reason(
        message.stop_reason.as_deref().unwrap_or("end_turn"),
        answered_with_json,
    );
    let mut out = json!({
        "id": completion_id(message.id.as_deref()),
        "object": "chat.completion",
        "created": now(),
        "model": model_for_client,
        "choices": [{"index": 0, "message": msg, "logprobs": null, "finish_reason": reason}],
    });
    if let Some(u) = &message.usage {
        out["usage"] = MessagesUsage::from_wire(u).to_pivot_json();
    }
    Ok(ChatResponse {
        body: Bytes::from(out.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        let r = chat_completion(body.to_string().as_bytes(), "m").unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn json_answers_come_back_as_text() {
        let out = translate(json!({"type": "message", "id": "msg_1", "content": [
            {"type": "tool_use", "id": "t", "name": JSON_OUTPUT_TOOL, "input": {"a": 1}}],
            "stop_reason": "tool_use"}));
        assert_eq!(out["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(out["id"], "chatcmpl-msg_1");
    }

    #[test]
    fn stop_reasons() {
        for (a, o) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "something_new"),
        ] {
            assert_eq!(finish_reason(a, false), o);
        }
    }

    #[test]
    fn an_error_body_is_an_error() {
        let e = chat_completion(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "m",
        )
        .unwrap_err();
        assert!(e.kind().is_retryable());
        assert!(chat_completion(b"[1]", "m").is_err());
    }
}
