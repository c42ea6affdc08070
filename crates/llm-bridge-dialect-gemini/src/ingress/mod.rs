//! Gemini's own API in front of any provider: [`GeminiIngress`], mounted by the binary.
//!
//! | Gemini | pivot | |
//! |---|---|---|
//! | `POST …/models/{model}:generateContent` | a chat completion | `{model}` is the gateway's model name (`provider/model` or a route) |
//! | `POST …/models/{model}:streamGenerateContent?alt=sse` | a streamed chat completion | text and thoughts as they come; function calls whole, with the finish reason and `usageMetadata`, in the last event |
//! | `POST …/models/{model}:countTokens` | counted by the gateway (or by a `gemini` target) | `{"totalTokens": n}` |
//! | `POST …/models/{model}:embedContent`, `:batchEmbedContents` | `/v1/embeddings` | `outputDimensionality` → `dimensions`, `taskType` → `task_type` |
//! | `GET …/models`, `GET …/models/{model}` | the models the key may use | |
//!
//! Requests: `systemInstruction` → a system message; `contents` → user / assistant / tool
//! messages (text; `inlineData` images as data URLs, other data as files; `fileData` by URI;
//! `functionCall` → `tool_calls` with Gemini's id or `call_<n>`, `thoughtSignature` kept as
//! `extra_content.google.thought_signature`; `functionResponse` → a tool message answering the
//! call of that id, else the oldest open call of that name); `tools[].functionDeclarations` →
//! function tools (OpenAPI `parameters` types lower-cased, `parametersJsonSchema` as is);
//! `toolConfig.functionCallingConfig` → `tool_choice`; `generationConfig` → `temperature`,
//! `top_p`, `max_tokens`, `stop`, `n`, penalties, `seed`, `response_format`. Thoughts of
//! earlier turns, `topK`, `thinkingConfig`, `safetySettings`, `cachedContent` and built-in tools
//! are left out (with a debug log): a translated target cannot honour them.
//!
//! Answers: `reasoning_content` → a `thought: true` part, `content` → a text part,
//! `tool_calls` → `functionCall` parts (arguments parsed back into `args`); `finish_reason`
//! `stop`/`tool_calls` → `STOP`, `length` → `MAX_TOKENS`, `content_filter` → `SAFETY`, others
//! → `OTHER`; `usage` → `usageMetadata`. Errors: `{"error": {"code", "message", "status"}}`
//! with Google's status names.

mod request;
mod response;

use bytes::Bytes;
use llm_bridge_core::{
    Call, Endpoint, Error, Ingress, IngressRequest, IngressStream, ModelKind, NativeMeter, Result,
    Usage,
};
use serde_json::{Value, json};

pub use request::{chat_request, embeddings_request};
pub use response::{EventWriter, embeddings_answer, error_body, generate_response};

/// Gemini's API, as the gateway mounts it. See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct GeminiIngress;

/// Path prefixes of Gemini's model endpoints: `v1beta` (the SDKs' default) and `v1`.
const PREFIXES: [&str; 2] = ["/v1beta/models/", "/v1/models/"];

/// `%XX` escapes decoded (model names in paths come escaped from some clients).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The endpoint a Gemini path names, if it names one.
pub fn endpoint(path: &str) -> Option<Endpoint> {
    let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    let (model, method) = rest.rsplit_once(':')?;
    let model = percent_decode(model);
    let model = model.strip_prefix("models/").unwrap_or(&model).to_owned();
    if model.is_empty() {
        return None;
    }
    let (call, native) = match method {
        "generateContent" => (Call::Generate { stream: false }, "generateContent"),
        "streamGenerateContent" => (Call::Generate { stream: true }, "streamGenerateContent"),
        "countTokens" => (Call::CountTokens, "countTokens"),
        "embedContent" => (Call::Embed { batch: false }, "embedContent"),
        "batchEmbedContents" => (Call::Embed { batch: true }, "batchEmbedContents"),
        _ => return None,
    };
    Some(Endpoint {
        model,
        call,
        native,
    })
}

