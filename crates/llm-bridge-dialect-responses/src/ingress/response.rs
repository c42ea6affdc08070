//! Pivot `chat.completion` → Responses `response` object.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use llm_bridge_core::{Error, ErrorKind, Result};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
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
    put("completed_at", completed_at(head).into());
    put("error", head.error.clone());
    put("incomplete_details", head.incomplete_details.clone());
    for k in ["instructions", "max_output_tokens", "max_tool_calls"] {
        put(k, e(k));
    }
    put("model", head.model.into());
    put("output", Value::Array(output.to_vec()));
    for (k, v) in &echo.0 {
        if echoed_as_given(k) {
            put(k, v.clone());
        }
    }
    put("usage", usage);
    put("user", e("user"));
    put("metadata", e("metadata"));
    Value::Object(r)
}

/// Whether an echoed request field is written from the echo's map as it is: both writers
/// (the `Value` tree and the direct one) put these few at their own places in the answer.
fn echoed_as_given(key: &str) -> bool {
    !matches!(
        key,
        "background"
            | "instructions"
            | "max_output_tokens"
            | "max_tool_calls"
            | "user"
            | "metadata"
    )
}

/// When a response was completed: now (never before it was created), for a completed one.
fn completed_at(head: &Head<'_>) -> Option<u64> {
    (head.status == "completed").then(|| ids::now().max(head.created_at))
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
    let item_status = item_status(status);
    let output = output_items(&id, message, item_status);
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
    let out = Written::new(&head, echo, &output, body.get("usage"));
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("could not write the response: {e}")))
}

/// The status of an answer's items: `completed` in a completed answer, else `incomplete`.
fn item_status(status: &str) -> &'static str {
    if status == "completed" {
        "completed"
    } else {
        "incomplete"
    }
}

/// The output items of a completion's first choice `message`: a `reasoning` item (from
/// `reasoning_content`), a `message` item (text and refusal parts), then one `function_call`
/// item per tool call; each `item_status`, their ids made from `id`.
fn output_items<'a>(id: &str, message: &'a Value, item_status: &'static str) -> Vec<Item<'a>> {
    let mut output = Vec::new();
    let reasoning = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let encrypted = encrypted_of(message);
    if !reasoning.is_empty() || encrypted.is_some() {
        output.push(Item::Reasoning {
            id: ids::item_id(id, "rs", output.len()),
            text: reasoning,
            encrypted,
        });
    }
    let text: Cow<'_, str> = match message.get("content") {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => Cow::Owned(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => Cow::Borrowed(""),
    };
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if !text.is_empty() || refusal.is_some() {
        output.push(Item::Message {
            id: ids::item_id(id, "msg", output.len()),
            status: item_status,
            text: (!text.is_empty()).then_some(text),
            refusal,
        });
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
            "" => Cow::Owned(ids::call_id()),
            given => Cow::Borrowed(given),
        };
        output.push(Item::Call {
            id: ids::item_id(id, "fc", output.len()),
            status: item_status,
            call_id,
            name: s(f.and_then(|f| f.get("name"))),
            arguments: s(f.and_then(|f| f.get("arguments"))),
        });
    }
    output
}

/// A complete answer's `response` object, written straight from its parts: what
/// [`response_json`] builds as a `Value` tree (each key an owned string in an index map, each
/// echoed value copied) and then writes, byte for byte (tested), at a fraction of the work.
struct Written<'a> {
    head: &'a Head<'a>,
    completed_at: Option<u64>,
    echo: &'a Echo,
    output: &'a [Item<'a>],
    usage: Option<Usage>,
}

impl<'a> Written<'a> {
    /// The answer of `head` with `output`, repeating `echo`; `usage` as the pivot gave it.
    fn new(
        head: &'a Head<'a>,
        echo: &'a Echo,
        output: &'a [Item<'a>],
        usage: Option<&Value>,
    ) -> Self {
        Written {
            head,
            completed_at: completed_at(head),
            echo,
            output,
            usage: usage.and_then(Usage::of),
        }
    }
}

