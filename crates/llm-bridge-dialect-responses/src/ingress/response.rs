//! Pivot `chat.completion` → Responses `response` object.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use llm_bridge_core::{Error, ErrorKind, Result};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::ids;
use crate::ingress::request::ENCRYPTED_REASONING;

/// The request fields a `response` object repeats (`instructions`, `tools`, `tool_choice`,
/// `parallel_tool_calls`, `text`, `reasoning`, `max_output_tokens`, `temperature`, `top_p`,
/// `store`, `metadata`, `previous_response_id`, `prompt_cache_key`, `user`, …), with
/// OpenAI's defaults for what the request left out. [`Echo::default`] is what a request
/// with nothing but `model` and `input` gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo(Map<String, Value>);

/// The echoed fields in OpenAI's order, with their defaults: built once, copied per answer
/// (a copy does not hash the keys again).
fn defaults() -> Map<String, Value> {
    static DEFAULTS: LazyLock<Map<String, Value>> = LazyLock::new(build_defaults);
    DEFAULTS.clone()
}

fn build_defaults() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "background": false,
        "instructions": null,
        "max_output_tokens": null,
        "max_tool_calls": null,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "prompt_cache_key": null,
        "reasoning": {"effort": null, "summary": null},
        "safety_identifier": null,
        "service_tier": "default",
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "user": null,
        "metadata": {},
    }) else {
        unreachable!("an object literal")
    };
    map
}

impl Default for Echo {
    fn default() -> Self {
        Echo(defaults())
    }
}

impl Echo {
    /// The echo of a Responses request body (as the client sent it; tools in Responses'
    /// shape, built-in ones included).
    pub fn from_request(body: &Map<String, Value>) -> Echo {
        Echo::from_fields(|key| body.get(key).cloned())
    }

    /// [`Echo::from_request`] of raw bytes; a body that is not a JSON object echoes the
    /// defaults.
    pub fn from_slice(body: &[u8]) -> Echo {
        // Only the echoed fields are built; the rest (the input above all, which may be
        // most of the body) is skipped as raw text. A key given twice counts the last time.
        let Ok(raw) = serde_json::from_slice::<BTreeMap<Cow<'_, str>, &RawValue>>(body) else {
            return Echo::default();
        };
        Echo::from_fields(|key| serde_json::from_str(raw.get(key)?.get()).ok())
    }

    /// The echo of the fields `get` finds.
    fn from_fields(get: impl Fn(&str) -> Option<Value>) -> Echo {
        let mut map = defaults();
        for (key, slot) in &mut map {
            let Some(v) = get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            match key.as_str() {
                "reasoning" => {
                    for k in ["effort", "summary"] {
                        if let Some(x) = v.get(k) {
                            slot[k] = x.clone();
                        }
                    }
                }
                "text" => {
                    if let Value::Object(mut text) = v {
                        text.entry("format")
                            .or_insert_with(|| json!({"type": "text"}));
                        *slot = Value::Object(text);
                    }
                }
                _ => *slot = v,
            }
        }
        Echo(map)
    }

    /// The echoed fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// What the `response` object says besides its echo and output.
pub(crate) struct Head<'a> {
    pub id: &'a str,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'a str,
    pub error: Value,
    pub incomplete_details: Value,
    pub model: &'a str,
}

/// A `response` object in OpenAI's field order.
pub(crate) fn response_json(head: &Head<'_>, echo: &Echo, output: &[Value], usage: Value) -> Value {
    let mut r = Map::new();
    let mut put = |k: &str, v: Value| {
        r.insert(k.to_owned(), v);
    };
    put("id", head.id.into());
    put("object", "response".into());
    put("created_at", head.created_at.into());
    put("status", head.status.into());
    let e = |k: &str| echo.0.get(k).cloned().unwrap_or(Value::Null);
    put("background", e("background"));
    let completed_at = if head.status == "completed" {
        ids::now().max(head.created_at).into()
    } else {
        Value::Null
    };
    put("completed_at", completed_at);
    put("error", head.error.clone());
    put("incomplete_details", head.incomplete_details.clone());
    for k in ["instructions", "max_output_tokens", "max_tool_calls"] {
        put(k, e(k));
    }
    put("model", head.model.into());
    put("output", Value::Array(output.to_vec()));
    for (k, v) in &echo.0 {
        if !matches!(
            k.as_str(),
            "background"
                | "instructions"
                | "max_output_tokens"
                | "max_tool_calls"
                | "user"
                | "metadata"
        ) {
            put(k, v.clone());
        }
    }
    put("usage", usage);
    put("user", e("user"));
    put("metadata", e("metadata"));
    Value::Object(r)
}

