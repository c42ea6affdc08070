//! Responses request → pivot chat request (see the crate docs for the table).

use llm_bridge_core::{ChatRequest, Error, Result};
use serde_json::{Map, Value, json};

/// Where the `encrypted_content` of `reasoning` input items is kept on the pivot assistant
/// message that follows them: `extra_content.llm_bridge.encrypted_reasoning`, a list of the
/// opaque strings in input order. This crate never reads inside them; the layer that seals
/// reasoning for a stateless round trip unseals them from there.
pub const ENCRYPTED_REASONING: [&str; 3] = ["extra_content", "llm_bridge", "encrypted_reasoning"];

/// A Responses request translated to the pivot, with the names of what a chat target cannot
/// honour and was left out (built-in tools, `include`, `store`, …), for the caller to log at
/// debug level. Leaving them out is never an error: Codex sends a `web_search` tool to every
/// provider.
#[derive(Debug, Clone)]
pub struct TranslatedRequest {
    /// The pivot request.
    pub request: ChatRequest,
    /// Fields, items and tools left out, each named once (`tools[8] (web_search)`).
    pub dropped: Vec<String>,
}

#[derive(Default)]
struct Dropped(Vec<String>);

impl Dropped {
    fn add(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.0.contains(&what) {
            self.0.push(what);
        }
    }
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::invalid_request(message).with_param(param)
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("untyped")
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Translates the body of `POST /v1/responses` into a pivot request. A body that is not a
/// Responses request (not JSON, no `model`, `input` neither a string nor a list, an item
/// that is not an object, a function tool without a name, nothing to send) is an `Err` of
/// kind `InvalidRequest`. `previous_response_id` must have been resolved before (see
/// [`prepend_items`]); here it is only listed as dropped.
pub fn chat_request(responses_body: &[u8]) -> Result<TranslatedRequest> {
    let value: Value = serde_json::from_slice(responses_body)
        .map_err(|e| Error::invalid_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(Error::invalid_request("request body must be a JSON object"));
    };
    chat_request_from_map(&body)
}

/// [`chat_request`] for an already parsed body.
pub fn chat_request_from_map(body: &Map<String, Value>) -> Result<TranslatedRequest> {
    let mut dropped = Dropped::default();
    let mut out = Map::new();
    // `model` first, as clients write it; `messages` keeps its place after it.
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    out.insert("messages".into(), Value::Null);
    let mut messages = Vec::new();
    match body.get("instructions") {
        Some(Value::String(s)) if !s.is_empty() => {
            messages.push(json!({"role": "system", "content": s}));
        }
        Some(Value::Array(items)) => {
            // Instructions as input items (what a stored response echoes): system turns.
            let mut conv = Conversation::default();
            for (i, item) in items.iter().enumerate() {
                conv.item(item, &format!("instructions[{i}]"), &mut dropped)?;
            }
            for mut m in conv.finish(&mut dropped) {
                if m["role"] == "user" {
                    m["role"] = "system".into();
                }
                messages.push(m);
            }
        }
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => {
            return Err(bad(
                "instructions",
                "instructions must be a string or a list of items",
            ));
        }
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            let mut conv = Conversation::default();
            for (i, item) in items.iter().enumerate() {
                conv.item(item, &format!("input[{i}]"), &mut dropped)?;
            }
            messages.extend(conv.finish(&mut dropped));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("input", "input must be a string or a list of items")),
    }
    if messages.is_empty() {
        return Err(bad("input", "missing required parameter: 'input'"));
    }
    out.insert("messages".into(), Value::Array(messages));

