//! A Gemini request (`generateContent`, `countTokens`, `embedContent`, `batchEmbedContents`)
//! → the pivot (an OpenAI chat request, or an OpenAI embeddings body).
//!
//! Gemini's REST API takes camelCase and snake_case keys alike (`systemInstruction`,
//! `system_instruction`); so does this.

use std::collections::VecDeque;

use bytes::Bytes;
use llm_bridge_core::{ChatRequest, Error, IngressRequest, Result};
use serde_json::{Map, Value, json};

/// A field under its camelCase or snake_case name.
fn field<'a>(object: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    object
        .get(camel)
        .or_else(|| object.get(snake))
        .filter(|v| !v.is_null())
}

/// A repeated field: Google's JSON parser also takes a single object for a list of one.
fn list(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(items)) => items.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::invalid_request(message)
}

fn parse(body: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad("request body must be a JSON object"));
    }
    Ok(value)
}

/// A `generateContent` body (or a `countTokens` one, whose `contents` may also come wrapped
/// in `generateContentRequest`) as a chat request for `model`.
pub fn chat_request(body: &[u8], model: &str, stream: bool) -> Result<IngressRequest> {
    let mut value = parse(body)?;
    if let Some(inner) = field(&value, "generateContentRequest", "generate_content_request") {
        value = inner.clone();
    }
    let mut dropped = Vec::new();
    let mut messages = Vec::new();
    if let Some(system) = field(&value, "systemInstruction", "system_instruction") {
        let text = texts(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let contents = list(field(&value, "contents", "contents"));
    if contents.is_empty() {
        return Err(bad("contents must not be empty").with_param("contents"));
    }
    let mut calls = Calls::default();
    for content in &contents {
        turn(content, &mut messages, &mut calls, &mut dropped)?;
    }
    let mut request = Map::new();
    request.insert("model".into(), json!(model));
    request.insert("messages".into(), Value::Array(messages));
    if stream {
        request.insert("stream".into(), json!(true));
    }
    let tools = list(field(&value, "tools", "tools"));
    if !tools.is_empty() {
        let mut functions = Vec::new();
        for tool in &tools {
            let declarations = field(tool, "functionDeclarations", "function_declarations")
                .and_then(Value::as_array);
            match declarations {
                Some(list) => functions.extend(list.iter().map(function)),
                None => dropped.push(format!(
                    "tools.{}",
                    tool.as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default()
                )),
            }
        }
        if !functions.is_empty() {
            request.insert("tools".into(), Value::Array(functions));
        }
    }
    if let Some(config) = field(&value, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"))
    {
        let names = field(config, "allowedFunctionNames", "allowed_function_names")
            .and_then(Value::as_array);
        let choice = match config.get("mode").and_then(Value::as_str) {
            Some("NONE") => Some(json!("none")),
            Some("ANY") => match names.map(Vec::as_slice) {
                Some([one]) => Some(json!({"type": "function", "function": {"name": one}})),
                _ => Some(json!("required")),
            },
            Some("AUTO") => Some(json!("auto")),
            _ => None,
        };
        if let Some(choice) = choice {
            request.insert("tool_choice".into(), choice);
        }
    }
    if let Some(config) = field(&value, "generationConfig", "generation_config") {
        generation(config, &mut request, &mut dropped);
    }
    for (camel, snake) in [
        ("safetySettings", "safety_settings"),
        ("cachedContent", "cached_content"),
        ("labels", "labels"),
    ] {
        if field(&value, camel, snake).is_some() {
            dropped.push(camel.to_owned());
        }
    }
    let request = ChatRequest::from_value(Value::Object(request))?;
    Ok(IngressRequest { request, dropped })
}

/// The text of a `Content`'s parts (thoughts left out).
fn texts(content: &Value) -> String {
    list(content.get("parts"))
        .iter()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("")
}

/// Function calls of model turns waiting for their results, for ids Gemini did not give.
#[derive(Default)]
struct Calls {
    made: u64,
    pending: VecDeque<(String, String)>,
}

impl Calls {
    fn call(&mut self, name: &str, id: Option<&str>) -> String {
        self.made += 1;
        let id = id.map_or_else(|| format!("call_{}", self.made), str::to_owned);
        self.pending.push_back((name.to_owned(), id.clone()));
        id
    }

    fn result(&mut self, name: &str, id: Option<&str>) -> String {
        if let Some(id) = id {
            self.pending.retain(|(_, pending)| pending != id);
            return id.to_owned();
        }
        match self.pending.iter().position(|(n, _)| n == name) {
            Some(at) => self
                .pending
                .remove(at)
                .map(|(_, id)| id)
                .unwrap_or_default(),
            None => format!("call_{name}"),
        }
    }
}

fn turn(
    content: &Value,
    messages: &mut Vec<Value>,
    calls: &mut Calls,
    dropped: &mut Vec<String>,
) -> Result<()> {
    let role = content["role"].as_str().unwrap_or("user");
    let parts = list(content.get("parts"));
    if role == "model" {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in &parts {
            if part["thought"] == true {
                continue;
            }
            if let Some(t) = part["text"].as_str() {
                text.push_str(t);
            } else if let Some(call) = field(part, "functionCall", "function_call") {
                let name = call["name"].as_str().unwrap_or_default();
                let id = call.get("id").and_then(Value::as_str);
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                let mut tool_call = json!({
                    "id": calls.call(name, id),
                    "type": "function",
                    "function": {"name": name, "arguments": args.to_string()},
                });
                if let Some(sig) = field(part, "thoughtSignature", "thought_signature") {
                    tool_call["extra_content"] = json!({"google": {"thought_signature": sig}});
                }
                tool_calls.push(tool_call);
            } else {
                dropped.push("a model part that is neither text nor a function call".into());
            }
        }
        let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        messages.push(message);
        return Ok(());
    }
    let mut user_parts = Vec::new();
    for part in &parts {
        if let Some(t) = part["text"].as_str() {
            user_parts.push(json!({"type": "text", "text": t}));
        } else if let Some(blob) = field(part, "inlineData", "inline_data") {
            let mime = field(blob, "mimeType", "mime_type")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            let data = blob["data"].as_str().unwrap_or_default();
            let url = format!("data:{mime};base64,{data}");
            if mime.starts_with("image/") {
                user_parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            } else {
                user_parts.push(json!({"type": "file", "file": {"file_data": url}}));
            }
        } else if let Some(file) = field(part, "fileData", "file_data") {
            let uri = field(file, "fileUri", "file_uri")
                .and_then(Value::as_str)
                .unwrap_or_default();
            user_parts.push(json!({"type": "image_url", "image_url": {"url": uri}}));
        } else if let Some(result) = field(part, "functionResponse", "function_response") {
            let name = result["name"].as_str().unwrap_or_default();
            let id = calls.result(name, result.get("id").and_then(Value::as_str));
            let response = result.get("response").cloned().unwrap_or(Value::Null);
            messages
                .push(json!({"role": "tool", "tool_call_id": id, "content": response.to_string()}));
        } else {
            dropped.push("a user part that is not text, data or a function response".into());
        }
    }
    if !user_parts.is_empty() {
        let all_text = user_parts.iter().all(|p| p["type"] == "text");
        let content = if all_text {
            json!(
                user_parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            )
        } else {
            Value::Array(user_parts)
        };
        messages.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// A `functionDeclarations` entry as an OpenAI function tool.
fn function(declaration: &Value) -> Value {
    let mut function = json!({"name": declaration["name"]});
    if let Some(d) = declaration.get("description") {
        function["description"] = d.clone();
    }
    let parameters = field(
        declaration,
        "parametersJsonSchema",
        "parameters_json_schema",
    )
    .cloned()
    .or_else(|| declaration.get("parameters").map(lower_types));
    if let Some(p) = parameters {
        function["parameters"] = p;
    }
    json!({"type": "function", "function": function})
}

/// Gemini's OpenAPI-style schema (`"type": "OBJECT"`) as JSON Schema (`"object"`).
fn lower_types(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => json!(t.to_ascii_lowercase()),
                        _ => lower_types(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(lower_types).collect()),
        other => other.clone(),
    }
}

fn generation(config: &Value, request: &mut Map<String, Value>, dropped: &mut Vec<String>) {
    let mut set = |name: &str, v: Option<&Value>| {
        if let Some(v) = v {
            request.insert(name.into(), v.clone());
        }
    };
    set("temperature", config.get("temperature"));
    set("top_p", field(config, "topP", "top_p"));
    set(
        "max_tokens",
        field(config, "maxOutputTokens", "max_output_tokens"),
    );
    set("stop", field(config, "stopSequences", "stop_sequences"));
    set("n", field(config, "candidateCount", "candidate_count"));
    set(
        "presence_penalty",
        field(config, "presencePenalty", "presence_penalty"),
    );
    set(
        "frequency_penalty",
        field(config, "frequencyPenalty", "frequency_penalty"),
    );
    set("seed", config.get("seed"));
    let schema = field(config, "responseJsonSchema", "response_json_schema")
        .cloned()
        .or_else(|| field(config, "responseSchema", "response_schema").map(lower_types));
    let mime = field(config, "responseMimeType", "response_mime_type").and_then(Value::as_str);
    match (schema, mime) {
        (Some(schema), _) => {
            request.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        (None, Some("application/json")) => {
            request.insert("response_format".into(), json!({"type": "json_object"}));
        }
        _ => {}
    }
    for (camel, snake) in [
        ("topK", "top_k"),
        ("thinkingConfig", "thinking_config"),
        ("responseModalities", "response_modalities"),
    ] {
        if field(config, camel, snake).is_some() {
            dropped.push(format!("generationConfig.{camel}"));
        }
    }
}

/// An `embedContent` body (`batch: false`) or a `batchEmbedContents` one as an OpenAI
/// embeddings body for `model`: one input per request, `outputDimensionality` as
/// `dimensions` and `taskType` as `task_type` (both must agree across a batch).
pub fn embeddings_request(body: &[u8], model: &str, batch: bool) -> Result<Bytes> {
    let value = parse(body)?;
    let requests: Vec<Value> = if batch {
        value["requests"]
            .as_array()
            .cloned()
            .ok_or_else(|| bad("requests must be a list").with_param("requests"))?
    } else {
        vec![value]
    };
    if requests.is_empty() {
        return Err(bad("requests must not be empty").with_param("requests"));
    }
    let mut inputs = Vec::new();
    let (mut dimensions, mut task) = (None, None);
    for (i, r) in requests.iter().enumerate() {
        let content = r
            .get("content")
            .ok_or_else(|| bad(format!("request {i} has no content")).with_param("content"))?;
        inputs.push(json!(texts(content)));
        let d = field(r, "outputDimensionality", "output_dimensionality").cloned();
        let t = field(r, "taskType", "task_type").cloned();
        if i > 0 && (d != dimensions || t != task) {
            return Err(bad(
                "every request of a batch must ask for the same outputDimensionality and taskType",
            ));
        }
        (dimensions, task) = (d, t);
    }
    let mut out = json!({"model": model, "input": inputs, "encoding_format": "float"});
    if let Some(d) = dimensions {
        out["dimensions"] = d;
    }
    if let Some(t) = task {
        out["task_type"] = t;
    }
    Ok(Bytes::from(out.to_string()))
}