/// The pivot's `finish_reason` → the response's `status` and `incomplete_details`:
/// `length` → incomplete (`max_output_tokens`), `content_filter` → incomplete
/// (`content_filter`), anything else → completed.
pub fn status_for(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A pivot `usage` object → Responses' `usage` (`null` when there is none).
pub fn response_usage(pivot: Option<&Value>) -> Value {
    let Some(u) = pivot.filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input.saturating_add(output));
    let cached = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .or_else(|| u.get("prompt_cache_hit_tokens"));
    let reasoning = u
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens"));
    let mut input_details = json!({"cached_tokens": n(cached)});
    if let Some(w) = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cache_write_tokens"))
        .and_then(Value::as_u64)
    {
        input_details["cache_write_tokens"] = w.into();
    }
    json!({
        "input_tokens": input,
        "input_tokens_details": input_details,
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(reasoning)},
        "total_tokens": total,
    })
}

/// A `reasoning` output item.
pub(crate) fn reasoning_item(id: &str, text: &str, encrypted: Option<&Value>) -> Value {
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    let mut item = json!({"id": id, "type": "reasoning", "summary": summary});
    if let Some(e) = encrypted {
        item["encrypted_content"] = e.clone();
    }
    item
}

/// An `output_text` content part.
pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

/// A `refusal` content part.
pub(crate) fn refusal_part(refusal: &str) -> Value {
    json!({"type": "refusal", "refusal": refusal})
}

/// An assistant `message` output item.
pub(crate) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "content": content, "role": "assistant"})
}

/// A `function_call` output item.
pub(crate) fn call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "arguments": arguments,
           "call_id": call_id, "name": name})
}

/// The opaque reasoning a sealing layer put on a pivot message or delta
/// (`extra_content.llm_bridge.encrypted_reasoning`): the string itself, or the last of a
/// list.
pub(crate) fn encrypted_of(message: &Value) -> Option<Value> {
    let [outer, inner, key] = ENCRYPTED_REASONING;
    match message.get(outer)?.get(inner)?.get(key)? {
        Value::Array(list) => list.last().cloned(),
        Value::Null => None,
        v => Some(v.clone()),
    }
}

/// Translates a `chat.completion` (its first choice) into a Responses `response` object
/// naming `client_model`, repeating `echo`: a `reasoning` item (from `reasoning_content`),
/// a `message` item (text and refusal parts), then one `function_call` item per tool call.
/// A body that is not a completion is an `Err` of kind `UpstreamBadResponse`.
pub fn responses_response(
    chat_completion: &[u8],
    client_model: &str,
    echo: &Echo,
) -> Result<Bytes> {
    let body: Value = serde_json::from_slice(chat_completion).map_err(|e| {
        Error::new(
            ErrorKind::UpstreamBadResponse,
            format!("the answer is not a chat completion: {e}"),
        )
    })?;
    if !body.is_object() {
        return Err(Error::new(
            ErrorKind::UpstreamBadResponse,
            "the answer is not a chat completion: not a JSON object",
        ));
    }
    let id = ids::response_id(body.get("id").and_then(Value::as_str));
    let choice = body.get("choices").and_then(|c| c.get(0));
    let message = choice
        .and_then(|c| c.get("message"))
        .unwrap_or(&Value::Null);
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str);
    let (status, incomplete) = status_for(finish);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let mut output = Vec::new();
    let reasoning = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let encrypted = encrypted_of(message);
    if !reasoning.is_empty() || encrypted.is_some() {
        let item_id = ids::item_id(&id, "rs", output.len());
        output.push(reasoning_item(&item_id, reasoning, encrypted.as_ref()));
    }
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let mut parts = Vec::new();
    if !text.is_empty() {
        parts.push(text_part(&text));
    }
    if let Some(r) = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        parts.push(refusal_part(r));
    }
    if !parts.is_empty() {
        let item_id = ids::item_id(&id, "msg", output.len());
        output.push(message_item(&item_id, item_status, parts));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function");
        fn s(v: Option<&Value>) -> &str {
            v.and_then(Value::as_str).unwrap_or_default()
        }
        let call_id = match s(call.get("id")) {
            "" => ids::call_id(),
            given => given.to_owned(),
        };
        let item_id = ids::item_id(&id, "fc", output.len());
        output.push(call_item(
            &item_id,
            item_status,
            &call_id,
            s(f.and_then(|f| f.get("name"))),
            s(f.and_then(|f| f.get("arguments"))),
        ));
    }
    let created_at = body
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(ids::now);
    let head = Head {
        id: &id,
        created_at,
        status,
        error: Value::Null,
        incomplete_details: incomplete,
        model: client_model,
    };
    let out = response_json(&head, echo, &output, response_usage(body.get("usage")));
    // `to_vec`, not `to_string`: Display goes through `fmt::Write` a piece at a time.
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("could not write the response: {e}")))
}