    let tools = tools(body.get("tools"), &mut dropped)?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    for (key, v) in body {
        match key.as_str() {
            "model" | "input" | "instructions" | "tools" => {}
            "temperature" | "top_p" | "stream" | "user" | "prompt_cache_key"
            | "safety_identifier" => {
                if !v.is_null() {
                    out.insert(key.clone(), v.clone());
                }
            }
            "max_output_tokens" => {
                if !v.is_null() {
                    out.insert("max_completion_tokens".into(), v.clone());
                }
            }
            "tool_choice" => match tool_choice(v, &out, &mut dropped) {
                Some(choice) if has_tools => {
                    out.insert("tool_choice".into(), choice);
                }
                Some(_) => dropped.add("tool_choice"),
                None => {}
            },
            "parallel_tool_calls" => {
                // Chat targets refuse `parallel_tool_calls` without tools.
                if has_tools && v.is_boolean() {
                    out.insert(key.clone(), v.clone());
                } else if !v.is_null() {
                    dropped.add(key.as_str());
                }
            }
            "text" => text(v, &mut out, &mut dropped),
            "reasoning" => reasoning(v, &mut out, &mut dropped),
            // Handled by the gateway (store, previous_response_id), meaningless for a chat
            // target, or both. `stream_options` of Responses only has `include_obfuscation`.
            "store"
            | "include"
            | "previous_response_id"
            | "metadata"
            | "client_metadata"
            | "truncation"
            | "service_tier"
            | "background"
            | "conversation"
            | "prompt"
            | "max_tool_calls"
            | "top_logprobs"
            | "stream_options"
            | "prompt_cache_retention" => {
                if !v.is_null() {
                    dropped.add(key.as_str());
                }
            }
            other => dropped.add(other),
        }
    }
    let request = ChatRequest::from_value(Value::Object(out))?;
    Ok(TranslatedRequest {
        request,
        dropped: dropped.0,
    })
}

/// Input items → chat messages. Assistant-side items (`message` with role assistant,
/// `reasoning`, `function_call`) in a row become one assistant message; `function_call_output`
/// items become `tool` messages, and the images they return follow them in a user message.
#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    /// The assistant message being assembled.
    assistant: Option<Assistant>,
    /// Image and file parts of tool outputs, sent as a user message after the tool messages.
    tool_parts: Vec<Value>,
}

#[derive(Default)]
struct Assistant {
    text: String,
    refusal: String,
    reasoning: Vec<String>,
    encrypted: Vec<Value>,
    calls: Vec<Value>,
}

impl Assistant {
    fn has_answer(&self) -> bool {
        !self.text.is_empty() || !self.refusal.is_empty() || !self.calls.is_empty()
    }

    fn into_message(self) -> Value {
        let mut m = Map::new();
        m.insert("role".into(), "assistant".into());
        let content = if self.text.is_empty() && !self.calls.is_empty() {
            Value::Null
        } else {
            self.text.into()
        };
        m.insert("content".into(), content);
        if !self.refusal.is_empty() {
            m.insert("refusal".into(), self.refusal.into());
        }
        let reasoning: Vec<String> = self
            .reasoning
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect();
        if !reasoning.is_empty() {
            m.insert("reasoning_content".into(), reasoning.join("\n\n").into());
        }
        if !self.calls.is_empty() {
            m.insert("tool_calls".into(), self.calls.into());
        }
        if !self.encrypted.is_empty() {
            let [outer, inner, key] = ENCRYPTED_REASONING;
            m.insert(outer.into(), json!({ inner: { key: self.encrypted } }));
        }
        Value::Object(m)
    }
}

impl Conversation {
    fn assistant(&mut self) -> &mut Assistant {
        self.flush_tool_parts();
        self.assistant.get_or_insert_with(Assistant::default)
    }

    fn push(&mut self, message: Value, dropped: &mut Dropped) {
        self.flush_assistant(dropped);
        if message["role"] != "tool" {
            self.flush_tool_parts();
        }
        self.messages.push(message);
    }

    fn flush_assistant(&mut self, dropped: &mut Dropped) {
        if let Some(a) = self.assistant.take() {
            if a.has_answer() {
                self.messages.push(a.into_message());
            } else {
                // Chat has no assistant turn made of reasoning alone.
                dropped.add("reasoning (without an answer after it)");
            }
        }
    }

