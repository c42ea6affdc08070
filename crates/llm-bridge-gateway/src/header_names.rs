//! The names of the headers the gateway adds to answers, as `HeaderName` constants:
//! inserting a name `http` does not know given as a `&str` copies it into a new allocation
//! on every insert; a constant is inserted as it is.

use http::HeaderName;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_LLM_BRIDGE_TARGET: HeaderName = HeaderName::from_static("x-llm-bridge-target");
pub(crate) const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
pub(crate) const X_RATELIMIT_LIMIT_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-requests");
pub(crate) const X_RATELIMIT_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub(crate) const X_RATELIMIT_LIMIT_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-tokens");
pub(crate) const X_RATELIMIT_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-tokens");
