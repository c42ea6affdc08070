//! Anthropic Messages request → pivot chat request (see the crate docs for the table).

use llm_bridge_core::{ChatRequest, Error, Result};
use serde_json::{Map, Value, json};

use crate::thinking;

/// A Messages request translated to the pivot, with the names of what a chat target cannot
/// honour and was left out (`cache_control`, `context_management`, `top_k`, server tools, …),
/// for the caller to log at debug level. Leaving them out is never an error.
#[derive(Debug, Clone)]
pub struct TranslatedRequest {
    /// The pivot request.
    pub request: ChatRequest,
    /// Fields and blocks left out, each named once (`tools[2] (web_search_20250305)`).
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

    /// Notes the `cache_control` of a block, which only Anthropic's cache understands.
    fn block_extras(&mut self, block: &Value) {
        if block.get("cache_control").is_some() {
            self.add("cache_control");
        }
    }
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::invalid_request(message).with_param(param)
}

/// `thinking.budget_tokens` → `reasoning_effort`: below 4096 `low`, below 16384 `medium`,
/// else `high` (so each effort's budget, [`crate::thinking_budget`], maps back to itself).
pub fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..4096 => "low",
        4096..16384 => "medium",
        _ => "high",
    }
}

/// Translates the body of `POST /v1/messages` into a pivot request. A body that is not a
/// Messages request (not JSON, no `model`, `messages` not a list, a message without a
/// role) is an `Err` of kind `InvalidRequest`.
pub fn chat_request(messages_body: &[u8]) -> Result<TranslatedRequest> {
    let value: Value = serde_json::from_slice(messages_body)
        .map_err(|e| Error::invalid_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(Error::invalid_request("request body must be a JSON object"));
    };
    let mut dropped = Dropped::default();
    let mut out = Map::new();
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        if let Some(text) = joined_text(system, "system", &mut dropped)? {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    match body.get("messages") {
        Some(Value::Array(list)) => {
            for (i, m) in list.iter().enumerate() {
                translate_message(m, i, &mut messages, &mut dropped)?;
            }
        }
        Some(_) => return Err(bad("messages", "messages must be a list")),
        None => return Err(bad("messages", "missing required parameter: 'messages'")),
    }
    for (key, v) in &body {
        match key.as_str() {
            "model" => {
                out.insert("model".into(), v.clone());
                out.insert("messages".into(), Value::Null);
            }
            "max_tokens" | "temperature" | "top_p" | "stream" => {
                out.insert(key.clone(), v.clone());
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "metadata" => {
                for (k, mv) in v.as_object().into_iter().flatten() {
                    match (k.as_str(), mv) {
                        ("user_id", Value::String(user)) => {
                            out.insert("user".into(), user.as_str().into());
                        }
                        _ => dropped.add(format!("metadata.{k}")),
                    }
                }
            }
            "system" | "messages" | "tools" | "tool_choice" | "thinking" | "output_config"
            | "output_format" => {}
            other => dropped.add(other),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    let tools = tools(body.get("tools"), &mut dropped)?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = body.get("tool_choice") {
            tool_choice(choice, &mut out)?;
        }
    } else if body.get("tool_choice").is_some() {
        dropped.add("tool_choice");
    }
    reasoning(&body, &mut out, &mut dropped);
    let request = ChatRequest::from_value(Value::Object(out))?;
    Ok(TranslatedRequest {
        request,
        dropped: dropped.0,
    })
}

/// The text of a `system` field or message: a string, or text blocks joined by blank lines.
fn joined_text(content: &Value, param: &str, dropped: &mut Dropped) -> Result<Option<String>> {
    match content {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for block in blocks {
                dropped.block_extras(block);
                match block.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(t),
                    None => dropped.add(format!("{param} ({})", type_of(block))),
                }
            }
            Ok((!texts.is_empty()).then(|| texts.join("\n\n")))
        }
        _ => Err(bad(
            param,
            format!("{param} must be a string or a list of text blocks"),
        )),
    }
}

fn type_of(block: &Value) -> &str {
    block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("untyped")
}

fn translate_message(
    m: &Value,
    i: usize,
    out: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<()> {
    let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
        bad(
            format!("messages[{i}].role"),
            format!("messages[{i}].role is required and must be a string"),
        )
    })?;
    let content = m.get("content").unwrap_or(&Value::Null);
    let blocks: Vec<Value> = match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(list) => list.clone(),
        Value::Null => Vec::new(),
        _ => {
            return Err(bad(
                format!("messages[{i}].content"),
                format!("messages[{i}].content must be a string or a list of blocks"),
            ));
        }
    };
    match role {
        "user" => user_message(&blocks, i, out, dropped),
        "assistant" => out.push(assistant_message(&blocks, i, dropped)),
        // Newer clients put system blocks between turns; the pivot allows them anywhere.
        "system" => {
            if let Some(text) = joined_text(content, &format!("messages[{i}]"), dropped)? {
                out.push(json!({"role": "system", "content": text}));
            }
        }
        other => {
            return Err(bad(
                format!("messages[{i}].role"),
                format!("messages[{i}].role '{other}' is not user or assistant"),
            ));
        }
    }
    Ok(())
}