    fn flush_tool_parts(&mut self) {
        if !self.tool_parts.is_empty() {
            let parts = std::mem::take(&mut self.tool_parts);
            self.messages
                .push(json!({"role": "user", "content": parts}));
        }
    }

    fn finish(mut self, dropped: &mut Dropped) -> Vec<Value> {
        self.flush_assistant(dropped);
        self.flush_tool_parts();
        self.messages
    }

    fn item(&mut self, item: &Value, at: &str, dropped: &mut Dropped) -> Result<()> {
        if !item.is_object() {
            return Err(bad(at, format!("{at} must be an object")));
        }
        // An item without a type but with a role is an "easy" input message.
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(k) => k,
            None if item.get("role").is_some() => "message",
            None => return Err(bad(format!("{at}.type"), format!("{at}.type is required"))),
        };
        match kind {
            "message" => self.message(item, at, dropped),
            "reasoning" => {
                let a = self.assistant();
                if a.has_answer() {
                    // Reasoning opens a new turn.
                    self.flush_assistant(dropped);
                }
                let text = reasoning_text(item);
                let a = self.assistant();
                a.reasoning.push(text);
                if let Some(e) = item.get("encrypted_content").filter(|e| !e.is_null()) {
                    a.encrypted.push(e.clone());
                }
                Ok(())
            }
            "function_call" => {
                let call_id = str_of(item, "call_id")
                    .or_else(|| str_of(item, "id"))
                    .ok_or_else(|| {
                        bad(format!("{at}.call_id"), format!("{at}.call_id is required"))
                    })?;
                let name = str_of(item, "name").unwrap_or_default();
                let arguments = match item.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(other) => other.to_string(),
                };
                if item.get("namespace").is_some_and(|n| !n.is_null()) {
                    dropped.add("function_call.namespace");
                }
                self.assistant()
                    .calls
                    .push(json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}));
                Ok(())
            }
            "function_call_output" => {
                let call_id = str_of(item, "call_id").ok_or_else(|| {
                    bad(format!("{at}.call_id"), format!("{at}.call_id is required"))
                })?;
                let mut texts = Vec::new();
                match item.get("output") {
                    Some(Value::String(s)) => texts.push(s.clone()),
                    Some(Value::Array(parts)) => {
                        for (k, p) in parts.iter().enumerate() {
                            match content_part(p) {
                                Some(Part::Text(t)) => texts.push(t),
                                Some(Part::Other(part)) => self.tool_parts.push(part),
                                None => dropped.add(format!("{at}.output[{k}] ({})", type_of(p))),
                            }
                        }
                    }
                    None | Some(Value::Null) => {}
                    Some(other) => texts.push(other.to_string()),
                }
                let message =
                    json!({"role": "tool", "tool_call_id": call_id, "content": texts.join("\n")});
                self.push(message, dropped);
                Ok(())
            }
            other => {
                // Built-in tools' calls and outputs, item references, compaction items:
                // nothing a chat target could take.
                dropped.add(format!("{at} ({other})"));
                Ok(())
            }
        }
    }

    fn message(&mut self, item: &Value, at: &str, dropped: &mut Dropped) -> Result<()> {
        let role = str_of(item, "role").ok_or_else(|| {
            bad(
                format!("{at}.role"),
                format!("{at}.role is required and must be a string"),
            )
        })?;
        let content = item.get("content").unwrap_or(&Value::Null);
        let parts: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "input_text", "text": s})],
            Value::Array(list) => list.clone(),
            Value::Null => Vec::new(),
            _ => {
                return Err(bad(
                    format!("{at}.content"),
                    format!("{at}.content must be a string or a list of content parts"),
                ));
            }
        };
        match role {
            "assistant" => {
                let a = self.assistant();
                for (k, p) in parts.iter().enumerate() {
                    match (type_of(p), str_of(p, "text"), str_of(p, "refusal")) {
                        (_, Some(t), _) => a.text.push_str(t),
                        ("refusal", _, Some(r)) => a.refusal.push_str(r),
                        (other, _, _) => dropped.add(format!("{at}.content[{k}] ({other})")),
                    }
                }
                Ok(())
            }
            "user" | "system" | "developer" => {
                let mut out = Vec::new();
                for (k, p) in parts.iter().enumerate() {
                    match content_part(p) {
                        Some(Part::Text(t)) => out.push(json!({"type": "text", "text": t})),
                        Some(Part::Other(part)) if role == "user" => out.push(part),
                        _ => dropped.add(format!("{at}.content[{k}] ({})", type_of(p))),
                    }
                }
                if out.is_empty() {
                    return Ok(());
                }
                // Developer turns are system turns for every target but OpenAI's own, and
                // OpenAI treats a system turn as a developer turn.
                let role = if role == "user" { "user" } else { "system" };
                let content = match out.as_slice() {
                    [only] if only["type"] == "text" => only["text"].clone(),
                    // System turns are text; several parts are joined by blank lines.
                    _ if role == "system" => Value::String(
                        out.iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n\n"),
                    ),
                    _ => Value::Array(out),
                };
                self.push(json!({"role": role, "content": content}), dropped);
                Ok(())
            }
            other => Err(bad(
                format!("{at}.role"),
                format!("{at}.role '{other}' is not user, assistant, system or developer"),
            )),
        }
    }
}

