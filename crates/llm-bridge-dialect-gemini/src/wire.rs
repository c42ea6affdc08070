//! Gemini's JSON (Generative Language API `v1beta`), both directions.
//!
//! The field names follow the protos (`generative_service.proto`, `content.proto`) through the
//! proto3 JSON mapping: lowerCamelCase names, enums as strings. Request types only serialise
//! what was set. Response types deserialise leniently: unknown fields are ignored (Google adds
//! fields often), `null` reads as absent, counts may arrive as numbers or as strings (int64),
//! and enums stay strings so that a value newer than this code is kept, not rejected.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Shared by requests and responses

/// A turn: `user` or `model`, and its parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub parts: Vec<Part>,
}

/// One part of a turn. Proto `Part` is a oneof; every member is optional here so that a
/// part of a kind this code does not know still reads (as a part with nothing in it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque (base64 bytes in the proto); handed back to Gemini exactly as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_code: Option<ExecutableCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_execution_result: Option<CodeExecutionResult>,
}

impl Part {
    /// A text part.
    pub(crate) fn text(text: impl Into<String>) -> Part {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }

    /// Whether the model marked this part as its reasoning.
    pub(crate) fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }
}

/// Inline bytes (base64) with their MIME type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blob {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub data: String,
}

/// A file uploaded through Gemini's Files API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_uri: String,
}

/// A function call predicted by the model (or replayed to it in the history).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FunctionCall {
    /// Set by Gemini 3 on some calls; 2.x never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// A JSON object (proto `Struct`); absent when the function takes no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// The result of a function call, sent back to the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Must be a JSON object (proto `Struct`).
    #[serde(default)]
    pub response: Value,
}

/// Code the model wrote for the code-execution tool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExecutableCode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default)]
    pub code: String,
}

/// What running that code printed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CodeExecutionResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The body of `models/{model}:generateContent` and `:streamGenerateContent`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest {
    pub contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig,
}

/// Tools the model may call.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tool {
    pub function_declarations: Vec<FunctionDeclaration>,
}

/// One callable function; its parameters as full JSON Schema (`parametersJsonSchema`), so
/// that schemas clients write for OpenAI need no conversion to Gemini's OpenAPI subset.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

/// How the model may call tools.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

/// `mode` is `AUTO`, `ANY`, `NONE` or `VALIDATED`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionCallingConfig {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<String>,
}

/// Sampling and output settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// Full JSON Schema (`responseJsonSchema`), rather than the OpenAPI subset of
    /// `responseSchema`, for the same reason as `parametersJsonSchema`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig {
    fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

/// Thinking: a token budget (Gemini 2.x) or a level (Gemini 3), and whether to return
/// thought summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i64>,
    /// Not in the v1beta protos we have, but what the API takes for Gemini 3 models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<&'static str>,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// One `GenerateContentResponse`: a whole answer, or one event of a stream. `error` is set
/// instead when Gemini reports a failure inside a stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// One generated answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub finish_message: Option<String>,
    #[serde(default, deserialize_with = "count")]
    pub index: Option<u64>,
}

/// Why the prompt was blocked, if it was.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
    #[serde(default)]
    pub block_reason_message: Option<String>,
}

/// Token counts. `candidatesTokenCount` excludes thoughts (`thoughtsTokenCount`);
/// `promptTokenCount` includes cached tokens (`cachedContentTokenCount`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default, deserialize_with = "count")]
    pub prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub thoughts_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    pub total_token_count: Option<u64>,
}

/// `{"error": {"code", "message", "status", "details"}}` (google.rpc.Status).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: Option<Status>,
}

/// google.rpc.Status.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Status {
    #[serde(default, deserialize_with = "count")]
    pub code: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub details: Vec<Value>,
}

/// `null` reads as the default (an empty list).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A non-negative count: a JSON number, or a string of digits (proto3 JSON writes int64 so).
/// Anything else is an error: the caller reports the response as malformed.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                // Negative: meaningless as a count.
                Ok(Some(0))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f <= u64::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(D::Error::custom(format!("invalid count {n}"))),
                }
            }
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("invalid count {s:?}"))),
        Some(other) => Err(D::Error::custom(format!("invalid count {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responses_tolerate_unknown_fields_nulls_and_string_counts() {
        let r: GenerateContentResponse = serde_json::from_value(json!({
            "candidates": [{"content": {"parts": null, "role": "model"}, "index": "1",
                            "somethingNew": {"x": 1}, "finishReason": "SOMETHING_NEW"}],
            "usageMetadata": {"promptTokenCount": "12", "candidatesTokenCount": 3.0,
                              "totalTokenCount": -1},
            "newTopLevel": true
        }))
        .unwrap();
        let c = &r.candidates[0];
        assert_eq!(c.index, Some(1));
        assert!(c.content.as_ref().unwrap().parts.is_empty());
        assert_eq!(c.finish_reason.as_deref(), Some("SOMETHING_NEW"));
        let u = r.usage_metadata.unwrap();
        assert_eq!(u.prompt_token_count, Some(12));
        assert_eq!(u.candidates_token_count, Some(3));
        assert_eq!(u.total_token_count, Some(0));
        assert!(
            serde_json::from_value::<UsageMetadata>(json!({"promptTokenCount": "many"})).is_err()
        );
    }

    #[test]
    fn requests_serialise_only_what_is_set() {
        let r = GenerateContentRequest {
            contents: vec![Content {
                role: Some("user".into()),
                parts: vec![Part::text("hi")],
            }],
            ..GenerateContentRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        );
    }
}
