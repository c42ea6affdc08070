//! The testkit: mock upstreams, a real HTTP client and helpers to start the real gateway
//! in-process. Used by the end-to-end tests in `tests/tests/` and by `cargo xtask bench`
//! (through the `mock-upstream` binary).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod anthropic;
pub mod client;
pub mod embeddings;
pub mod gateway;
pub mod gemini;
pub mod mock;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod tls;

pub use client::{Answer, Client, sse_data, sse_events};
pub use gateway::{ADMIN_KEY, TEST_KEY, TestGateway, config_with, openai_provider};
pub use mock::{Behavior, Echo, MockUpstream, Recorded, StreamEnd};

/// Reads a fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
