//! OpenAI chat request → Gemini `GenerateContentRequest`. Pure: no I/O, so tests call it
//! directly. Every rejection is a 400 the client can fix, naming the parameter at fault.

use bytes::Bytes;
use llm_bridge_core::{ChatRequest, Error, Result};
use serde_json::{Map, Value};

use crate::errors::bad;
use crate::messages::contents;
use crate::wire::{
    FunctionCallingConfig, FunctionDeclaration, GenerateContentRequest, GenerationConfig,
    ThinkingConfig, Tool, ToolConfig,
};

/// Parameters read by the translation below or by the gateway (`stream*`).
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "reasoning_effort",
    "tools",
    "tool_choice",
    "logprobs",
    "top_logprobs",
    "modalities",
    "audio",
    "logit_bias",
    "functions",
    "function_call",
    "web_search_options",
];

/// The Gemini request body for an OpenAI chat request, serialised. `model` is the upstream
/// model name (it decides between thinking levels and budgets).
pub fn request_body(request: &ChatRequest, model: &str) -> Result<Bytes> {
    let body = translate(request, model)?;
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("could not serialise the Gemini request: {e}")))
}

pub(crate) fn translate(request: &ChatRequest, model: &str) -> Result<GenerateContentRequest> {
    let body = request.body();
    for key in body.keys() {
        if !TRANSLATED.contains(&key.as_str()) {
            // Ignoring these cannot change the answer (user, metadata, store, service_tier,
            // parallel_tool_calls, prediction, …); see the table in the crate docs.
            tracing::debug!(param = %key, "the gemini adapter ignores this parameter");
        }
    }
    reject_unsupported(body)?;
    let gemini3 = is_gemini3(model);
    let mut out = GenerateContentRequest {
        generation_config: generation_config(body, gemini3)?,
        ..GenerateContentRequest::default()
    };
    let (contents, system) = contents(&request.typed_messages()?, gemini3)?;
    out.contents = contents;
    out.system_instruction = system;
    if let Some(tools) = nonnull(body, "tools") {
        out.tools = tools_of(tools)?;
    }
    if let Some(choice) = nonnull(body, "tool_choice") {
        out.tool_config = Some(tool_config(choice)?);
    }
    Ok(out)
}

fn nonnull<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// Parameters whose silent loss would change the answer.
fn reject_unsupported(body: &Map<String, Value>) -> Result<()> {
    if body.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "logprobs",
            "'logprobs' is not supported by the gemini adapter",
        ));
    }
    if let Some(modalities) = nonnull(body, "modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(bad(
                "modalities",
                "the gemini adapter answers with text only: 'modalities' must be [\"text\"]",
            ));
        }
    }
    if nonnull(body, "audio").is_some() {
        return Err(bad(
            "audio",
            "audio output is not supported by the gemini adapter",
        ));
    }
    if nonnull(body, "logit_bias").is_some_and(|b| b.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(bad(
            "logit_bias",
            "'logit_bias' is not supported by the gemini adapter",
        ));
    }
    for key in ["functions", "function_call"] {
        if nonnull(body, key).is_some() {
            return Err(bad(
                key,
                format!(
                    "'{key}' is deprecated and not supported by the gemini adapter: use 'tools' and 'tool_choice'"
                ),
            ));
        }
    }
    if nonnull(body, "web_search_options").is_some() {
        return Err(bad(
            "web_search_options",
            "'web_search_options' is not supported by the gemini adapter",
        ));
    }
    Ok(())
}

/// Gemini 3 and later take a thinking level and need thought signatures on every call.
fn is_gemini3(model: &str) -> bool {
    model
        .find("gemini-")
        .map(|i| &model[i + "gemini-".len()..])
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        })
        .is_some_and(|major| major >= 3)
}

fn number(body: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match nonnull(body, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("'{key}' must be a number"))),
    }
}

fn integer(body: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    match nonnull(body, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("'{key}' must be an integer"))),
    }
}

fn count(body: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match nonnull(body, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("'{key}' must be a non-negative integer"))),
    }
}

