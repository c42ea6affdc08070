//! Pivot `chat.completion` → Anthropic Messages answer.

use bytes::Bytes;
use llm_bridge_core::{Error, Result};
use serde_json::{Map, Value, json};

use crate::ids;
use crate::thinking;
use crate::usage::MessagesUsage;

/// OpenAI's `finish_reason` → Anthropic's `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// `msg_<the pivot id without its chatcmpl- prefix>`, or a fresh one.
pub(crate) fn message_id(pivot_id: Option<&str>) -> String {
    let id = pivot_id.map(|i| i.strip_prefix("chatcmpl-").unwrap_or(i));
    match id {
        Some(id) if ids::is_plain(id) => {
            if id.starts_with("msg_") {
                id.to_owned()
            } else {
                format!("msg_{id}")
            }
        }
        _ => format!("msg_{}", ids::random_hex()),
    }
}

/// A tool call's `arguments` as Anthropic's `input` object. Arguments that are not a JSON
/// object (a model cut off mid-call) become an empty input rather than a failed answer.
pub(crate) fn tool_input(arguments: Option<&str>) -> Value {
    match arguments.map(serde_json::from_str::<Value>) {
        Some(Ok(v @ Value::Object(_))) => v,
        _ => json!({}),
    }
}

/// Translates a `chat.completion` (the first choice) into a Messages answer naming
/// `client_model`: thinking blocks, then text, then `tool_use` blocks. A body that is not
/// a completion is an `Err` of kind `UpstreamBadResponse`.
pub fn messages_response(chat_completion: &[u8], client_model: &str) -> Result<Bytes> {
    let body: Value = serde_json::from_slice(chat_completion).map_err(|e| {
        Error::new(
            llm_bridge_core::ErrorKind::UpstreamBadResponse,
            format!("the answer is not a chat completion: {e}"),
        )
    })?;
    let choice = body.get("choices").and_then(|c| c.get(0));
    let message = choice
        .and_then(|c| c.get("message"))
        .and_then(Value::as_object);
    let empty = Map::new();
    let message = message.unwrap_or(&empty);
    let mut content = Vec::new();
    let signed = thinking::blocks_of(message);
    if !signed.is_empty() {
        content.extend(signed);
    } else if let Some(r) = message
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        // Reasoning from another provider has no signature; Anthropic's SDKs require the
        // field, and an empty one tells a later Anthropic upstream to ignore the block.
        content.push(thinking::thinking_block(r, ""));
    }
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let text = if text.is_empty() {
        message
            .get("refusal")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    } else {
        text
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        content.push(json!({
            "type": "tool_use",
            "id": s(call.get("id")),
            "name": s(f.and_then(|f| f.get("name"))),
            "input": tool_input(f.and_then(|f| f.get("arguments")).and_then(Value::as_str)),
        }));
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let out = json!({
        "id": message_id(body.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": MessagesUsage::messages_json_from_pivot(body.get("usage")),
    });
    Ok(Bytes::from(out.to_string()))
}
