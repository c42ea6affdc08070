//! The one error currency of llm-bridge.
//!
//! Every crate converts its failures into [`Error`] at its public edge. The [`ErrorKind`]
//! decides the HTTP status, the OpenAI `error.type` / `error.code` the gateway renders, and
//! whether the router may try again. Messages never carry secrets: callers build them from
//! what the client may see.

use std::fmt;
use std::time::Duration;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as far as a client and the router care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client's request is malformed (400).
    InvalidRequest,
    /// No key, an unknown key, or a revoked or expired key (401).
    Authentication,
    /// The key may not use this model or endpoint (403).
    PermissionDenied,
    /// No provider or model of that name (404).
    ModelNotFound,
    /// Some other thing asked for does not exist (404), e.g. a managed key.
    NotFound,
    /// The request body is larger than the server accepts (413).
    PayloadTooLarge,
    /// The key's own request or token rate limit was hit (429).
    RateLimited,
    /// The key's budget is spent (429).
    QuotaExceeded,
    /// The upstream refused the request with this 4xx status; its message is kept.
    UpstreamRejected(u16),
    /// The upstream answered 429.
    UpstreamRateLimited,
    /// The upstream answered 5xx, or could not be reached (502).
    UpstreamUnavailable,
    /// The upstream rejected the gateway's own provider key, or none is configured (502).
    UpstreamAuth,
    /// The upstream sent something that is not the protocol it speaks (502).
    UpstreamBadResponse,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The upstream ended a stream before the answer was finished: no finish reason and no
    /// end marker (502 before the stream started; an error event after).
    UpstreamTruncated,
    /// The gateway is shutting down or shedding load (503).
    Unavailable,
    /// A bug or an unexpected local failure (500).
    Internal,
}

impl ErrorKind {
    /// HTTP status the gateway answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded | ErrorKind::UpstreamRateLimited => {
                429
            }
            ErrorKind::UpstreamRejected(status) => status,
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamBadResponse
            | ErrorKind::UpstreamTruncated => 502,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// OpenAI's `error.type` for this kind.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ModelNotFound
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::UpstreamRejected(_) => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited | ErrorKind::UpstreamRateLimited => "rate_limit_exceeded",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamBadResponse
            | ErrorKind::UpstreamTruncated => "upstream_error",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Internal => "internal_error",
        }
    }

    /// OpenAI's `error.code` for this kind, when it has a fixed one.
    pub fn code(self) -> Option<&'static str> {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::UpstreamRejected(_) => None,
            ErrorKind::Authentication => Some("invalid_api_key"),
            ErrorKind::PermissionDenied => Some("model_not_allowed"),
            ErrorKind::ModelNotFound => Some("model_not_found"),
            ErrorKind::NotFound => Some("not_found"),
            ErrorKind::PayloadTooLarge => Some("request_too_large"),
            ErrorKind::RateLimited | ErrorKind::UpstreamRateLimited => Some("rate_limit_exceeded"),
            ErrorKind::QuotaExceeded => Some("insufficient_quota"),
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamAuth
            | ErrorKind::UpstreamBadResponse => Some("upstream_error"),
            ErrorKind::UpstreamTruncated => Some("upstream_truncated"),
            ErrorKind::UpstreamTimeout => Some("upstream_timeout"),
            ErrorKind::Unavailable => Some("service_unavailable"),
            ErrorKind::Internal => Some("internal_error"),
        }
    }

    /// Whether another attempt (same or other target) may succeed, provided nothing has
    /// reached the client yet.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamRateLimited
                | ErrorKind::UpstreamUnavailable
                | ErrorKind::UpstreamBadResponse
                | ErrorKind::UpstreamTruncated
                | ErrorKind::UpstreamTimeout
        )
    }

    /// Whether the fault lies with an upstream (as opposed to the client or the gateway).
    pub fn is_upstream(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamRejected(_)
                | ErrorKind::UpstreamRateLimited
                | ErrorKind::UpstreamUnavailable
                | ErrorKind::UpstreamAuth
                | ErrorKind::UpstreamBadResponse
                | ErrorKind::UpstreamTruncated
                | ErrorKind::UpstreamTimeout
        )
    }

    /// A short stable label for logs and metrics (`upstream_timeout`, `invalid_request`, …).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::UpstreamRejected(_) => "upstream_rejected",
            ErrorKind::UpstreamRateLimited => "upstream_rate_limited",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamAuth => "upstream_auth",
            ErrorKind::UpstreamBadResponse => "upstream_bad_response",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamTruncated => "upstream_truncated",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// `type`, `code` and `param` as an upstream reported them, kept so that a client sees the
/// upstream's own classification of its mistake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamDetail {
    /// The upstream's `error.type`.
    pub error_type: Option<String>,
    /// The upstream's `error.code` (numbers are kept as their decimal text).
    pub code: Option<String>,
    /// The upstream's `error.param`.
    pub param: Option<String>,
}