impl Serialize for Written<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let (head, echo) = (self.head, &self.echo.0);
        let null = Value::Null;
        let e = |k: &str| echo.get(k).unwrap_or(&null);
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("id", head.id)?;
        m.serialize_entry("object", "response")?;
        m.serialize_entry("created_at", &head.created_at)?;
        m.serialize_entry("status", head.status)?;
        m.serialize_entry("background", e("background"))?;
        m.serialize_entry("completed_at", &self.completed_at)?;
        m.serialize_entry("error", &head.error)?;
        m.serialize_entry("incomplete_details", &head.incomplete_details)?;
        for k in ["instructions", "max_output_tokens", "max_tool_calls"] {
            m.serialize_entry(k, e(k))?;
        }
        m.serialize_entry("model", head.model)?;
        m.serialize_entry("output", self.output)?;
        for (k, v) in echo {
            if echoed_as_given(k) {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("usage", &self.usage)?;
        m.serialize_entry("user", e("user"))?;
        m.serialize_entry("metadata", e("metadata"))?;
        m.end()
    }
}

/// An output item of a complete answer, written as [`reasoning_item`], [`message_item`] (with
/// [`text_part`] and [`refusal_part`]) and [`call_item`] build them.
enum Item<'a> {
    Reasoning {
        id: String,
        text: &'a str,
        encrypted: Option<Value>,
    },
    Message {
        id: String,
        status: &'static str,
        text: Option<Cow<'a, str>>,
        refusal: Option<&'a str>,
    },
    Call {
        id: String,
        status: &'static str,
        call_id: Cow<'a, str>,
        name: &'a str,
        arguments: &'a str,
    },
}

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        /// `[]`, as `json!([])` writes it.
        const NONE: [(); 0] = [];
        /// A one-entry object.
        struct One<'a>(&'a str, &'a str, &'a str, &'a str);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry(self.0, self.1)?;
                m.serialize_entry(self.2, self.3)?;
                m.end()
            }
        }
        struct TextPart<'a>(&'a str);
        impl Serialize for TextPart<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("type", "output_text")?;
                m.serialize_entry("annotations", &NONE)?;
                m.serialize_entry("logprobs", &NONE)?;
                m.serialize_entry("text", self.0)?;
                m.end()
            }
        }
        struct Parts<'a>(Option<&'a str>, Option<&'a str>);
        impl Serialize for Parts<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                if let Some(text) = self.0 {
                    seq.serialize_element(&TextPart(text))?;
                }
                if let Some(refusal) = self.1 {
                    seq.serialize_element(&One("type", "refusal", "refusal", refusal))?;
                }
                seq.end()
            }
        }
        let mut m = serializer.serialize_map(None)?;
        match self {
            Item::Reasoning {
                id,
                text,
                encrypted,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("type", "reasoning")?;
                if text.is_empty() {
                    m.serialize_entry("summary", &NONE)?;
                } else {
                    m.serialize_entry("summary", &[One("type", "summary_text", "text", text)])?;
                }
                if let Some(e) = encrypted {
                    m.serialize_entry("encrypted_content", e)?;
                }
            }
            Item::Message {
                id,
                status,
                text,
                refusal,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("type", "message")?;
                m.serialize_entry("status", status)?;
                m.serialize_entry("content", &Parts(text.as_deref(), *refusal))?;
                m.serialize_entry("role", "assistant")?;
            }
            Item::Call {
                id,
                status,
                call_id,
                name,
                arguments,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("type", "function_call")?;
                m.serialize_entry("status", status)?;
                m.serialize_entry("arguments", arguments)?;
                m.serialize_entry("call_id", call_id)?;
                m.serialize_entry("name", name)?;
            }
        }
        m.end()
    }
}

/// Responses' `usage`, written as [`response_usage`] builds it.
struct Usage {
    input: u64,
    cached: u64,
    cache_write: Option<u64>,
    output: u64,
    reasoning: u64,
    total: u64,
}

