//! `adapter: anthropic` — Anthropic's Messages API (`POST {base_url}/v1/messages`, key in
//! `x-api-key`) and Messages-compatible services (Deepseek's `/anthropic` endpoint, …), for
//! clients that keep speaking OpenAI's chat completions.
//!
//! This crate is the transport only: the translation both ways lives in
//! `llm-bridge-dialect-anthropic` (see its docs for every field). The client's request gets
//! the model's settings first (`max_tokens` ceiling, `param_config`), then becomes a Messages
//! request ([`messages_request`], with the model's `max_tokens` ceiling as the `max_tokens`
//! Anthropic requires when the client set none, else [`DEFAULT_MAX_TOKENS`]); answers come
//! back through [`chat_completion`] and, for streams, a [`ChunkTranslator`] fed with each
//! server-sent event as it arrives.
//!
//! # Settings
//!
//! - `base_url`: the API root (`https://api.anthropic.com`); `/v1/messages` is appended. A
//!   URL that already ends in `/v1` or `/v1/messages` is taken as it is.
//! - `anthropic_version`: the `anthropic-version` header, [`DEFAULT_VERSION`] when unset.
//! - `anthropic_beta`: beta feature names, sent as one comma-separated `anthropic-beta` header.
//! - The keys (`api_key`, `<NAME>_API_KEY`) go in `x-api-key`, in turn; a key that got a 429
//!   rests while the others serve.
//!
//! # Errors
//!
//! Anthropic's error types become the gateway's ([`error_from_status`]): `rate_limit_error`
//! (429) with its `retry-after`, `overloaded_error` (529) and `api_error` (500) are retryable;
//! 401/403 and `billing_error` are the gateway's own key being refused (502 for the client;
//! a 401's own text, which may quote the key, is left out). An `error` event in a stream before the answer
//! starts is a real status too (and a retry); after that it ends the stream as an error event.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod stream;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Uri};
use llm_bridge_core::{
    ChatProvider, ChatRequest, ChatResponse, ChunkStream, Error, ErrorKind, ModelCatalog,
    ModelEntry, NativeRequest, NativeResponse, ProviderConfig, Result, StartupError, with_model,
};
use llm_bridge_dialect_anthropic::{
    ChunkTranslator, DEFAULT_MAX_TOKENS, chat_completion, error_from_event, error_from_status,
    messages_request,
};
use llm_bridge_http::{IdleBody, MAX_ERROR_BYTES, ProviderKit, SseStream, UpstreamClient};
use serde_json::Value;

use crate::stream::AnthropicChunks;

/// The `anthropic-version` sent when the provider names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Largest non-streamed answer accepted from the upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The header Anthropic reads the key from.
const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
/// The API version a request is written for.
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");
/// The beta features a request uses.
const BETA_HEADER: HeaderName = HeaderName::from_static("anthropic-beta");
/// W3C Trace Context.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// One configured Anthropic (or Messages-compatible) provider.
pub struct AnthropicProvider {
    kit: ProviderKit,
    endpoint: Uri,
    client: UpstreamClient,
    version: HeaderValue,
    beta: Option<HeaderValue>,
}

