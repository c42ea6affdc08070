//! Pivot chat request → Anthropic Messages request (see the crate docs for the table).

use llm_bridge_core::{ChatRequest, Error, Result};
use serde_json::{Map, Value, json};

use crate::egress::content::{assistant_blocks, tool_result_block, user_blocks};

/// `max_tokens` when neither the request nor the model's settings give one: every Claude
/// model can produce at least this much, and Anthropic requires the field.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The tool that carries a `response_format` answer: Anthropic is made to call it, and its
/// input comes back to the client as the message text.
pub const JSON_OUTPUT_TOOL: &str = "llm_bridge_json_output";

/// The thinking budget for a `reasoning_effort`: `none` → no thinking, `minimal` → 1024
/// (Anthropic's minimum), `low` → 2048, `medium` → 8192, `high` → 24576, `xhigh` → 32768.
/// `None` for `none`; `Err` for a value OpenAI does not define.
pub fn thinking_budget(effort: &str) -> Result<Option<u64>> {
    Ok(Some(match effort {
        "none" => return Ok(None),
        "minimal" => 1024,
        "low" => 2048,
        "medium" => 8192,
        "high" => 24576,
        "xhigh" => 32768,
        other => {
            return Err(bad(
                "reasoning_effort",
                format!(
                    "reasoning_effort '{other}' is not one of none, minimal, low, medium, high, xhigh"
                ),
            ));
        }
    }))
}

pub(crate) fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::invalid_request(message).with_param(param)
}

/// Translates a pivot request into the body of `POST /v1/messages` for `upstream_model`.
/// `default_max_tokens` is used when the request sets neither `max_completion_tokens` nor
/// `max_tokens` (the model's ceiling when known, else [`DEFAULT_MAX_TOKENS`]). A request
/// Anthropic cannot honour (audio, `n` > 1, `logprobs`, a tool that is not a function) is an
/// `Err` of kind `InvalidRequest`.
pub fn messages_request(
    chat: &ChatRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Value> {
    let body = chat.body();
    refuse_unsupported(body)?;
    let (system, messages) = conversation(chat)?;

    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let mut max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));

    let mut tools = function_tools(body)?;
    let mut choice = tool_choice(body)?;
    if let Some(schema) = response_schema(body)? {
        tools.push(json!({
            "name": JSON_OUTPUT_TOOL,
            "description": "Give your final answer as the input of this tool: it is the JSON document the user asked for.",
            "input_schema": schema,
        }));
        // Only the answer tool when the client has no tools of its own (or forbade them);
        // with tools, any tool call, the answer tool included.
        let client_tools = tools.len() > 1;
        let named = choice
            .as_ref()
            .is_some_and(|c| c.get("type").and_then(Value::as_str) == Some("tool"));
        let forbidden = choice
            .as_ref()
            .is_some_and(|c| c.get("type").and_then(Value::as_str) == Some("none"));
        if !client_tools || forbidden {
            choice = Some(json!({"type": "tool", "name": JSON_OUTPUT_TOOL}));
        } else if !named {
            choice = Some(json!({"type": "any"}));
        }
    }
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    // Anthropic refuses forced tool use together with thinking; the forced tool wins.
    let forced = choice
        .as_ref()
        .is_some_and(|c| matches!(c.get("type").and_then(Value::as_str), Some("any" | "tool")));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }

    let budget = match body.get("reasoning_effort") {
        None | Some(Value::Null) => None,
        Some(Value::String(effort)) => thinking_budget(effort)?,
        Some(_) => return Err(bad("reasoning_effort", "reasoning_effort must be a string")),
    };
    let thinking = budget.filter(|_| !forced);
    if let Some(budget) = thinking {
        // Anthropic counts thinking inside max_tokens and wants room left for the answer:
        // the answer keeps the room the client asked for.
        if max_tokens <= budget {
            max_tokens = budget.saturating_add(max_tokens);
        }
    }
    out.insert("max_tokens".into(), max_tokens.into());
    if let Some(budget) = thinking {
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        // Thinking accepts neither a temperature nor top_p/top_k changes.
        if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
            // OpenAI's range is 0–2, Anthropic's 0–1.
            out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        for key in ["top_p", "top_k"] {
            if let Some(v) = body.get(key).filter(|v| v.is_number()) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    let stops = stop_sequences(body.get("stop"));
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), stops.into());
    }
    if let Some(user) = body
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if chat.stream() {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

fn refuse_unsupported(body: &Map<String, Value>) -> Result<()> {
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad(
            "n",
            "this provider gives one choice per request (n > 1)",
        ));
    }
    if body.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(bad("logprobs", "this provider does not return logprobs"));
    }
    let audio = body
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x != "text"));
    if audio || body.get("audio").is_some_and(|a| !a.is_null()) {
        return Err(bad("modalities", "this provider answers with text only"));
    }
    Ok(())
}

