//! The vocabulary of llm-bridge.
//!
//! Everything the other crates share and nothing more: the chat request as the client sent it
//! ([`ChatRequest`]), answers and stream chunks in OpenAI's format ([`ChatResponse`],
//! [`ChatChunk`]), token counts ([`Usage`]), `provider/model` names ([`ModelRef`]), provider and
//! model settings ([`ProviderConfig`], [`ModelConfig`]), the built-in price catalog ([`prices`]),
//! the [`ChatProvider`] trait every upstream adapter implements, and the one error type
//! ([`Error`], [`ErrorKind`]).
//! No sockets, no runtime, no vendor wire formats.
//!
//! # Example: a provider of your own
//!
//! ```
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use llm_bridge_core::{
//!     ChatProvider, ChatRequest, ChatResponse, ChunkStream, Error, ErrorKind, ModelCatalog,
//!     ModelConfig, Result,
//! };
//!
//! /// Answers every question with the last user message.
//! struct Echo {
//!     catalog: ModelCatalog,
//! }
//!
//! #[async_trait]
//! impl ChatProvider for Echo {
//!     fn name(&self) -> &str {
//!         "echo"
//!     }
//!     fn catalog(&self) -> &ModelCatalog {
//!         &self.catalog
//!     }
//!     async fn chat(&self, model: &str, request: ChatRequest) -> Result<ChatResponse> {
//!         let entry = self
//!             .catalog
//!             .lookup(model)
//!             .ok_or_else(|| Error::new(ErrorKind::ModelNotFound, "no such model"))?;
//!         let last = request.messages().last().and_then(|m| m["content"].as_str());
//!         let body = serde_json::json!({
//!             "id": "echo-1", "object": "chat.completion", "created": 0,
//!             "model": entry.upstream_name(),
//!             "choices": [{"index": 0, "finish_reason": "stop",
//!                          "message": {"role": "assistant", "content": last}}],
//!         });
//!         Ok(ChatResponse { body: Bytes::from(body.to_string()) })
//!     }
//!     async fn chat_stream(&self, _model: &str, _request: ChatRequest) -> Result<ChunkStream> {
//!         Err(Error::invalid_request("echo does not stream"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let echo = Echo {
//!     catalog: ModelCatalog::new([("parrot".to_owned(), ModelConfig::default())].into_iter().collect()),
//! };
//! let request = ChatRequest::from_slice(
//!     br#"{"model": "echo/parrot", "messages": [{"role": "user", "content": "hello"}]}"#,
//! )?;
//! let answer = echo.chat("parrot", request).await?;
//! let usage = llm_bridge_core::inspect(&answer.body, None).map_err(|e| Error::internal(e.to_string()))?;
//! assert_eq!(usage.usage, None); // echo reports no token counts
//! assert!(std::str::from_utf8(&answer.body).unwrap().contains("hello"));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod calendar;
mod chunk_scan;
mod config;
mod error;
mod ingress;
pub mod memory;
mod message;
mod model_ref;
pub mod prices;
mod provider;
pub mod redact;
mod request;
mod response;
mod retry;
mod startup;
pub mod trace;

pub use config::{
    ApiKeys, DEFAULT_TIMEOUT, ModelCatalog, ModelConfig, ModelEntry, ModelKind, ParamConfig, Price,
    ProviderConfig, ResponsesMode, Seconds, TlsConfig, api_key_env_var,
};
pub use error::{Error, ErrorKind, Result, UpstreamDetail};
pub use ingress::{
    Call, Endpoint, Ingress, IngressRequest, IngressSocket, IngressState, IngressStream,
    NativeMeter, SocketTurn,
};
pub use message::{Content, ContentPart, FunctionCall, ImageUrl, Message, ToolCall};
pub use model_ref::ModelRef;
pub use provider::{ChatProvider, EMBEDDINGS, NativeRequest, NativeResponse, with_model};
pub use request::{ChatRequest, session_hash};
pub use response::{
    AnswerFacts, ChatChunk, ChatResponse, ChunkStream, Inspection, Usage, answer_facts,
    completion_usage, inspect, json_object, strip_usage,
};
pub use retry::RetryConfig;
pub use startup::StartupError;
pub use trace::TraceParent;

/// Re-exported so that implementors of [`ChatProvider`] use the same secret type.
pub use secrecy;
