//! `adapter: gemini` — Google's native Gemini API (`models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`), for clients that keep speaking
//! OpenAI's chat completions.
//!
//! The client's OpenAI request gets the model's settings first (`max_tokens` ceiling,
//! `param_config`), then is translated ([`request_body`]); Gemini's answers are translated back
//! ([`completion`], [`ChunkTranslator`]); Gemini's errors become the gateway's ([`error_from_status`]).
//! The translation functions do no I/O, so they are tested on recorded traffic directly.
//!
//! # Request parameters
//!
//! | OpenAI | Gemini | |
//! |---|---|---|
//! | `system` / `developer` messages | `systemInstruction` | in order; a conversation of only instructions is sent as the user turn |
//! | `user` messages | `user` turns | text; `image_url` data URL → `inlineData`; Files API URL → `fileData`; other http(s) image URL → **400** (the gateway fetches nothing); `input_audio` → `inlineData` `audio/<format>`; `file.file_data` data URL → `inlineData`, `file_id` → **400** |
//! | `assistant` messages | `model` turns | text (and `refusal` parts); `tool_calls` → `functionCall` parts, arguments must be a JSON object; `reasoning_content` is not sent back |
//! | `tool` messages | `functionResponse` parts in a `user` turn | name found from the id of the assistant's call (else the message's `name`, else **400**); a JSON-object result is sent as is, anything else as `{"result": …}` |
//! | consecutive messages of one role | one turn | Gemini needs alternating turns and all results of parallel calls in one turn; empty text parts are dropped (Gemini rejects them) |
//! | `tools` (`function`) | `tools[].functionDeclarations` | `parameters` as full JSON Schema in `parametersJsonSchema`; other tool types → **400** |
//! | `tool_choice` | `toolConfig.functionCallingConfig` | `auto` → `AUTO`, `none` → `NONE`, `required` → `ANY`, a named function → `ANY` + `allowedFunctionNames`, `allowed_tools` → `VALIDATED` (or `ANY` when `required`) |
//! | `temperature`, `top_p`, `top_k`, `seed` | `temperature`, `topP`, `topK`, `seed` | |
//! | `max_completion_tokens` (else `max_tokens`) | `maxOutputTokens` | |
//! | `stop` | `stopSequences` | |
//! | `n` | `candidateCount` | each candidate is one choice |
//! | `presence_penalty`, `frequency_penalty` | `presencePenalty`, `frequencyPenalty` | |
//! | `response_format` | `responseMimeType` (+ `responseJsonSchema`) | `json_object` → `application/json`; `json_schema` → its `schema` as full JSON Schema; `text` → nothing |
//! | `reasoning_effort` | `thinkingConfig` | Gemini 3+: `thinkingLevel` (none/minimal → `minimal`, low, medium, high, xhigh → `high`); Gemini 2.x: `thinkingBudget` (none 0, minimal 512, low 1024, medium 8192, high 24576, xhigh 32768); `includeThoughts` unless `none`, so thoughts come back as `reasoning_content` |
//! | `stream`, `stream_options` | the endpoint | usage is always reported at the end of a stream; the gateway drops it for clients that did not ask |
//! | `logprobs: true` | — | **400**: the answer would lack what was asked for |
//! | `modalities` other than `["text"]`, `audio` | — | **400** |
//! | non-empty `logit_bias` | — | **400** |
//! | `functions`, `function_call` (deprecated) | — | **400**, naming `tools` / `tool_choice` |
//! | `web_search_options` | — | **400** |
//! | `parallel_tool_calls`, `top_logprobs` (without `logprobs`), `user`, `metadata`, `store`, `service_tier`, `prediction`, `verbosity`, `prompt_cache_key`, `safety_identifier`, anything else | — | ignored, with a debug log: they steer billing, storage or latency, not the answer (`parallel_tool_calls: false` cannot be enforced; a client gets every call Gemini makes) |
//!
//! # Answers
//!
//! Text parts → `content`; `thought: true` parts → `reasoning_content`; `functionCall` parts →
//! `tool_calls` (arguments as a JSON string, `finish_reason: "tool_calls"`), numbered 0, 1, 2…
//! in stream deltas; ids are Gemini's when it gives one (Gemini 3), else `call_` + a hash of the
//! completion id and the call's position (stable and unique). Finish reasons: `STOP` → `stop`,
//! `MAX_TOKENS` → `length`, `SAFETY`/`RECITATION`/`BLOCKLIST`/`PROHIBITED_CONTENT`/`SPII`/
//! image safety → `content_filter`; every other value (`MALFORMED_FUNCTION_CALL`, `OTHER`,
//! `UNEXPECTED_TOOL_CALL`, values newer than this code) is passed on in lower case, with
//! Gemini's `finishMessage` as `finish_message`, never disguised as `stop`. A blocked prompt
//! (`promptFeedback.blockReason`, no candidates) is a `content_filter` answer whose `refusal`
//! says why. `usageMetadata` → `usage`: prompt (+ tool-use prompt), completion = candidates +
//! thoughts, `reasoning_tokens` = thoughts, `cached_tokens` = cached content; in a stream the
//! last one seen. A stream ends when Gemini's body ends (the finish reason is sent then, since
//! Gemini may repeat `finishReason` on events that still carry content). A candidate that
//! ends, cleanly, with content but no `finishReason` at all (older models did) ends as `stop`;
//! one with neither content nor a reason, an error object in the stream, or a cut connection
//! is an error.
//!
//! # Thought signatures
//!
//! Gemini 3 requires the `thoughtSignature` of a function call to come back with it on the
//! next turn. Like Google's own OpenAI-compatible endpoint, the adapter puts it on the tool
//! call as `extra_content: {"google": {"thought_signature": "…"}}` (in `message.tool_calls[]`,
//! and in the stream delta's `tool_calls[]`), and a signature Gemini attached to a text answer
//! on the message (or delta) itself, same shape. A client that sends the assistant message back
//! as it received it (the OpenAI SDKs keep unknown fields) returns the signatures; the adapter
//! puts each back on its `functionCall` part (the message's on its last text part). For Gemini
//! 3 models, a function-call turn that arrives with no signature at all (history from another
//! model, or a client that dropped it) gets Google's documented placeholder, instead of the
//! 400 Gemini would answer.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod stream;

