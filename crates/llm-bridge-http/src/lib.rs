//! Upstream plumbing shared by llm-bridge's adapters: a pooled HTTP/1.1 + HTTP/2 client over
//! rustls ([`UpstreamClient`]), directly or through an outbound proxy ([`Proxy`], chosen per
//! provider by [`ProxyRules`]) and trusting extra roots if configured ([`TlsRoots`]), reading
//! bodies under an idle timeout ([`IdleBody`]), incremental server-sent-event decoding
//! ([`SseDecoder`], [`SseStream`]) and the helpers that turn transport failures into
//! [`llm_bridge_core::Error`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod client;
mod connector;
mod error;
mod h1;
mod handshake;
mod keyring;
mod kit;
mod proxy;
mod rules;
mod sse;
mod tls;
mod wire;

pub use body::{IdleBody, SseStream};
pub use client::{
    ClientOptions, MAX_ERROR_BYTES, STREAMS_PER_POOL, UpstreamClient, json_post, set_thread_lane,
    with_traceparent,
};
pub use error::{describe, retry_after};
pub use keyring::{DEFAULT_REST, KeyRing};
pub use kit::ProviderKit;
pub use proxy::{Proxy, ProxyScheme, ProxyUrlError};
pub use rules::{ProxyChoice, ProxyConfig, ProxyEnv, ProxyRules};
pub use sse::{LineTooLong, SseDecoder, SseEvent};
pub use tls::TlsRoots;

/// The body type of upstream responses.
pub use body::UpstreamBody;