impl AnthropicProvider {
    /// A provider from its config; `client` carries the connection settings (proxy, TLS).
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        client: UpstreamClient,
    ) -> std::result::Result<Self, StartupError> {
        let endpoint = messages_url(&config.base_url)
            .map_err(|e| StartupError::at("base_url", e.message()))?;
        let kit = ProviderKit::new(name, config, str::to_owned)?;
        let version = config
            .anthropic_version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_VERSION);
        let version = HeaderValue::try_from(version)
            .map_err(|_| StartupError::at("anthropic_version", "not a valid HTTP header value"))?;
        let betas: Vec<&str> = config
            .anthropic_beta
            .iter()
            .map(|b| b.trim())
            .filter(|b| !b.is_empty())
            .collect();
        let beta =
            if betas.is_empty() {
                None
            } else {
                Some(HeaderValue::try_from(betas.join(",")).map_err(|_| {
                    StartupError::at("anthropic_beta", "not valid HTTP header values")
                })?)
            };
        Ok(AnthropicProvider {
            kit,
            endpoint,
            client,
            version,
            beta,
        })
    }

    /// The Messages URL requests go to.
    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    /// Applies the model's settings, translates and sends a request; a non-2xx answer is
    /// returned as its error.
    async fn send(
        &self,
        entry: &ModelEntry<'_>,
        mut request: ChatRequest,
        stream: bool,
    ) -> Result<http::Response<llm_bridge_http::UpstreamBody>> {
        let session = request.session();
        let traceparent = request.traceparent();
        entry.config.apply(&mut request);
        let default_max_tokens = entry.config.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let mut body = messages_request(&request, entry.upstream_name(), default_max_tokens)
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        if let Some(b) = body.as_object_mut() {
            if stream {
                b.insert("stream".into(), Value::Bool(true));
            } else {
                b.remove("stream");
            }
        }
        let (key_index, key) = self.kit.key(session)?;
        let mut http_request = llm_bridge_http::json_post(
            self.endpoint.clone(),
            Bytes::from(body.to_string()),
            stream,
        );
        let headers = http_request.headers_mut();
        headers.insert(API_KEY_HEADER, key.clone());
        headers.insert(VERSION_HEADER, self.version.clone());
        if let Some(beta) = &self.beta {
            headers.insert(BETA_HEADER, beta.clone());
        }
        let http_request = llm_bridge_http::with_traceparent(http_request, traceparent);
        self.client
            .send_keyed(
                http_request,
                entry.config.timeout(),
                &self.kit.name,
                &self.kit.keys,
                key_index,
                |status, headers, body| {
                    error_from_status(
                        &self.kit.name,
                        status.as_u16(),
                        llm_bridge_http::retry_after(headers),
                        body,
                    )
                },
            )
            .await
    }
}

