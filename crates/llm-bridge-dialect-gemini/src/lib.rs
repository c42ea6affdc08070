//! Google's Gemini API (`generateContent`, `streamGenerateContent`, `countTokens`,
//! `embedContent`, `batchEmbedContents`) ⇄ llm-bridge's pivot (OpenAI chat completions and
//! embeddings), both directions. Pure: no sockets, no runtime.
//!
//! - **Egress**, for `adapter: gemini` (`llm-bridge-provider-gemini`): an OpenAI chat request
//!   → `generateContent` ([`request_body`]), Gemini answers and stream events → OpenAI JSON and
//!   chunks ([`completion`], [`ChunkTranslator`]), Gemini errors → [`llm_bridge_core::Error`]
//!   ([`error_from_status`]), OpenAI embeddings ⇄ `batchEmbedContents` ([`embed_request`],
//!   [`embed_answer`]). The provider crate documents every rule.
//! - **Ingress**, mounted by the binary at `/v1beta/models/{model}:{method}` (and `/v1/models/…`):
//!   [`GeminiIngress`] turns Gemini requests into pivot requests and pivot answers, chunks and
//!   errors back into Gemini's shapes, for targets that do not speak Gemini (see [`ingress`]).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod embed;
mod errors;
pub mod ingress;
mod messages;
mod request;
mod response;
mod wire;

pub use embed::{EmbedRequest, embed_answer, embed_request};
pub use errors::{from_status as error_from_status, from_stream_event as error_from_stream_event};
pub use ingress::GeminiIngress;
pub use request::request_body;
pub use response::{ChunkTranslator, completion, finish_reason};
