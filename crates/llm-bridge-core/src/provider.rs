//! The contract between the router and an upstream adapter.

use std::borrow::Cow;

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
}