/// The text of a `reasoning` item: its full reasoning text when it has one, else its summary.
fn reasoning_text(item: &Value) -> String {
    let texts = |key: &str| -> Vec<&str> {
        item.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| str_of(p, "text"))
            .collect()
    };
    let content = texts("content");
    if content.is_empty() {
        texts("summary").join("\n\n")
    } else {
        content.join("")
    }
}

enum Part {
    Text(String),
    Other(Value),
}

/// An input content part as a chat content part: text, image (URL or data URL), file (data).
fn content_part(p: &Value) -> Option<Part> {
    match type_of(p) {
        "input_text" | "output_text" | "text" | "summary_text" => {
            str_of(p, "text").map(|t| Part::Text(t.to_owned()))
        }
        "input_image" => {
            // `image_url` is a string in Responses; accept chat's object form as well.
            let url = match p.get("image_url") {
                Some(Value::String(s)) => s.as_str(),
                Some(obj) => str_of(obj, "url")?,
                None => return None,
            };
            let mut image = json!({"url": url});
            if let Some(detail) = str_of(p, "detail") {
                image["detail"] = detail.into();
            }
            Some(Part::Other(
                json!({"type": "image_url", "image_url": image}),
            ))
        }
        "input_file" => {
            let data = str_of(p, "file_data")?;
            let mut file = json!({"file_data": data});
            if let Some(name) = str_of(p, "filename") {
                file["filename"] = name.into();
            }
            Some(Part::Other(json!({"type": "file", "file": file})))
        }
        _ => None,
    }
}