/// The one error type of llm-bridge. See the module docs.
pub struct Error {
    kind: ErrorKind,
    message: String,
    // Boxed strs keep `Error` within 128 bytes (clippy's `result_large_err`).
    provider: Option<Box<str>>,
    retry_after: Option<Duration>,
    param: Option<Box<str>>,
    code: Option<&'static str>,
    upstream: Option<Box<UpstreamDetail>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a message the client may read.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            provider: None,
            retry_after: None,
            param: None,
            code: None,
            upstream: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// Names the provider involved.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = Some(provider.into().into_boxed_str());
        self
    }

    /// How long the client should wait before trying again.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Forgets the `Retry-After` (e.g. when another of the provider's keys can serve at once).
    pub fn without_retry_after(mut self) -> Self {
        self.retry_after = None;
        self
    }

    /// The request parameter at fault (OpenAI's `error.param`).
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into().into_boxed_str());
        self
    }

    /// A more precise `error.code` than the kind's (e.g. `admin_key_required` for a 403).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The same error with its message passed through `scrub` (e.g. a provider's
    /// [`crate::ChatProvider::redact`]), so that no secret an upstream echoed goes further.
    pub fn scrubbed(
        mut self,
        scrub: impl for<'a> Fn(&'a str) -> std::borrow::Cow<'a, str>,
    ) -> Self {
        if let std::borrow::Cow::Owned(clean) = scrub(&self.message) {
            self.message = clean;
        }
        self
    }

    /// The upstream's own classification of the error.
    pub fn with_upstream_detail(mut self, detail: UpstreamDetail) -> Self {
        self.upstream = Some(Box::new(detail));
        self
    }

    /// The underlying cause, for logs. It must not contain secrets.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The message a client may read.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The provider involved, if any.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// How long to wait before trying again, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// OpenAI's `error.type`: the upstream's for a passed-through rejection, else the kind's.
    pub fn error_type(&self) -> &str {
        match (&self.kind, &self.upstream) {
            (ErrorKind::UpstreamRejected(_), Some(up)) => {
                up.error_type.as_deref().unwrap_or(self.kind.error_type())
            }
            _ => self.kind.error_type(),
        }
    }

    /// OpenAI's `error.code`: the upstream's for a passed-through rejection, else the kind's.
    pub fn code(&self) -> Option<&str> {
        match (&self.kind, &self.upstream) {
            (ErrorKind::UpstreamRejected(_), Some(up)) => up.code.as_deref(),
            _ => self.code.or(self.kind.code()),
        }
    }

    /// OpenAI's `error.param`.
    pub fn param(&self) -> Option<&str> {
        self.param
            .as_deref()
            .or_else(|| self.upstream.as_ref().and_then(|u| u.param.as_deref()))
    }

    /// The same error with another kind (e.g. a retry budget exhausted turns a retryable
    /// upstream error into its final form).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(p) = &self.provider {
            d.field("provider", p);
        }
        if let Some(r) = &self.retry_after {
            d.field("retry_after", r);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec_table() {
        assert_eq!(ErrorKind::InvalidRequest.status(), 400);
        assert_eq!(ErrorKind::Authentication.status(), 401);
        assert_eq!(ErrorKind::PermissionDenied.status(), 403);
        assert_eq!(ErrorKind::ModelNotFound.status(), 404);
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::RateLimited.status(), 429);
        assert_eq!(ErrorKind::QuotaExceeded.status(), 429);
        assert_eq!(ErrorKind::UpstreamRejected(422).status(), 422);
        assert_eq!(ErrorKind::UpstreamRateLimited.status(), 429);
        assert_eq!(ErrorKind::UpstreamUnavailable.status(), 502);
        assert_eq!(ErrorKind::UpstreamAuth.status(), 502);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
    }

    #[test]
    fn upstream_detail_wins_for_rejections_only() {
        let detail = UpstreamDetail {
            error_type: Some("invalid_request_error".into()),
            code: Some("unsupported_value".into()),
            param: Some("messages[0].role".into()),
        };
        let e = Error::new(ErrorKind::UpstreamRejected(400), "nope")
            .with_upstream_detail(detail.clone());
        assert_eq!(e.code(), Some("unsupported_value"));
        assert_eq!(e.param(), Some("messages[0].role"));
        let e = Error::new(ErrorKind::UpstreamUnavailable, "down").with_upstream_detail(detail);
        assert_eq!(e.code(), Some("upstream_error"));
        assert_eq!(e.error_type(), "upstream_error");
    }

    #[test]
    fn only_upstream_trouble_is_retryable() {
        assert!(ErrorKind::UpstreamRateLimited.is_retryable());
        assert!(ErrorKind::UpstreamTimeout.is_retryable());
        assert!(!ErrorKind::UpstreamRejected(400).is_retryable());
        assert!(!ErrorKind::UpstreamAuth.is_retryable());
        assert!(!ErrorKind::InvalidRequest.is_retryable());
    }
}
