//! `adapter: openai` — OpenAI and every upstream that speaks its chat completions API
//! (CloseAI-style proxies, Deepseek, Gemini's OpenAI endpoint, local servers).
//!
//! Pass-through by design: the client's JSON goes upstream with only the model's settings
//! applied (upstream model name, `max_tokens` ceiling, `param_config`, and for streams
//! `stream_options.include_usage`); the upstream's bytes come back untouched.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod errors;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Request, Uri};
use http_body_util::Full;
use llm_bridge_core::{
    ChatChunk, ChatProvider, ChatRequest, ChatResponse, ChunkStream, EMBEDDINGS, Error, ErrorKind,
    ModelCatalog, ModelEntry, NativeRequest, NativeResponse, ProviderConfig, ResponsesMode, Result,
    StartupError, with_model,
};
use llm_bridge_http::{IdleBody, MAX_ERROR_BYTES, ProviderKit, SseStream, UpstreamClient};

pub use errors::{from_status as error_from_status, from_stream_event as error_from_stream_event};

/// Largest non-streamed answer accepted from an upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// One configured OpenAI-compatible provider.
pub struct OpenAiProvider {
    kit: ProviderKit,
    endpoint: Uri,
    client: UpstreamClient,
    stream_usage: bool,
    /// Where `/v1/responses` requests go, when the upstream speaks Responses itself.
    responses: Option<Uri>,
    /// Where `/v1/embeddings` requests go.
    embeddings: Uri,
}

impl OpenAiProvider {
    /// A provider from its config; `client` carries the connection settings (proxy, TLS).
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: UpstreamClient,
    ) -> std::result::Result<Self, StartupError> {
        let endpoint = chat_completions_url(&config.base_url)
            .map_err(|e| StartupError::at("base_url", e.message()))?;
        let kit = ProviderKit::new(name, config, |k| format!("Bearer {k}"))?;
        let url = endpoint.to_string();
        let api_root = url.strip_suffix("/chat/completions").unwrap_or(&url);
        let embeddings = format!("{api_root}/embeddings")
            .parse::<Uri>()
            .map_err(|e| StartupError::at("base_url", format!("no embeddings URL from it: {e}")))?;
        let native_responses = match config.responses {
            Some(mode) => mode == ResponsesMode::Native,
            None => endpoint.host() == Some("api.openai.com"),
        };
        let responses = if native_responses {
            let url = endpoint.to_string();
            let root = url.strip_suffix("/chat/completions").unwrap_or(&url);
            Some(format!("{root}/responses").parse::<Uri>().map_err(|e| {
                StartupError::at("base_url", format!("no Responses URL from it: {e}"))
            })?)
        } else {
            None
        };
        Ok(OpenAiProvider {
            kit,
            responses,
            embeddings,
            endpoint,
            client,
            stream_usage: config.stream_usage,
        })
    }

    /// The chat completions URL requests go to.
    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    fn build(&self, body: Bytes, stream: bool, key: &HeaderValue) -> Request<Full<Bytes>> {
        let mut request = llm_bridge_http::json_post(self.endpoint.clone(), body, stream);
        request.headers_mut().insert(AUTHORIZATION, key.clone());
        request
    }

    async fn send(
        &self,
        entry: &ModelEntry<'_>,
        body: Bytes,
        stream: bool,
        session: Option<u64>,
        traceparent: Option<llm_bridge_core::TraceParent>,
    ) -> Result<http::Response<llm_bridge_http::UpstreamBody>> {
        let timeout = entry.config.timeout();
        let (key_index, key) = self.kit.key(session)?;
        let request = llm_bridge_http::with_traceparent(self.build(body, stream, key), traceparent);
        self.client
            .send_keyed(
                request,
                timeout,
                &self.kit.name,
                &self.kit.keys,
                key_index,
                |status, headers, body| errors::from_status(&self.kit.name, status, headers, body),
            )
            .await
    }
}