/// System text blocks and alternating turns. System and developer messages, wherever they
/// are, become the top-level `system` in order; consecutive turns of one role are merged
/// (tool results join the user turn that follows them).
fn conversation(chat: &ChatRequest) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in chat.messages().iter().enumerate() {
        let Some(m) = m.as_object() else { continue };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                for text in texts(m.get("content"), i)? {
                    system.push(json!({"type": "text", "text": text}));
                }
                continue;
            }
            "user" => ("user", user_blocks(m.get("content"), i)?),
            "assistant" => ("assistant", assistant_blocks(m, i)?),
            "tool" => ("user", vec![tool_result_block(m, i)?]),
            other => {
                return Err(bad(
                    format!("messages[{i}].role"),
                    format!("messages[{i}].role '{other}' is not supported by this provider"),
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// The non-empty texts of a system message's content.
fn texts(content: Option<&Value>, i: usize) -> Result<Vec<String>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok((!s.is_empty()).then(|| s.clone()).into_iter().collect()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(_) => Err(bad(
            format!("messages[{i}].content"),
            format!("messages[{i}].content must be a string or a list of parts"),
        )),
    }
}

fn function_tools(body: &Map<String, Value>) -> Result<Vec<Value>> {
    let Some(list) = body.get("tools").filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(bad("tools", "tools must be a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, tool) in list.iter().enumerate() {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        let function = tool.get("function").filter(|_| kind == "function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(f), Some(name)) = (function, name) else {
            return Err(bad(
                format!("tools[{j}]"),
                format!(
                    "tools[{j}]: only function tools with a name are supported by this provider"
                ),
            ));
        };
        let mut t = Map::new();
        t.insert("name".into(), name.into());
        if let Some(d) = f.get("description").and_then(Value::as_str) {
            t.insert("description".into(), d.into());
        }
        let schema = f
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        t.insert("input_schema".into(), schema);
        out.push(Value::Object(t));
    }
    Ok(out)
}

fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>> {
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(bad(
                    "tool_choice",
                    format!("tool_choice '{other}' is not one of auto, none, required"),
                ));
            }
        },
        Some(obj @ Value::Object(_)) => {
            let kind = obj.get("type").and_then(Value::as_str);
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (kind, name) {
                (Some("function"), Some(name)) => json!({"type": "tool", "name": name}),
                // The allowed list cannot be expressed; its mode can.
                (Some("allowed_tools"), _) => {
                    let mode = obj
                        .get("allowed_tools")
                        .and_then(|a| a.get("mode"))
                        .and_then(Value::as_str);
                    if mode == Some("required") {
                        json!({"type": "any"})
                    } else {
                        json!({"type": "auto"})
                    }
                }
                _ => return Err(bad("tool_choice", "tool_choice names no function")),
            }
        }
        Some(_) => {
            return Err(bad(
                "tool_choice",
                "tool_choice must be a string or an object",
            ));
        }
    };
    Ok(Some(choice))
}

/// The JSON schema a `response_format` asks for: `json_schema` → its schema, `json_object`
/// → any object, `text` → none.
fn response_schema(body: &Map<String, Value>) -> Result<Option<Value>> {
    let Some(format) = body.get("response_format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => Ok(Some(
            format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        )),
        _ => Err(bad(
            "response_format",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

fn stop_sequences(stop: Option<&Value>) -> Vec<Value> {
    let list: Vec<&str> = match stop {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // Anthropic rejects sequences made only of whitespace.
    list.into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(Value::from)
        .collect()
}