use async_trait::async_trait;
use bytes::Bytes;
use http::Uri;
use http::header::{CONTENT_TYPE, HeaderName};
use llm_bridge_core::{
    ChatProvider, ChatRequest, ChatResponse, ChunkStream, EMBEDDINGS, Error, ErrorKind,
    ModelCatalog, ModelEntry, NativeRequest, NativeResponse, ProviderConfig, Result, StartupError,
};
use llm_bridge_http::{IdleBody, MAX_ERROR_BYTES, ProviderKit, SseStream, UpstreamClient};

// The wire translation is the dialect crate's (shared with the Gemini ingress).
pub use llm_bridge_dialect_gemini::{
    ChunkTranslator, EmbedRequest, completion, embed_answer, embed_request,
    error_from_stream_event, finish_reason, request_body,
};

/// The error for a non-2xx answer from Gemini: the dialect's reading of the body, with the
/// wait a 429's `Retry-After` header asks for when the body names none.
pub fn error_from_status(
    provider: &str,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Error {
    let e = llm_bridge_dialect_gemini::error_from_status(provider, status, headers, body);
    match llm_bridge_http::retry_after(headers) {
        Some(wait) if status.as_u16() == 429 && e.retry_after().is_none() => {
            e.with_retry_after(wait)
        }
        _ => e,
    }
}

use crate::stream::GeminiChunks;

/// Largest non-streamed answer accepted from Gemini.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The header Gemini reads the key from (never the `?key=` query: URLs end up in logs).
const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

/// One configured Gemini provider.
pub struct GeminiProvider {
    kit: ProviderKit,
    root: String,
    client: UpstreamClient,
}

impl GeminiProvider {
    /// A provider from its config; `client` carries the connection settings (proxy, TLS).
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: UpstreamClient,
    ) -> std::result::Result<Self, StartupError> {
        let root =
            api_root(&config.base_url).map_err(|e| StartupError::at("base_url", e.message()))?;
        let kit = ProviderKit::new(name, config, str::to_owned)?;
        Ok(GeminiProvider { kit, root, client })
    }

    /// The URL of `generateContent` (or `streamGenerateContent?alt=sse`) for a model.
    pub fn endpoint(&self, upstream_model: &str, stream: bool) -> Result<Uri> {
        let model = model_path(upstream_model)?;
        let url = if stream {
            format!(
                "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                self.root
            )
        } else {
            format!("{}/v1beta/models/{model}:generateContent", self.root)
        };
        url.parse()
            .map_err(|e| Error::internal(format!("could not build the Gemini URL: {e}")))
    }

    /// Translates and sends a request; a non-2xx answer is returned as its error.
    async fn send(
        &self,
        entry: &ModelEntry<'_>,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<http::Response<llm_bridge_http::UpstreamBody>> {
        let upstream = entry.upstream_name();
        let body = request_body(request, upstream).map_err(|e| e.with_provider(&*self.kit.name))?;
        let uri = self
            .endpoint(upstream, stream)
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        self.post(
            entry,
            uri,
            body,
            stream,
            request.session(),
            request.traceparent(),
        )
        .await
    }

    /// Sends a body to a Gemini URL with the provider's key; a non-2xx answer is its error.
    async fn post(
        &self,
        entry: &ModelEntry<'_>,
        uri: Uri,
        body: Bytes,
        stream: bool,
        session: Option<u64>,
        traceparent: Option<llm_bridge_core::TraceParent>,
    ) -> Result<http::Response<llm_bridge_http::UpstreamBody>> {
        let (key_index, key) = self.kit.key(session)?;
        let mut http_request = llm_bridge_http::json_post(uri, body, stream);
        http_request
            .headers_mut()
            .insert(API_KEY_HEADER, key.clone());
        let http_request = llm_bridge_http::with_traceparent(http_request, traceparent);
        let timeout = entry.config.timeout();
        self.client
            .send_keyed(
                http_request,
                timeout,
                &self.kit.name,
                &self.kit.keys,
                key_index,
                |status, headers, body| error_from_status(&self.kit.name, status, headers, body),
            )
            .await
    }
}

