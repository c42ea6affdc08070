//! Gemini-shaped traffic for the mock upstream: answers, stream events and errors written
//! the way Google's `generativelanguage` API writes them, and an echo of `generateContent` /
//! `streamGenerateContent` requests (used by the mock's default behaviour, so that the
//! `mock-upstream` binary serves Gemini clients too).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::mock::{Behavior, Echo, Recorded, StreamEnd};

/// The provider key test configs give Gemini providers.
pub const API_KEY: &str = "AIzaSy-test-gemini-key-0123456789";

/// The thought signature the echo puts on the function calls it makes.
pub const ECHO_SIGNATURE: &str = "ZWNoby1zaWduYXR1cmU=";

/// A provider entry (`adapter: gemini`) for a config built with [`crate::config_with`].
pub fn gemini_provider(name: &str, url: &str, models: &str) -> String {
    format!(
        "  {name}:\n    adapter: gemini\n    base_url: \"{url}\"\n    api_key: {API_KEY}\n    models:\n{models}"
    )
}

/// `usageMetadata` with prompt, candidate and thought tokens.
pub fn usage(prompt: u64, candidates: u64, thoughts: u64) -> Value {
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    })
}

/// A whole answer with these parts and finish reason.
pub fn answer(parts: Value, finish: &str, usage: Value) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "mock-gemini-response"
    })
}

/// A stream event with these parts (and a finish reason on the last one).
pub fn event(parts: Value, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    let mut e = json!({
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "mock-gemini-stream"
    });
    if let Some(u) = usage {
        e["usageMetadata"] = u;
    }
    e
}

/// An event stream of these events, framed as Gemini frames them (`\r\n\r\n`, no `[DONE]`).
pub fn sse(events: &[Value]) -> Behavior {
    Behavior::Stream {
        status: 200,
        pieces: events
            .iter()
            .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
            .collect(),
        delay: std::time::Duration::ZERO,
        end: StreamEnd::Close,
    }
}

/// Google's error body (google.rpc.Status) with optional details.
pub fn error(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

/// Gemini's answer to a bad API key: a 400 whose debug detail quotes the key.
pub fn api_key_invalid() -> Behavior {
    Behavior::json(
        400,
        error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": format!("Invalid API key: {API_KEY}")}
            ]),
        ),
    )
}

/// Gemini's quota answer: a 429 with the delay in `RetryInfo` (and no `Retry-After` header).
pub fn resource_exhausted(delay: &str) -> Behavior {
    Behavior::json(
        429,
        error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            json!([
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
            ]),
        ),
    )
}

/// For a Gemini request: `(content type, body pieces)` of an echo answer; `None` for any
/// other request. The answer is the last user text (`echo: …`); with tools declared and a
/// prompt mentioning "tool", a call of the first tool carrying [`ECHO_SIGNATURE`]; after a tool
/// result, what the tool returned and whether the call came back with its signature.
pub fn echo(recorded: &Recorded, echo: &Echo) -> Option<(&'static str, Vec<Bytes>)> {
    let path = recorded.uri.split('?').next().unwrap_or_default();
    let stream = path.ends_with(":streamGenerateContent");
    if !stream && !path.ends_with(":generateContent") {
        return None;
    }
    let model = path
        .rsplit('/')
        .next()
        .and_then(|m| m.split(':').next())
        .unwrap_or("gemini")
        .to_owned();
    let request: Value = serde_json::from_slice(&recorded.body).unwrap_or(Value::Null);
    let contents = request["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or(Value::Null);
    let last_parts = last["parts"].as_array().cloned().unwrap_or_default();
    let text: String = last_parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect();
    let tool = request["tools"][0]["functionDeclarations"][0]["name"]
        .as_str()
        .map(str::to_owned);
    let result = last_parts.iter().find_map(|p| p.get("functionResponse"));
    let mut parts = Vec::new();
    if request["generationConfig"]["thinkingConfig"]["includeThoughts"] == true {
        parts.push(json!({"text": format!("Thinking about: {text}"), "thought": true}));
    }
    let answer_text = if let Some(result) = result {
        let signed =
            contents.iter().any(|c| {
                c["parts"].as_array().into_iter().flatten().any(|p| {
                    p.get("functionCall").is_some() && p["thoughtSignature"] == ECHO_SIGNATURE
                })
            });
        Some(format!(
            "echo: {} returned {}; signature {}",
            result["name"].as_str().unwrap_or_default(),
            result["response"],
            if signed { "returned" } else { "missing" }
        ))
    } else if tool.is_some() && text.contains("tool") {
        None
    } else {
        Some(format!("echo: {text}"))
    };
    let (prompt, completion) = echo.usage.unwrap_or((0, 0));
    let usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": completion,
                       "totalTokenCount": prompt + completion});
    let call = json!({"functionCall": {"name": tool, "args": {"text": text}},
                      "thoughtSignature": ECHO_SIGNATURE});
    if !stream {
        match &answer_text {
            Some(t) => parts.push(json!({"text": t})),
            None => parts.push(call),
        }
        let mut body = answer(Value::Array(parts), "STOP", usage);
        body["modelVersion"] = json!(model);
        return Some(("application/json", vec![Bytes::from(body.to_string())]));
    }
    let mut events: Vec<Value> = Vec::new();
    match &answer_text {
        Some(t) => {
            let chars: Vec<char> = t.chars().collect();
            let per = chars.len().div_ceil(echo.chunks.max(1)).max(1);
            for piece in chars.chunks(per) {
                let s: String = piece.iter().collect();
                parts.push(json!({"text": s}));
                events.push(event(Value::Array(std::mem::take(&mut parts)), None, None));
            }
        }
        None => {
            parts.push(call);
            events.push(event(Value::Array(std::mem::take(&mut parts)), None, None));
        }
    }
    let last_event = events.len().saturating_sub(1);
    for (i, e) in events.iter_mut().enumerate() {
        e["modelVersion"] = json!(model);
        e["usageMetadata"] = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
        if i == last_event {
            e["candidates"][0]["finishReason"] = json!("STOP");
            e["usageMetadata"] = usage.clone();
        }
    }
    let pieces = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
        .collect();
    Some(("text/event-stream", pieces))
}