/// A user turn: its tool results first, as `tool` messages (they must follow the assistant's
/// calls), then its other content as one user message.
fn user_message(blocks: &[Value], i: usize, out: &mut Vec<Value>, dropped: &mut Dropped) {
    let mut parts = Vec::new();
    for (k, block) in blocks.iter().enumerate() {
        dropped.block_extras(block);
        if type_of(block) == "tool_result" {
            let id = block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut text = Vec::new();
            match block.get("content") {
                Some(Value::String(s)) => text.push(s.clone()),
                Some(Value::Array(inner)) => {
                    for b in inner {
                        dropped.block_extras(b);
                        match part_of(b) {
                            Some(p) if p["type"] == "text" => {
                                text.push(p["text"].as_str().unwrap_or_default().to_owned());
                            }
                            // Chat tool messages hold text only: images go to the user
                            // message that follows the results.
                            Some(p) => parts.push(p),
                            None => dropped.add(format!("tool_result content ({})", type_of(b))),
                        }
                    }
                }
                _ => {}
            }
            out.push(json!({"role": "tool", "tool_call_id": id, "content": text.join("\n")}));
            continue;
        }
        match part_of(block) {
            Some(p) => parts.push(p),
            None => dropped.add(format!("messages[{i}].content[{k}] ({})", type_of(block))),
        }
    }
    if parts.is_empty() {
        return;
    }
    let content = match parts.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    out.push(json!({"role": "user", "content": content}));
}