impl GeminiProvider {
    /// A request of the Gemini dialect, forwarded to `models/{upstream}:{operation}`.
    async fn forward_native(&self, model: &str, request: NativeRequest) -> Result<NativeResponse> {
        let method = match request.operation {
            m @ ("generateContent" | "streamGenerateContent" | "countTokens") => m,
            other => {
                return Err(Error::internal(format!(
                    "provider '{}' forwards no '{other}' requests",
                    self.kit.name
                )));
            }
        };
        let entry = self.kit.entry(model)?;
        let upstream = model_path(entry.upstream_name())?;
        let stream = method == "streamGenerateContent";
        let query = if stream { "?alt=sse" } else { "" };
        let uri: Uri = format!("{}/v1beta/models/{upstream}:{method}{query}", self.root)
            .parse()
            .map_err(|e| Error::internal(format!("could not build the Gemini URL: {e}")))?;
        let response = self
            .post(
                &entry,
                uri,
                request.body.clone(),
                stream,
                request.session,
                native_traceparent(&request),
            )
            .await?;
        Ok(self.kit.native_answer(response, entry.config.timeout()))
    }
}

/// The API root for a `base_url` given as the root (`https://generativelanguage.googleapis.com`),
/// with a trailing `/`, or with the `/v1beta` version.
pub fn api_root(base_url: &str) -> Result<String> {
    let base = base_url.trim().trim_end_matches('/');
    let base = base.strip_suffix("/v1beta").unwrap_or(base);
    let uri: Uri = base
        .parse()
        .map_err(|e| Error::invalid_request(format!("'{base_url}' is not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() && uri.query().is_none() => {
            Ok(base.to_owned())
        }
        _ => Err(Error::invalid_request(format!(
            "'{base_url}' must be an http:// or https:// URL without a query"
        ))),
    }
}

/// The model's name as a URL path segment: `models/` is optional, and only the characters
/// Gemini model names use are accepted (a name is client input when the catalog has `"*"`).
fn model_path(name: &str) -> Result<&str> {
    let model = name.strip_prefix("models/").unwrap_or(name);
    let valid = !model.is_empty()
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid {
        Ok(model)
    } else {
        Err(Error::invalid_request(format!(
            "'{name}' is not a Gemini model name (letters, digits, '-', '.', '_')"
        ))
        .with_param("model"))
    }
}

#[async_trait]
impl ChatProvider for GeminiProvider {
    fn name(&self) -> &str {
        &self.kit.name
    }

    fn catalog(&self) -> &ModelCatalog {
        &self.kit.catalog
    }

    fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.kit.keys.redact(text)
    }

    fn speaks(&self, dialect: &str) -> bool {
        dialect == EMBEDDINGS || dialect == "gemini"
    }

    /// Gemini's own requests (`generateContent`, `streamGenerateContent`, `countTokens`) go
    /// through as bytes (the model is in the URL); embeddings are translated to
    /// `batchEmbedContents` and back (see [`embed_request`]).
    async fn forward(&self, model: &str, request: NativeRequest) -> Result<NativeResponse> {
        if request.operation != EMBEDDINGS {
            return self.forward_native(model, request).await;
        }
        let entry = self.kit.entry(model)?;
        let upstream = model_path(entry.upstream_name())?;
        let translated = embed_request(&request.body, upstream)?;
        let uri: Uri = format!("{}/v1beta/models/{upstream}:batchEmbedContents", self.root)
            .parse()
            .map_err(|e| Error::internal(format!("could not build the Gemini URL: {e}")))?;
        let response = self
            .post(
                &entry,
                uri,
                translated.body,
                false,
                request.session,
                native_traceparent(&request),
            )
            .await?;
        let bytes = IdleBody::new(response.into_body(), entry.config.timeout())
            .collect(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        let body = embed_answer(&bytes, upstream, translated.base64)
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        Ok(NativeResponse {
            content_type: "application/json".to_owned(),
            body: Box::pin(futures_util::stream::once(async move { Ok(body) })),
        })
    }

    async fn chat(&self, model: &str, mut request: ChatRequest) -> Result<ChatResponse> {
        let entry = self.kit.entry(model)?;
        entry.config.apply(&mut request);
        let response = self.send(&entry, &request, false).await?;
        let bytes = IdleBody::new(response.into_body(), entry.config.timeout())
            .collect(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        let body = completion(&bytes, model_path(entry.upstream_name())?)
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        Ok(ChatResponse { body })
    }

    async fn chat_stream(&self, model: &str, mut request: ChatRequest) -> Result<ChunkStream> {
        let entry = self.kit.entry(model)?;
        entry.config.apply(&mut request);
        let response = self.send(&entry, &request, true).await?;
        let timeout = entry.config.timeout();
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            // An error object answered with 200 instead of an event stream.
            let body: Bytes = IdleBody::new(response.into_body(), timeout)
                .collect(MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            if memchr_error(&body) {
                return Err(error_from_stream_event(&self.kit.name, &body));
            }
            return Err(Error::new(
                ErrorKind::UpstreamBadResponse,
                format!(
                    "provider '{}' answered a stream request without an event stream",
                    self.kit.name
                ),
            )
            .with_provider(&*self.kit.name));
        }
        let translator = ChunkTranslator::new(model_path(entry.upstream_name())?);
        let events = SseStream::new(response.into_body(), timeout);
        let mut chunks = GeminiChunks::new(events, translator, self.kit.name.clone());
        chunks.first().await?;
        Ok(Box::pin(chunks))
    }
}

fn memchr_error(body: &[u8]) -> bool {
    body.windows(b"\"error\"".len()).any(|w| w == b"\"error\"")
}

/// The attempt's trace context the router put on a forwarded request, if it is traced.
fn native_traceparent(request: &NativeRequest) -> Option<llm_bridge_core::TraceParent> {
    request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("traceparent"))
        .and_then(|(_, value)| llm_bridge_core::TraceParent::parse(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_may_be_the_root_or_the_versioned_root() {
        for base in [
            "https://generativelanguage.googleapis.com",
            "https://generativelanguage.googleapis.com/",
            "https://generativelanguage.googleapis.com/v1beta",
            " https://generativelanguage.googleapis.com/v1beta/ ",
        ] {
            assert_eq!(
                api_root(base).unwrap(),
                "https://generativelanguage.googleapis.com"
            );
        }
        assert_eq!(
            api_root("http://127.0.0.1:8080/proxy/").unwrap(),
            "http://127.0.0.1:8080/proxy"
        );
        assert!(api_root("ftp://x").is_err());
        assert!(api_root("https://x/?key=abc").is_err());
        assert!(api_root("not a url").is_err());
    }

    #[test]
    fn a_retry_after_header_is_read_when_the_body_names_no_delay() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("3"));
        let e = error_from_status("g", http::StatusCode::TOO_MANY_REQUESTS, &h, b"{}");
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(3)));
        let body = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"45s"}]}}"#;
        let e = error_from_status("g", http::StatusCode::TOO_MANY_REQUESTS, &h, body);
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(45)));
    }

    #[test]
    fn model_names_cannot_escape_the_path() {
        assert_eq!(model_path("gemini-2.5-flash").unwrap(), "gemini-2.5-flash");
        assert_eq!(model_path("models/gemini-3-pro").unwrap(), "gemini-3-pro");
        for bad in [
            "", "../files", "a?key=x", "a/b", "gemini 2", "x#y", "models/",
        ] {
            let e = model_path(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert_eq!(e.param(), Some("model"));
        }
    }
}