/// Function tools → chat function tools; built-in tools (web search, file search, code
/// interpreter, computer use, shells, MCP, custom grammar tools, namespaces, …) have no chat
/// equivalent and are left out.
fn tools(list: Option<&Value>, dropped: &mut Dropped) -> Result<Vec<Value>> {
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(bad("tools", "tools must be a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, tool) in list.iter().enumerate() {
        let kind = type_of(tool);
        if kind != "function" {
            dropped.add(format!("tools[{j}] ({kind})"));
            continue;
        }
        let Some(name) = str_of(tool, "name").filter(|n| !n.is_empty()) else {
            return Err(bad(
                format!("tools[{j}].name"),
                format!("tools[{j}].name is required"),
            ));
        };
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        for (key, v) in tool.as_object().into_iter().flatten() {
            match key.as_str() {
                "name" | "type" => {}
                "description" | "parameters" | "strict" => {
                    if !v.is_null() {
                        function.insert(key.clone(), v.clone());
                    }
                }
                other => dropped.add(format!("tools[].{other}")),
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` in chat's shape, `None` when it names a built-in tool (left out).
fn tool_choice(choice: &Value, out: &Map<String, Value>, dropped: &mut Dropped) -> Option<Value> {
    let named = |name: &str| {
        // A forced function that is not among the tools sent would be refused.
        let known = out
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| t["function"]["name"] == name);
        known.then(|| json!({"type": "function", "function": {"name": name}}))
    };
    let pivot = match choice {
        Value::Null => return None,
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Some(choice.clone())
        }
        Value::Object(_) => match (type_of(choice), str_of(choice, "name")) {
            ("function", Some(name)) => named(name),
            ("allowed_tools", _) => {
                let mode = str_of(choice, "mode").unwrap_or("auto");
                dropped.add("tool_choice.tools");
                Some(Value::String(
                    if mode == "required" {
                        "required"
                    } else {
                        "auto"
                    }
                    .into(),
                ))
            }
            _ => None,
        },
        _ => None,
    };
    if pivot.is_none() {
        dropped.add(format!("tool_choice ({})", type_of(choice)));
    }
    pivot
}

/// `text.format` → `response_format`; `text.verbosity` is left out.
fn text(v: &Value, out: &mut Map<String, Value>, dropped: &mut Dropped) {
    for (key, value) in v.as_object().into_iter().flatten() {
        match key.as_str() {
            "format" => match type_of(value) {
                "json_schema" => {
                    let mut schema = Map::new();
                    schema.insert(
                        "name".into(),
                        value
                            .get("name")
                            .cloned()
                            .unwrap_or_else(|| "response".into()),
                    );
                    for k in ["description", "schema", "strict"] {
                        if let Some(x) = value.get(k).filter(|x| !x.is_null()) {
                            schema.insert(k.into(), x.clone());
                        }
                    }
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": schema}),
                    );
                }
                "json_object" => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                "text" => {}
                other => dropped.add(format!("text.format ({other})")),
            },
            other => {
                if !value.is_null() {
                    dropped.add(format!("text.{other}"));
                }
            }
        }
    }
}

/// `reasoning.effort` → `reasoning_effort`; `summary` is left out (the pivot's reasoning
/// comes back as a summary whatever was asked).
fn reasoning(v: &Value, out: &mut Map<String, Value>, dropped: &mut Dropped) {
    for (key, value) in v.as_object().into_iter().flatten() {
        match (key.as_str(), value) {
            ("effort", Value::String(e)) => {
                out.insert("reasoning_effort".into(), e.as_str().into());
            }
            (_, Value::Null) => {}
            (other, _) => dropped.add(format!("reasoning.{other}")),
        }
    }
}

/// Resolves `previous_response_id` for a store: puts the earlier response's input items and
/// then its output items in front of this request's `input` (a string input becomes a user
/// message item first) and removes `previous_response_id`. The earlier `instructions` are
/// not carried over, as OpenAI documents.
pub fn prepend_items(
    body: &mut Map<String, Value>,
    earlier_input: impl IntoIterator<Item = Value>,
    earlier_output: impl IntoIterator<Item = Value>,
) {
    let mut items: Vec<Value> = earlier_input.into_iter().chain(earlier_output).collect();
    match body.remove("input") {
        Some(Value::String(s)) => {
            items.push(json!({"type": "message", "role": "user", "content": s}));
        }
        Some(Value::Array(list)) => items.extend(list),
        Some(Value::Null) | None => {}
        // Not an input: left for `chat_request` to refuse.
        Some(other) => {
            body.insert("input".into(), other);
            return;
        }
    }
    body.remove("previous_response_id");
    body.insert("input".into(), Value::Array(items));
}