fn generation_config(body: &Map<String, Value>, gemini3: bool) -> Result<GenerationConfig> {
    let mut config = GenerationConfig {
        temperature: number(body, "temperature")?,
        top_p: number(body, "top_p")?,
        top_k: count(body, "top_k")?,
        seed: integer(body, "seed")?,
        presence_penalty: number(body, "presence_penalty")?,
        frequency_penalty: number(body, "frequency_penalty")?,
        // The newer name wins when a client sends both.
        max_output_tokens: match count(body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => count(body, "max_tokens")?,
        },
        ..GenerationConfig::default()
    };
    match count(body, "n")? {
        Some(0) => return Err(bad("n", "'n' must be at least 1")),
        Some(n) if n > 1 => config.candidate_count = Some(n),
        _ => {}
    }
    match nonnull(body, "stop") {
        None => {}
        Some(Value::String(s)) => config.stop_sequences = vec![s.clone()],
        Some(Value::Array(items)) => {
            for item in items {
                let s = item
                    .as_str()
                    .ok_or_else(|| bad("stop", "'stop' must be a string or a list of strings"))?;
                config.stop_sequences.push(s.to_owned());
            }
        }
        Some(_) => return Err(bad("stop", "'stop' must be a string or a list of strings")),
    }
    if let Some(format) = nonnull(body, "response_format") {
        response_format(format, &mut config)?;
    }
    if let Some(effort) = nonnull(body, "reasoning_effort") {
        config.thinking_config = Some(thinking(effort, gemini3)?);
    }
    Ok(config)
}

fn response_format(format: &Value, config: &mut GenerationConfig) -> Result<()> {
    const PARAM: &str = "response_format";
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => config.response_mime_type = Some("application/json".into()),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad(
                        "response_format.json_schema.schema",
                        "response_format of type json_schema needs json_schema.schema (an object)",
                    )
                })?;
            config.response_mime_type = Some("application/json".into());
            config.response_json_schema = Some(schema.clone());
        }
        Some(other) => {
            return Err(bad(
                PARAM,
                format!("response_format type '{other}' is not supported by the gemini adapter"),
            ));
        }
        None => return Err(bad(PARAM, "response_format needs a 'type'")),
    }
    Ok(())
}

/// `reasoning_effort` → `thinkingConfig`: a level for Gemini 3, a token budget for 2.x
/// (the budgets Google's own OpenAI-compatible endpoint uses). Thought summaries are asked
/// for whenever thinking is on, so that they come back as `reasoning_content`.
fn thinking(effort: &Value, gemini3: bool) -> Result<ThinkingConfig> {
    let effort = effort.as_str().unwrap_or_default();
    let (level, budget) = match effort {
        "none" => ("minimal", 0),
        "minimal" => ("minimal", 512),
        "low" => ("low", 1024),
        "medium" => ("medium", 8192),
        "high" => ("high", 24576),
        "xhigh" => ("high", 32768),
        _ => {
            return Err(bad(
                "reasoning_effort",
                "'reasoning_effort' must be one of none, minimal, low, medium, high, xhigh",
            ));
        }
    };
    let mut config = ThinkingConfig {
        include_thoughts: Some(effort != "none"),
        ..ThinkingConfig::default()
    };
    if gemini3 {
        config.thinking_level = Some(level);
    } else {
        config.thinking_budget = Some(budget);
    }
    Ok(config)
}

fn tools_of(tools: &Value) -> Result<Vec<Tool>> {
    let list = tools
        .as_array()
        .ok_or_else(|| bad("tools", "'tools' must be a list"))?;
    let mut declarations = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let param = format!("tools[{i}]");
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(bad(
                param,
                format!("tool type '{kind}' is not supported by the gemini adapter"),
            ));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| bad(&param, format!("{param}.function is required")))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("{param}.function.name"), "a tool needs a name"))?;
        declarations.push(FunctionDeclaration {
            name: name.to_owned(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters_json_schema: function.get("parameters").filter(|p| !p.is_null()).cloned(),
        });
    }
    if declarations.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Tool {
        function_declarations: declarations,
    }])
}

fn tool_config(choice: &Value) -> Result<ToolConfig> {
    const PARAM: &str = "tool_choice";
    let (mode, names) = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => ("AUTO", Vec::new()),
            "none" => ("NONE", Vec::new()),
            "required" => ("ANY", Vec::new()),
            other => {
                return Err(bad(
                    PARAM,
                    format!("tool_choice '{other}' is not supported"),
                ));
            }
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(PARAM, "tool_choice.function.name is required"))?;
                ("ANY", vec![name.to_owned()])
            }
            Some("allowed_tools") => {
                let allowed = o.get("allowed_tools");
                let names = allowed
                    .and_then(|a| a.get("tools"))
                    .and_then(Value::as_array)
                    .map(|tools| {
                        tools
                            .iter()
                            .filter_map(|t| t.get("function")?.get("name")?.as_str())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                // VALIDATED: calls restricted to the names, text still allowed (= "auto").
                match allowed.and_then(|a| a.get("mode")).and_then(Value::as_str) {
                    Some("required") => ("ANY", names),
                    _ => ("VALIDATED", names),
                }
            }
            _ => return Err(bad(PARAM, "tool_choice has an unsupported type")),
        },
        _ => return Err(bad(PARAM, "tool_choice must be a string or an object")),
    };
    Ok(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: names,
        },
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