/// The chat completions URL for a `base_url` that is either the API root or the full URL.
pub fn chat_completions_url(base_url: &str) -> Result<Uri> {
    let base = base_url.trim().trim_end_matches('/');
    let url = if base.ends_with("/chat/completions") {
        base.to_owned()
    } else {
        format!("{base}/chat/completions")
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::invalid_request(format!("'{base_url}' is not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
        _ => Err(Error::invalid_request(format!(
            "'{base_url}' must be an http:// or https:// URL"
        ))),
    }
}

#[async_trait]
impl ChatProvider for OpenAiProvider {
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
        dialect == EMBEDDINGS || (dialect == "responses" && self.responses.is_some())
    }

    async fn forward(&self, model: &str, request: NativeRequest) -> Result<NativeResponse> {
        // Embeddings go through as they came, `model` excepted, like Responses requests.
        let url = match request.operation {
            EMBEDDINGS => Some(self.embeddings.clone()),
            "main" => self.responses.clone(),
            _ => None,
        };
        let Some(url) = url else {
            return Err(Error::internal(format!(
                "provider '{}' forwards only Responses and embeddings requests",
                self.kit.name
            )));
        };
        let entry = self.kit.entry(model)?;
        let body = with_model(&request.body, entry.upstream_name())?;
        let (key_index, key) = self.kit.key(request.session)?;
        let mut http_request = llm_bridge_http::json_post(url, body, request.stream);
        let headers = http_request.headers_mut();
        headers.insert(AUTHORIZATION, key.clone());
        for (name, value) in &request.headers {
            if let (Ok(name), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, v);
            }
        }
        let response = self
            .client
            .send_keyed(
                http_request,
                entry.config.timeout(),
                &self.kit.name,
                &self.kit.keys,
                key_index,
                |status, headers, body| errors::from_status(&self.kit.name, status, headers, body),
            )
            .await?;
        Ok(self.kit.native_answer(response, entry.config.timeout()))
    }

    async fn chat(&self, model: &str, mut request: ChatRequest) -> Result<ChatResponse> {
        let entry = self.kit.entry(model)?;
        entry.config.apply(&mut request);
        request.set_model(entry.upstream_name());
        let response = self
            .send(
                &entry,
                request.to_bytes(),
                false,
                request.session(),
                request.traceparent(),
            )
            .await?;
        let body = IdleBody::new(response.into_body(), entry.config.timeout())
            .collect(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        Ok(ChatResponse { body })
    }

    async fn chat_stream(&self, model: &str, mut request: ChatRequest) -> Result<ChunkStream> {
        let entry = self.kit.entry(model)?;
        entry.config.apply(&mut request);
        request.set_model(entry.upstream_name());
        request.set_stream(true);
        if self.stream_usage {
            request.set_include_usage(true);
        }
        let response = self
            .send(
                &entry,
                request.to_bytes(),
                true,
                request.session(),
                request.traceparent(),
            )
            .await?;
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let timeout = entry.config.timeout();
        if !is_sse {
            // Some upstreams answer a failed stream request with a JSON error and 200.
            let body = IdleBody::new(response.into_body(), timeout)
                .collect(MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            if body.starts_with(b"{\"error\"") {
                return Err(errors::from_stream_event(&self.kit.name, &body));
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
        Ok(Box::pin(Chunks {
            events: SseStream::new(response.into_body(), timeout),
            provider: self.kit.name.clone(),
            done: false,
            finished: false,
        }))
    }
}

/// The chunks of an OpenAI event stream: `[DONE]` ends it, an error event fails it, and an
/// end without either `[DONE]` or a finish reason is a truncated answer.
struct Chunks {
    events: SseStream,
    provider: Arc<str>,
    done: bool,
    /// Whether a chunk carried a finish reason.
    finished: bool,
}

impl Chunks {
    /// Reads what is already there after `[DONE]` (normally just the end of the body), so
    /// that the connection goes back to the pool instead of being closed. Never waits.
    fn drain(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut self.events).poll_next(cx) {}
    }
}

impl Stream for Chunks {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let event = match ready!(Pin::new(&mut this.events).poll_next(cx)) {
                None => {
                    this.done = true;
                    if this.finished {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::UpstreamTruncated,
                        format!(
                            "provider '{}' ended the stream without finishing the answer \
                             (no finish reason, no [DONE])",
                            this.provider
                        ),
                    )
                    .with_provider(&*this.provider))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.with_provider(&*this.provider))));
                }
                Some(Ok(event)) => event,
            };
            let data = trim_ascii(event.data);
            if data.is_empty() {
                continue;
            }
            if &data[..] == b"[DONE]" {
                this.done = true;
                this.drain(cx);
                return Poll::Ready(None);
            }
            if data.starts_with(b"{\"error\"") || event.event.as_deref() == Some(b"error") {
                this.done = true;
                return Poll::Ready(Some(Err(errors::from_stream_event(&this.provider, &data))));
            }
            if !this.finished {
                this.finished = has_finish_reason(&data);
            }
            return Poll::Ready(Some(Ok(ChatChunk { data })));
        }
    }
}

/// Whether a chunk has a non-null `finish_reason`, by a byte scan (the chunk is not parsed
/// here): the key followed by a string value.
fn has_finish_reason(chunk: &[u8]) -> bool {
    const KEY: &[u8] = b"\"finish_reason\"";
    // Built once: building a finder at every chunk cost more than the search (callgrind:
    // ~700 instructions a chunk).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    FINDER.find_iter(chunk).any(|at| {
        chunk[at + KEY.len()..]
            .iter()
            .find(|b| !b.is_ascii_whitespace() && **b != b':')
            .is_some_and(|b| *b == b'"')
    })
}

fn trim_ascii(b: Bytes) -> Bytes {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    if start == 0 && end == b.len() {
        b
    } else {
        b.slice(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_seen_without_parsing() {
        assert!(has_finish_reason(
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(has_finish_reason(
            br#"{"choices":[{"finish_reason" : "length"}]}"#
        ));
        assert!(!has_finish_reason(
            br#"{"choices":[{"delta":{"content":"finish_reason"},"finish_reason":null}]}"#
        ));
        assert!(!has_finish_reason(br#"{"choices":[]}"#));
    }

    #[test]
    fn base_url_may_be_root_or_full_endpoint() {
        assert_eq!(
            chat_completions_url("https://api.openai-proxy.org/v1/chat/completions").unwrap(),
            "https://api.openai-proxy.org/v1/chat/completions"
        );
        assert_eq!(
            chat_completions_url("https://api.deepseek.com/").unwrap(),
            "https://api.deepseek.com/chat/completions"
        );
        assert_eq!(
            chat_completions_url("http://127.0.0.1:8080/v1").unwrap(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert!(chat_completions_url("ftp://x").is_err());
        assert!(chat_completions_url("not a url").is_err());
    }
}