/// A user content block as a chat content part: text, image, PDF or text document.
fn part_of(block: &Value) -> Option<Value> {
    let source = block.get("source");
    let src = |k: &str| source.and_then(|s| s.get(k)).and_then(Value::as_str);
    match (type_of(block), src("type")) {
        ("text", _) => {
            let text = block.get("text").and_then(Value::as_str)?;
            Some(json!({"type": "text", "text": text}))
        }
        ("image", Some("base64")) => {
            let url = format!("data:{};base64,{}", src("media_type")?, src("data")?);
            Some(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        ("image", Some("url")) => {
            Some(json!({"type": "image_url", "image_url": {"url": src("url")?}}))
        }
        ("document", Some("base64")) => {
            let data = format!("data:{};base64,{}", src("media_type")?, src("data")?);
            let mut file = json!({"file_data": data});
            if let Some(title) = block.get("title").and_then(Value::as_str) {
                file["filename"] = title.into();
            }
            Some(json!({"type": "file", "file": file}))
        }
        ("document", Some("text")) => Some(json!({"type": "text", "text": src("data")?})),
        _ => None,
    }
}

/// An assistant turn: text → `content`, thinking → `reasoning_content` plus the exact
/// blocks (see [`crate::thinking`]), `tool_use` → `tool_calls`.
fn assistant_message(blocks: &[Value], i: usize, dropped: &mut Dropped) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut calls = Vec::new();
    for (k, block) in blocks.iter().enumerate() {
        dropped.block_extras(block);
        let s = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default();
        match type_of(block) {
            "text" => text.push_str(s("text")),
            "thinking" => {
                reasoning.push_str(s("thinking"));
                // An unsigned block (reasoning this gateway relayed from another provider)
                // could never go back to Anthropic: only its text is kept.
                if !s("signature").is_empty() {
                    thinking_blocks.push(thinking::thinking_block(s("thinking"), s("signature")));
                }
            }
            "redacted_thinking" => thinking_blocks.push(thinking::redacted_block(s("data"))),
            "tool_use" => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": s("id"), "type": "function",
                    "function": {"name": s("name"), "arguments": input.to_string()}}));
            }
            other => dropped.add(format!("messages[{i}].content[{k}] ({other})")),
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        text.into()
    };
    m.insert("content".into(), content);
    if !reasoning.is_empty() {
        m.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        m.insert("tool_calls".into(), calls.into());
    }
    if !thinking_blocks.is_empty() {
        m.insert(
            "extra_content".into(),
            thinking::extra_content(thinking_blocks),
        );
    }
    Value::Object(m)
}

/// Custom tools → function tools; Anthropic's own tool types (web search, bash, text editor,
/// computer use, …) have no chat equivalent and are left out.
fn tools(list: Option<&Value>, dropped: &mut Dropped) -> Result<Vec<Value>> {
    let Some(list) = list.filter(|l| !l.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(bad("tools", "tools must be a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, tool) in list.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
        let Some(name) = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|_| kind == "custom")
        else {
            dropped.add(format!("tools[{j}] ({kind})"));
            continue;
        };
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        for (key, v) in tool.as_object().into_iter().flatten() {
            match key.as_str() {
                "name" | "type" => {}
                "description" | "strict" => {
                    function.insert(key.clone(), v.clone());
                }
                "input_schema" => {
                    function.insert("parameters".into(), v.clone());
                }
                other => dropped.add(format!("tools[].{other}")),
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<()> {
    let pivot = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name", "tool_choice of type tool needs a name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "tool_choice.type must be auto, any, tool or none",
            ));
        }
    };
    out.insert("tool_choice".into(), pivot);
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

/// `thinking` and `output_config` → `reasoning_effort` and `response_format`.
fn reasoning(body: &Map<String, Value>, out: &mut Map<String, Value>, dropped: &mut Dropped) {
    let thinking = body.get("thinking");
    let thinking_type = thinking.and_then(|t| t.get("type")).and_then(Value::as_str);
    let mut effort = match thinking_type {
        Some("enabled") => Some(effort_for_budget(
            thinking
                .and_then(|t| t.get("budget_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        )),
        // Anthropic's default effort for adaptive thinking is high.
        Some("adaptive") => Some("high"),
        _ => None,
    };
    if thinking.and_then(|t| t.get("display")).is_some() {
        dropped.add("thinking.display");
    }
    let mut format = body.get("output_format").filter(|f| !f.is_null());
    for (key, v) in body
        .get("output_config")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        match (key.as_str(), v.as_str()) {
            ("effort", Some("low" | "medium" | "high")) => effort = v.as_str(),
            // OpenAI's ceiling that every reasoning target accepts.
            ("effort", Some("max")) => effort = Some("high"),
            ("format", _) => format = Some(v),
            _ => dropped.add(format!("output_config.{key}")),
        }
    }
    if let Some(effort) = effort {
        out.insert("reasoning_effort".into(), effort.into());
    }
    if let Some(f) = format {
        match (f.get("type").and_then(Value::as_str), f.get("schema")) {
            (Some("json_schema"), Some(schema)) => {
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
                );
            }
            _ => dropped.add("output_config.format"),
        }
    }
}
