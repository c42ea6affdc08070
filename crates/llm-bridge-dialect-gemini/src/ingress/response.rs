//! Pivot answers, chunks and errors → Gemini's `GenerateContentResponse`, its event stream and
//! its error body.

use bytes::Bytes;
use llm_bridge_core::{Error, IngressStream, Result};
use serde_json::{Map, Value, json};

/// Gemini's `finishReason` for an OpenAI `finish_reason`.
fn finish(reason: &str) -> &'static str {
    match reason {
        "stop" | "tool_calls" | "function_call" => "STOP",
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        _ => "OTHER",
    }
}

/// `usageMetadata` for an OpenAI `usage` object.
fn usage_metadata(usage: &Value) -> Option<Value> {
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage["completion_tokens"].as_u64().unwrap_or(0);
    let reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap_or(0)
        .min(completion);
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    let mut meta = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion - reasoning,
        "totalTokenCount": usage["total_tokens"].as_u64().unwrap_or(prompt + completion),
    });
    if reasoning > 0 {
        meta["thoughtsTokenCount"] = json!(reasoning);
    }
    if cached > 0 {
        meta["cachedContentTokenCount"] = json!(cached);
    }
    Some(meta)
}

/// A tool call's arguments (a JSON string) as Gemini's `args` object.
fn args(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        Ok(other) => json!({ "value": other }),
        Err(_) => json!({ "arguments": arguments }),
    }
}

fn call_part(call: &Value, name: &str, arguments: &str) -> Value {
    let mut part = json!({"functionCall": {"name": name, "args": args(arguments)}});
    if let Some(id) = call.get("id").and_then(Value::as_str) {
        part["functionCall"]["id"] = json!(id);
    }
    if let Some(sig) = call["extra_content"]["google"]["thought_signature"].as_str() {
        part["thoughtSignature"] = json!(sig);
    }
    part
}

/// A complete `chat.completion` as a `GenerateContentResponse`.
pub fn generate_response(completion: &[u8], model: &str) -> Result<Bytes> {
    let value: Value = serde_json::from_slice(completion)
        .map_err(|e| Error::internal(format!("the pivot answer is not JSON: {e}")))?;
    let mut candidates = Vec::new();
    for (i, choice) in value["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let message = &choice["message"];
        let mut parts = Vec::new();
        if let Some(r) = message["reasoning_content"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            parts.push(json!({"text": r, "thought": true}));
        }
        if let Some(t) = message["content"].as_str().filter(|t| !t.is_empty()) {
            parts.push(json!({"text": t}));
        }
        if let Some(r) = message["refusal"].as_str().filter(|t| !t.is_empty()) {
            parts.push(json!({"text": r}));
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let f = &call["function"];
            parts.push(call_part(
                call,
                f["name"].as_str().unwrap_or_default(),
                f["arguments"].as_str().unwrap_or_default(),
            ));
        }
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        candidates.push(json!({
            "content": {"role": "model", "parts": parts},
            "finishReason": finish(choice["finish_reason"].as_str().unwrap_or("stop")),
            "index": choice["index"].as_u64().unwrap_or(i as u64),
        }));
    }
    let mut answer = json!({"candidates": candidates, "modelVersion": model});
    if let Some(meta) = usage_metadata(&value["usage"]) {
        answer["usageMetadata"] = meta;
    }
    if let Some(id) = value["id"].as_str() {
        answer["responseId"] = json!(id);
    }
    Ok(Bytes::from(answer.to_string()))
}

