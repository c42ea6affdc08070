//! Errors both ways: Anthropic's error answers (`{"type": "error", "error": {"type",
//! "message"}}`) → the gateway's [`Error`] (egress), and the gateway's errors → Anthropic's
//! shape and statuses (ingress).
//!
//! As in the other adapters, an upstream that refuses the gateway's own key (401, 403,
//! `billing_error`) is a 502 for the client, never its own 401: the client's key was fine.

use std::time::Duration;

use bytes::Bytes;
use llm_bridge_core::{Error, ErrorKind, UpstreamDetail};
use serde_json::{Value, json};

/// Longest upstream message passed on; beyond it the text is cut.
const MAX_MESSAGE: usize = 2000;

/// The error for a non-2xx answer from an Anthropic upstream. `retry_after` is what the
/// answer's `retry-after` header says (the caller reads headers; this crate has no HTTP
/// types). `provider` names the provider in messages and on the error.
pub fn error_from_status(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Error {
    let (kind, message) = parse(body);
    classify(
        &format!("provider '{provider}'"),
        status,
        kind,
        message,
        retry_after,
    )
    .with_provider(provider)
}

/// The error an `error` stream event (or an error object where an answer was expected)
/// describes. Its type stands for the status the answer would have had.
pub fn error_from_event(data: &[u8]) -> Error {
    let (kind, message) = parse(data);
    let status = kind.as_deref().map_or(500, status_of_type);
    classify("Anthropic", status, kind, message, None)
}

/// The HTTP status Anthropic answers with for an error type.
fn status_of_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

fn classify(
    who: &str,
    status: u16,
    kind: Option<String>,
    message: Option<String>,
    retry_after: Option<Duration>,
) -> Error {
    let label = match &kind {
        Some(k) => format!("HTTP {status} {k}"),
        None => format!("HTTP {status}"),
    };
    let error = match (status, kind.as_deref()) {
        // Anthropic's text may quote part of the key: leave it out.
        (401, _) | (_, Some("authentication_error")) => Error::new(
            ErrorKind::UpstreamAuth,
            format!("{who} rejected the gateway's API key for it (Anthropic {label})"),
        ),
        (402 | 403, _) | (_, Some("permission_error" | "billing_error")) => Error::new(
            ErrorKind::UpstreamAuth,
            format!(
                "{who} refused the gateway's access (Anthropic {label}): {}",
                message.as_deref().unwrap_or("forbidden")
            ),
        ),
        (408 | 504, _) | (_, Some("timeout_error")) => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("{who} timed out (Anthropic {label})"),
        ),
        (429, _) | (_, Some("rate_limit_error")) => Error::new(
            ErrorKind::UpstreamRateLimited,
            message.unwrap_or_else(|| format!("{who} is rate limiting requests")),
        ),
        (400..=499, _) => Error::new(
            ErrorKind::UpstreamRejected(status),
            message.unwrap_or_else(|| format!("{who} rejected the request (Anthropic {label})")),
        )
        .with_upstream_detail(UpstreamDetail {
            error_type: kind.clone(),
            code: None,
            param: None,
        }),
        // 500 api_error, 529 overloaded_error and anything else: retryable elsewhere.
        _ => Error::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "{who} failed (Anthropic {label}){}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
    };
    match retry_after {
        Some(delay) if error.kind().is_retryable() => error.with_retry_after(delay),
        _ => error,
    }
}

/// The `error.type` and `error.message` of a body, whatever its shape; a body that is not
/// JSON is its own message.
fn parse(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return (None, (!text.is_empty()).then(|| clip(text)));
    };
    let error = match value.get("error") {
        Some(Value::String(s)) => return (None, Some(clip(s))),
        Some(e @ Value::Object(_)) => e,
        _ => &value,
    };
    let text = |k: &str| error.get(k).and_then(Value::as_str).map(str::to_owned);
    (text("type"), text("message").map(|m| clip(&m)))
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The status and Anthropic `error.type` a client of `/v1/messages` gets for an error. The
/// statuses are the gateway's (§3 of the spec); an upstream's own Anthropic-style type is
/// kept for a passed-through rejection.
pub fn status_and_type(error: &Error) -> (u16, &str) {
    let kind = error.kind();
    let anthropic = match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::ModelNotFound | ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded | ErrorKind::UpstreamRateLimited => {
            "rate_limit_error"
        }
        ErrorKind::UpstreamRejected(status) => {
            let upstream = error.error_type();
            if status_of_type(upstream) != 500 || upstream == "api_error" {
                upstream
            } else {
                match status {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    _ => "invalid_request_error",
                }
            }
        }
        ErrorKind::UpstreamTimeout => "timeout_error",
        ErrorKind::Unavailable => "overloaded_error",
        ErrorKind::UpstreamUnavailable
        | ErrorKind::UpstreamAuth
        | ErrorKind::UpstreamBadResponse
        | ErrorKind::UpstreamTruncated
        | ErrorKind::Internal => "api_error",
    };
    (kind.status(), anthropic)
}

/// `{"type": "error", "error": {"type": …, "message": …}}`, Anthropic's error body.
pub fn error_body(error_type: &str, message: &str) -> Bytes {
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    Bytes::from(body.to_string())
}

/// The status and Anthropic error body for an error, in one call.
pub fn error_response(error: &Error) -> (u16, Bytes) {
    let (status, kind) = status_and_type(error);
    (status, error_body(kind, error.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_types() {
        let e = error_from_event(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
        assert!(e.message().contains("Overloaded"));
        let e = error_from_event(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::UpstreamRateLimited);
        let e = error_from_event(b"garbage");
        assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
    }

    #[test]
    fn ingress_types() {
        let cases = [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::Authentication, 401, "authentication_error"),
            (ErrorKind::PermissionDenied, 403, "permission_error"),
            (ErrorKind::ModelNotFound, 404, "not_found_error"),
            (ErrorKind::PayloadTooLarge, 413, "request_too_large"),
            (ErrorKind::QuotaExceeded, 429, "rate_limit_error"),
            (ErrorKind::UpstreamAuth, 502, "api_error"),
            (ErrorKind::UpstreamTimeout, 504, "timeout_error"),
            (ErrorKind::Unavailable, 503, "overloaded_error"),
            (
                ErrorKind::UpstreamRejected(422),
                422,
                "invalid_request_error",
            ),
        ];
        for (kind, status, t) in cases {
            assert_eq!(
                status_and_type(&Error::new(kind, "x")),
                (status, t),
                "{kind:?}"
            );
        }
        let upstream = Error::new(ErrorKind::UpstreamRejected(400), "x").with_upstream_detail(
            UpstreamDetail {
                error_type: Some("not_found_error".into()),
                ..UpstreamDetail::default()
            },
        );
        assert_eq!(status_and_type(&upstream), (400, "not_found_error"));
        let (status, body) = error_response(&Error::invalid_request("bad \"x\""));
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad \"x\""}})
        );
    }
}