/// Usage from a `usageMetadata` object.
fn usage_of(meta: &Value) -> Option<Usage> {
    let prompt = meta.get("promptTokenCount")?.as_u64()?
        + meta["toolUsePromptTokenCount"].as_u64().unwrap_or(0);
    let thoughts = meta["thoughtsTokenCount"].as_u64().unwrap_or(0);
    let completion = meta["candidatesTokenCount"].as_u64().unwrap_or(0) + thoughts;
    let mut usage = Usage::new(prompt, completion);
    usage.reasoning_tokens = thoughts;
    usage.cached_tokens = meta["cachedContentTokenCount"].as_u64().unwrap_or(0);
    Some(usage)
}

fn model_object(id: &str, kind: ModelKind) -> Value {
    let methods = match kind {
        ModelKind::Chat => json!(["generateContent", "streamGenerateContent", "countTokens"]),
        ModelKind::Embedding => json!(["embedContent", "batchEmbedContents"]),
    };
    json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "llm-bridge",
        "displayName": id,
        "supportedGenerationMethods": methods,
    })
}

impl Ingress for GeminiIngress {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn path(&self) -> &'static str {
        "/v1beta/models"
    }

    fn endpoint(&self, path: &str) -> Option<Endpoint> {
        endpoint(path)
    }

    fn models_path(&self) -> Option<&'static str> {
        Some("/v1beta/models")
    }

    fn request(&self, _body: &[u8]) -> Result<IngressRequest> {
        Err(Error::invalid_request(
            "name the model and the method in the path: POST /v1beta/models/{model}:generateContent",
        ))
    }

    fn request_at(&self, body: &[u8], endpoint: &Endpoint) -> Result<IngressRequest> {
        let stream = matches!(endpoint.call, Call::Generate { stream: true });
        chat_request(body, &endpoint.model, stream)
    }

    fn embeddings_request(&self, body: &[u8], endpoint: &Endpoint) -> Result<Bytes> {
        let batch = matches!(endpoint.call, Call::Embed { batch: true });
        embeddings_request(body, &endpoint.model, batch)
    }

    fn embeddings_answer(&self, answer: &[u8], endpoint: &Endpoint) -> Result<Bytes> {
        let batch = matches!(endpoint.call, Call::Embed { batch: true });
        embeddings_answer(answer, batch)
    }

    fn models_answer(&self, models: &[(String, ModelKind)], one: bool) -> Bytes {
        let list: Vec<Value> = models.iter().map(|(id, k)| model_object(id, *k)).collect();
        let body = match (one, list.first()) {
            (true, Some(model)) => model.clone(),
            _ => json!({ "models": list }),
        };
        Bytes::from(body.to_string())
    }

    fn response(&self, completion: &[u8], model: &str, _request: &[u8]) -> Result<Bytes> {
        generate_response(completion, model)
    }

    fn stream(&self, model: &str, _request: &[u8]) -> Box<dyn IngressStream> {
        Box::new(EventWriter::new(model))
    }

    fn error(&self, error: &Error) -> (u16, Bytes) {
        (error.status(), Bytes::from(error_body(error).to_string()))
    }

    fn count_tokens_answer(&self, input_tokens: u64) -> Bytes {
        Bytes::from(format!("{{\"totalTokens\":{input_tokens}}}"))
    }

    fn native_usage(&self, body: &[u8]) -> Option<Usage> {
        let value: Value = serde_json::from_slice(body).ok()?;
        usage_of(value.get("usageMetadata")?)
    }

    fn native_meter(&self) -> Box<dyn NativeMeter> {
        Box::new(GeminiMeter::default())
    }
}

/// Reads usage from a forwarded `streamGenerateContent` stream: the last `usageMetadata`
/// seen; the answer is complete once an event carried a `finishReason`. Only `data:` lines
/// that mention either are parsed.
#[derive(Default)]
pub struct GeminiMeter {
    partial: Vec<u8>,
    usage: Option<Usage>,
    finished: bool,
}

impl GeminiMeter {
    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        let (usage, finish) = (has(b"\"usageMetadata\""), has(b"\"finishReason\""));
        if !usage && !finish {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
            return;
        };
        if let Some(u) = value.get("usageMetadata").and_then(usage_of) {
            self.usage = Some(u);
        }
        if value["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c.get("finishReason").is_some())
        {
            self.finished = true;
        }
    }
}

impl NativeMeter for GeminiMeter {
    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line(line);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests;