/// The Messages URL for a `base_url` given as the API root (`https://api.anthropic.com`,
/// `https://api.deepseek.com/anthropic`), the versioned root (`…/v1`) or the full URL
/// (`…/v1/messages`).
pub fn messages_url(base_url: &str) -> Result<Uri> {
    let base = base_url.trim().trim_end_matches('/');
    let url = if base.ends_with("/v1/messages") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::invalid_request(format!("'{base_url}' is not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() && uri.query().is_none() => Ok(uri),
        _ => Err(Error::invalid_request(format!(
            "'{base_url}' must be an http:// or https:// URL without a query"
        ))),
    }
}

#[async_trait]
impl ChatProvider for AnthropicProvider {
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
        dialect == "anthropic"
    }

    async fn forward(&self, model: &str, request: NativeRequest) -> Result<NativeResponse> {
        let entry = self.kit.entry(model)?;
        let body = with_model(&request.body, entry.upstream_name())?;
        let (key_index, key) = self.kit.key(request.session)?;
        let uri = match request.operation {
            "count_tokens" => format!("{}/count_tokens", self.endpoint)
                .parse::<Uri>()
                .map_err(|e| Error::internal(format!("count_tokens URL: {e}")))?,
            _ => self.endpoint.clone(),
        };
        let client_header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| HeaderValue::try_from(v.as_str()).ok())
        };
        let mut http_request = llm_bridge_http::json_post(uri, body, request.stream);
        let headers = http_request.headers_mut();
        headers.insert(API_KEY_HEADER, key.clone());
        // The client's version and betas win: it knows what its body needs.
        headers.insert(
            VERSION_HEADER,
            client_header("anthropic-version").unwrap_or_else(|| self.version.clone()),
        );
        if let Some(beta) = client_header("anthropic-beta").or_else(|| self.beta.clone()) {
            headers.insert(BETA_HEADER, beta);
        }
        // Set by the router when the request is traced: the attempt's span.
        if let Some(traceparent) = client_header("traceparent") {
            headers.insert(TRACEPARENT_HEADER, traceparent);
        }
        let response = self
            .client
            .send_keyed(
                http_request,
                entry.config.timeout(),
                &self.kit.name,
                &self.kit.keys,
                key_index,
                |status, headers, body| {
                    error_from_status(
                        &self.kit.name,
                        status.as_u16(),
                        llm_bridge_http::retry_after(headers),
                        body,
                    )
                },
            )
            .await?;
        Ok(self.kit.native_answer(response, entry.config.timeout()))
    }

    async fn chat(&self, model: &str, request: ChatRequest) -> Result<ChatResponse> {
        let entry = self.kit.entry(model)?;
        let response = self.send(&entry, request, false).await?;
        let bytes = IdleBody::new(response.into_body(), entry.config.timeout())
            .collect(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| e.with_provider(&*self.kit.name))?;
        chat_completion(&bytes, entry.upstream_name()).map_err(|e| e.with_provider(&*self.kit.name))
    }

    async fn chat_stream(&self, model: &str, request: ChatRequest) -> Result<ChunkStream> {
        let entry = self.kit.entry(model)?;
        let response = self.send(&entry, request, true).await?;
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
            let is_error = serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v.get("error").is_some() || v["type"] == "error");
            if is_error {
                return Err(error_from_event(&body).with_provider(&*self.kit.name));
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
        let translator = ChunkTranslator::new(entry.upstream_name());
        let events = SseStream::new(response.into_body(), timeout);
        let mut chunks = AnthropicChunks::new(events, translator, self.kit.name.clone());
        chunks.first().await?;
        Ok(Box::pin(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_may_be_the_root_the_versioned_root_or_the_endpoint() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            " https://api.anthropic.com/v1/ ",
            "https://api.anthropic.com/v1/messages",
        ] {
            assert_eq!(
                messages_url(base).unwrap().to_string(),
                "https://api.anthropic.com/v1/messages",
                "{base}"
            );
        }
        assert_eq!(
            messages_url("https://api.deepseek.com/anthropic")
                .unwrap()
                .to_string(),
            "https://api.deepseek.com/anthropic/v1/messages"
        );
        assert!(messages_url("ftp://x").is_err());
        assert!(messages_url("https://x/?key=abc").is_err());
        assert!(messages_url("not a url").is_err());
    }

    fn config(extra: Value) -> ProviderConfig {
        let mut c = serde_json::json!({"adapter": "anthropic", "base_url": "https://api.anthropic.com",
            "api_key": "sk-ant-one, sk-ant-two"});
        if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
            c.extend(extra);
        }
        serde_json::from_value(c).unwrap()
    }

    fn client() -> UpstreamClient {
        UpstreamClient::new(&llm_bridge_http::ClientOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn version_and_beta_headers_come_from_the_settings() {
        let p = AnthropicProvider::new("a", &config(serde_json::json!({})), client()).unwrap();
        assert_eq!(p.version, DEFAULT_VERSION);
        assert!(p.beta.is_none());
        let p = AnthropicProvider::new(
            "a",
            &config(serde_json::json!({"anthropic_version": "2024-01-01",
                "anthropic_beta": ["prompt-caching-2024-07-31", " ", "output-128k-2025-02-19"]})),
            client(),
        )
        .unwrap();
        assert_eq!(p.version, "2024-01-01");
        assert_eq!(
            p.beta.unwrap(),
            "prompt-caching-2024-07-31,output-128k-2025-02-19"
        );
        let e = AnthropicProvider::new(
            "a",
            &config(serde_json::json!({"anthropic_beta": ["bad\nvalue"]})),
            client(),
        )
        .err()
        .unwrap();
        assert_eq!(e.path(), "anthropic_beta", "{e}");
    }
}