impl Usage {
    /// The figures of a pivot `usage` object; `None` when it is not an object.
    fn of(u: &Value) -> Option<Usage> {
        if !u.is_object() {
            return None;
        }
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = n(u.get("prompt_tokens"));
        let output = n(u.get("completion_tokens"));
        let details = u.get("prompt_tokens_details");
        Some(Usage {
            input,
            cached: n(details
                .and_then(|d| d.get("cached_tokens"))
                .or_else(|| u.get("prompt_cache_hit_tokens"))),
            cache_write: details
                .and_then(|d| d.get("cache_write_tokens"))
                .and_then(Value::as_u64),
            output,
            reasoning: n(u
                .get("completion_tokens_details")
                .and_then(|d| d.get("reasoning_tokens"))),
            total: u
                .get("total_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(input.saturating_add(output)),
        })
    }
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        struct Input<'a>(&'a Usage);
        impl Serialize for Input<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("cached_tokens", &self.0.cached)?;
                if let Some(w) = self.0.cache_write {
                    m.serialize_entry("cache_write_tokens", &w)?;
                }
                m.end()
            }
        }
        struct Output(u64);
        impl Serialize for Output {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("reasoning_tokens", &self.0)?;
                m.end()
            }
        }
        let mut m = serializer.serialize_map(Some(5))?;
        m.serialize_entry("input_tokens", &self.input)?;
        m.serialize_entry("input_tokens_details", &Input(self))?;
        m.serialize_entry("output_tokens", &self.output)?;
        m.serialize_entry("output_tokens_details", &Output(self.reasoning))?;
        m.serialize_entry("total_tokens", &self.total)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output item as the `Value` builders make it (what the answer held before it was
    /// written directly, and what the stream's events still use).
    fn item_value(item: &Item<'_>) -> Value {
        match item {
            Item::Reasoning {
                id,
                text,
                encrypted,
            } => reasoning_item(id, text, encrypted.as_ref()),
            Item::Message {
                id,
                status,
                text,
                refusal,
            } => {
                let mut parts = Vec::new();
                parts.extend(text.as_deref().map(text_part));
                parts.extend(refusal.map(refusal_part));
                message_item(id, status, parts)
            }
            Item::Call {
                id,
                status,
                call_id,
                name,
                arguments,
            } => call_item(id, status, call_id, name, arguments),
        }
    }

    /// The direct writer's bytes for `completion`, and `response_json`'s for the same parts.
    fn both_ways(completion: &Value, echo: &Echo) -> (Vec<u8>, Vec<u8>) {
        let choice = &completion["choices"][0];
        let (status, incomplete) = status_for(choice["finish_reason"].as_str());
        let output = output_items("resp_1", &choice["message"], item_status(status));
        let head = Head {
            id: "resp_1",
            created_at: 1_700_000_000,
            status,
            error: Value::Null,
            incomplete_details: incomplete,
            model: "client/m",
        };
        let written = Written::new(&head, echo, &output, completion.get("usage"));
        let items: Vec<Value> = output.iter().map(item_value).collect();
        let mut tree = response_json(&head, echo, &items, response_usage(completion.get("usage")));
        // Both read the clock; the tree gets the writer's reading.
        tree["completed_at"] = written.completed_at.into();
        (
            serde_json::to_vec(&written).unwrap(),
            serde_json::to_vec(&tree).unwrap(),
        )
    }

    #[test]
    fn the_direct_writer_writes_what_the_value_tree_wrote() {
        let echo_full = Echo::from_request(
            json!({"model": "m", "input": "x", "instructions": "be brief", "tools": [{"type":
            "function", "name": "f", "parameters": {"type": "object"}}], "tool_choice": "required",
            "text": {"verbosity": "low"}, "reasoning": {"effort": "high"}, "metadata": {"a": "b"},
            "user": "u", "store": false, "max_output_tokens": 64, "temperature": 0.5})
            .as_object()
            .unwrap(),
        );
        let completions = [
            json!({"id": "chatcmpl-1", "created": 1700000000, "choices": [{"message":
                {"role": "assistant", "content": "Hello \"there\"\n"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
            json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"},
                {"type": "text", "text": "é"}, {"type": "image"}], "refusal": "no",
                "reasoning_content": "think"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 2},
                "completion_tokens_details": {"reasoning_tokens": 1}}}),
            json!({"id": "x", "created": 5, "choices": [{"message": {"content": null,
                "reasoning": "r", "refusal": "", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f",
                     "arguments": "{\"a\":1}"}},
                    {"id": "call_2", "function": {"name": 5}}, {"function": {"name": "g"}}],
                "extra_content": {"llm_bridge": {"encrypted_reasoning": ["e1", "e2"]}}},
                "finish_reason": "content_filter"}], "usage": {"prompt_cache_hit_tokens": 4}}),
            json!({"choices": [{"message": {"content": "",
                "extra_content": {"llm_bridge": {"encrypted_reasoning": "e"}}}}],
                "usage": "none"}),
            json!({"choices": [{"message": {"content": "t",
                "extra_content": {"llm_bridge": {"encrypted_reasoning": null}}}}]}),
            json!({"choices": []}),
            json!({"choices": "no", "usage": {"total_tokens": 9, "prompt_tokens": 1}}),
            json!({}),
        ];
        for echo in [Echo::default(), echo_full] {
            for completion in &completions {
                let (written, expected) = both_ways(completion, &echo);
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&expected),
                    "{completion}"
                );
            }
        }
    }
}
