//! Upstream plumbing shared by llm-bridge's adapters: a pooled HTTP/1.1 + HTTP/2 client over
//! rustls ([`UpstreamClient`]), reading bodies under an idle timeout ([`IdleBody`]),
//! incremental server-sent-event decoding ([`SseDecoder`], [`SseStream`]) and the helpers
//! that turn transport failures into [`llm_bridge_core::Error`].

mod body;
mod client;
mod error;
mod sse;

pub use body::{IdleBody, SseStream};
pub use client::{ClientOptions, UpstreamClient};
pub use error::{describe, retry_after};
pub use sse::{LineTooLong, SseDecoder, SseEvent};

/// Re-exported body type of upstream responses.
pub use hyper::body::Incoming;