/// Gemini's `status` for an HTTP status.
fn status_name(code: u16) -> &'static str {
    match code {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 | 501 => "UNIMPLEMENTED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The error object Gemini answers with: `{"error": {"code", "message", "status"}}`.
pub fn error_body(error: &Error) -> Value {
    let code = error.status();
    json!({"error": {"code": code, "message": error.message(), "status": status_name(code)}})
}

/// Renders a pivot chunk stream as `streamGenerateContent?alt=sse` events: text and thoughts
/// as they come, function calls (whose arguments arrive in pieces) whole at the end, with
/// the finish reason and usage.
pub struct EventWriter {
    model: String,
    id: Option<String>,
    calls: Vec<(Value, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
}

impl EventWriter {
    /// A writer for an answer of `model`.
    pub fn new(model: &str) -> Self {
        EventWriter {
            model: model.to_owned(),
            id: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    fn event(&self, parts: Vec<Value>, extra: Map<String, Value>) -> Bytes {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(map) = candidate.as_object_mut() {
            map.extend(extra);
        }
        let mut event = json!({"candidates": [candidate], "modelVersion": self.model});
        if let Some(id) = &self.id {
            event["responseId"] = json!(id);
        }
        Bytes::from(format!("data: {event}\r\n\r\n"))
    }
}

impl IngressStream for EventWriter {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes> {
        let value: Value = serde_json::from_slice(chunk)
            .map_err(|e| Error::internal(format!("the pivot chunk is not JSON: {e}")))?;
        if self.id.is_none() {
            self.id = value["id"].as_str().map(str::to_owned);
        }
        if let Some(meta) = usage_metadata(&value["usage"]) {
            self.usage = Some(meta);
        }
        let Some(choice) = value["choices"].as_array().and_then(|c| c.first()) else {
            return Ok(Bytes::new());
        };
        let delta = &choice["delta"];
        let mut parts = Vec::new();
        if let Some(r) = delta["reasoning_content"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            parts.push(json!({"text": r, "thought": true}));
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            parts.push(json!({"text": t}));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(0) as usize;
            while self.calls.len() <= index {
                self.calls.push((Value::Null, String::new(), String::new()));
            }
            let slot = &mut self.calls[index];
            if call.get("id").is_some() || call.get("extra_content").is_some() {
                slot.0 = call.clone();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                slot.1.push_str(name);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                slot.2.push_str(a);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
        if parts.is_empty() {
            return Ok(Bytes::new());
        }
        Ok(self.event(parts, Map::new()))
    }

    fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        self.done = true;
        let mut parts: Vec<Value> = self
            .calls
            .iter()
            .map(|(call, name, arguments)| call_part(call, name, arguments))
            .collect();
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let mut extra = Map::new();
        extra.insert(
            "finishReason".into(),
            json!(finish(self.finish.as_deref().unwrap_or("stop"))),
        );
        let mut event = self.event(parts, extra);
        if let Some(usage) = &self.usage {
            // The last event carries the usage, as Gemini's does.
            let text = String::from_utf8_lossy(&event);
            let json = text
                .trim_start_matches("data: ")
                .trim_end_matches("\r\n\r\n");
            if let Ok(mut v) = serde_json::from_str::<Value>(json) {
                v["usageMetadata"] = usage.clone();
                event = Bytes::from(format!("data: {v}\r\n\r\n"));
            }
        }
        event
    }

    fn error(&mut self, error: &Error) -> Bytes {
        self.done = true;
        Bytes::from(format!("data: {}\r\n\r\n", error_body(error)))
    }
}

/// An OpenAI embeddings answer as `embedContent`'s (`batch: false`) or
/// `batchEmbedContents`' answer; the numbers are kept as they came.
pub fn embeddings_answer(answer: &[u8], batch: bool) -> Result<Bytes> {
    #[derive(serde::Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        data: Vec<Item<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        #[serde(borrow)]
        embedding: &'a serde_json::value::RawValue,
    }
    let list: List<'_> = serde_json::from_slice(answer)
        .map_err(|e| Error::internal(format!("the embeddings answer is not readable: {e}")))?;
    if !batch && list.data.is_empty() {
        return Err(Error::internal("the embeddings answer has no embedding"));
    }
    let mut out = String::with_capacity(answer.len() + 32);
    if batch {
        out.push_str(r#"{"embeddings":["#);
    } else {
        out.push_str(r#"{"embedding":"#);
    }
    for (i, item) in list.data.iter().enumerate() {
        if !batch && i > 0 {
            break;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"values":"#);
        out.push_str(item.embedding.get());
        out.push('}');
    }
    out.push_str(if batch { "]}" } else { "}" });
    Ok(Bytes::from(out))
}
