//! Egress: pivot request → Anthropic upstream → pivot answer, for the `anthropic` adapter.

pub(crate) mod content;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;
