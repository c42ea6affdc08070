//! Every end-to-end test of this crate in one binary: one link instead of one per file.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod anthropic;
mod console;
mod echo_provider;
mod embeddings;
mod errors;
mod gemini;
mod gemini_front;
mod hard_edges;
mod keys;
mod messages;
mod metrics;
mod openai_passthrough;
mod postgres_gateway;
mod proxy;
mod responses;
mod routing;
mod server;
mod stores;
mod telemetry;
mod upstream_http2;
mod usage;
mod websocket;
