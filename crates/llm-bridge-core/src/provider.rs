//! The contract between the router and an upstream adapter.

use std::borrow::Cow;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use async_trait::async_trait;

use crate::config::ModelCatalog;
use crate::error::Result;
use crate::request::ChatRequest;
use crate::response::{ChatResponse, ChunkStream};

/// An upstream that answers chat completions: one configured provider (`closeai`,
/// `gemini`, …) speaking one wire protocol.
///
/// `model` is the name the client used within the provider (`gpt-4o`, `o3-mini<high>`,
/// or any name the catalog's `"*"` entry lets through). The provider applies the model's
/// settings (upstream name, `max_tokens` ceiling, `param_config`, timeout) itself.
///
/// Dropping the returned future or stream cancels the upstream request.
#[async_trait]
pub trait ChatProvider: Send + Sync + 'static {
    /// The provider's configured name.
    fn name(&self) -> &str;

    /// The models it serves.
    fn catalog(&self) -> &ModelCatalog;

    /// A complete answer (`stream: false`).
    async fn chat(&self, model: &str, request: ChatRequest) -> Result<ChatResponse>;

    /// A stream of chunks (`stream: true`). Resolves once the upstream has accepted the
    /// request (response headers received); errors before that are returned here.
    async fn chat_stream(&self, model: &str, request: ChatRequest) -> Result<ChunkStream>;

    /// `text` (an upstream's error message) with this provider's keys, bearer tokens and
    /// URL credentials replaced by `[redacted]`. The router applies it to every error the
    /// provider returns, before the error is retried, logged or shown to a client. Adapters
    /// holding keys override it to name them; the default knows only the patterns.
    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        crate::redact::redact(text, &[])
    }

    /// Whether this provider speaks the dialect named `dialect` (an
    /// [`crate::Ingress::name`]) natively, so that a request in it is forwarded as bytes
    /// ([`ChatProvider::forward`]) instead of translated.
    fn speaks(&self, dialect: &str) -> bool {
        let _ = dialect;
        false
    }

    /// Forwards a request in the provider's own dialect: the body goes upstream byte for
    /// byte but `model` (the model's upstream name), and the answer comes back unaltered.
    /// Resolves once the upstream accepted the request; a non-2xx answer is its error.
    async fn forward(&self, model: &str, request: NativeRequest) -> Result<NativeResponse> {
        let _ = (model, request);
        Err(crate::Error::new(
            crate::ErrorKind::Internal,
            format!("provider '{}' forwards no native dialect", self.name()),
        ))
    }
}

/// The name under which a provider declares embeddings ([`ChatProvider::speaks`]) and the
/// [`NativeRequest::operation`] of an embeddings request: an OpenAI `/v1/embeddings` body,
/// answered in OpenAI's shape (forwarded as bytes, or translated by the adapter).
pub const EMBEDDINGS: &str = "embeddings";

/// A request in a provider's own dialect, for [`ChatProvider::forward`].
#[derive(Debug, Clone)]
pub struct NativeRequest {
    /// Which endpoint of the dialect: `main` (`/v1/messages`, `/v1/responses`),
    /// `count_tokens`, or [`EMBEDDINGS`].
    pub operation: &'static str,
    /// The body as the client sent it.
    pub body: Bytes,
    /// Headers of the client's the dialect forwards (`anthropic-version`, `anthropic-beta`).
    pub headers: Vec<(&'static str, String)>,
    /// Whether the client asked for an event stream.
    pub stream: bool,
    /// The request's session (see [`crate::ChatRequest::session`]), for the choice of key.
    pub session: Option<u64>,
}

/// The upstream's answer to a [`NativeRequest`], unaltered.
pub struct NativeResponse {
    /// Its `content-type`.
    pub content_type: String,
    /// Its body, piece by piece as it arrives (an `Err` ends it).
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

impl std::fmt::Debug for NativeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeResponse")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// `body` (a JSON object) with its top-level `model` set to `model`, every other byte of
/// every value kept as it was: signatures, escapes and number formats survive.
pub fn with_model(body: &[u8], model: &str) -> Result<Bytes> {
    let fields: indexmap::IndexMap<Cow<'_, str>, &serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| {
            crate::Error::invalid_request(format!("request body is not a JSON object: {e}"))
        })?;
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.push(b'{');
    let mut wrote_model = false;
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).map_err(|e| crate::Error::internal(e.to_string()))?;
        out.push(b':');
        if key == "model" {
            serde_json::to_writer(&mut out, model)
                .map_err(|e| crate::Error::internal(e.to_string()))?;
            wrote_model = true;
        } else {
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    if !wrote_model {
        if !fields.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"model\":");
        serde_json::to_writer(&mut out, model)
            .map_err(|e| crate::Error::internal(e.to_string()))?;
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_model_changes_the_model_and_nothing_else() {
        let body = br#"{"model":"claude/x","messages":[{"role":"user","content":"caf\u00e9 1.50"}],"thinking":{"signature":"EqQBCgYIAR=="},"n":1.0}"#;
        let out = with_model(body, "claude-sonnet-4-5").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"caf\u00e9 1.50"}],"thinking":{"signature":"EqQBCgYIAR=="},"n":1.0}"#
        );
        assert!(with_model(b"[1]", "m").is_err());
        assert_eq!(&with_model(b"{}", "m").unwrap()[..], br#"{"model":"m"}"#);
    }
}
