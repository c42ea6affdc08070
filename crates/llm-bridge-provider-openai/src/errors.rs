//! OpenAI-style error answers (`{"error": {"message", "type", "code", "param"}}` and the
//! looser shapes compatible providers send) turned into [`Error`].

use http::{HeaderMap, StatusCode};
use llm_bridge_core::{Error, ErrorKind, UpstreamDetail};
use serde_json::Value;

/// Longest upstream message passed on; beyond it the text is cut.
const MAX_MESSAGE: usize = 2000;

/// The error for a non-2xx upstream answer.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let (message, detail) = parse_body(body);
    let code = status.as_u16();
    let error = match code {
        401 => Error::new(
            ErrorKind::UpstreamAuth,
            // The upstream's own text may quote part of our key: leave it out.
            format!(
                "provider '{provider}' rejected the gateway's API key for it (upstream HTTP 401)"
            ),
        ),
        403 => Error::new(
            ErrorKind::UpstreamAuth,
            format!(
                "provider '{provider}' refused the gateway's access (upstream HTTP 403): {}",
                message.as_deref().unwrap_or("forbidden")
            ),
        ),
        408 => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("provider '{provider}' timed out (upstream HTTP 408)"),
        ),
        429 => {
            let mut e = Error::new(
                ErrorKind::UpstreamRateLimited,
                message
                    .unwrap_or_else(|| format!("provider '{provider}' is rate limiting requests")),
            );
            if let Some(delay) = llm_bridge_http::retry_after(headers) {
                e = e.with_retry_after(delay);
            }
            e
        }
        400..=499 => Error::new(
            ErrorKind::UpstreamRejected(code),
            message.unwrap_or_else(|| {
                format!("provider '{provider}' rejected the request (HTTP {code})")
            }),
        )
        .with_upstream_detail(detail),
        500..=599 => Error::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "provider '{provider}' failed (upstream HTTP {code}){}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
        _ => Error::new(
            ErrorKind::UpstreamBadResponse,
            format!("provider '{provider}' answered with unexpected HTTP status {code}"),
        ),
    };
    error.with_provider(provider)
}

/// The error carried by an error event inside a stream.
pub fn from_stream_event(provider: &str, data: &[u8]) -> Error {
    let (message, detail) = parse_body(data);
    let status = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|v| v.get("error")?.get("code")?.as_u64())
        .and_then(|c| u16::try_from(c).ok());
    let kind = match status {
        Some(429) => ErrorKind::UpstreamRateLimited,
        Some(c @ 400..=499) if c != 401 && c != 403 => ErrorKind::UpstreamRejected(c),
        _ => ErrorKind::UpstreamUnavailable,
    };
    Error::new(
        kind,
        message.unwrap_or_else(|| format!("provider '{provider}' reported an error mid-stream")),
    )
    .with_upstream_detail(detail)
    .with_provider(provider)
}

/// The message and OpenAI fields of an error body, whatever its shape.
fn parse_body(body: &[u8]) -> (Option<String>, UpstreamDetail) {
    let mut detail = UpstreamDetail::default();
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return ((!text.is_empty()).then(|| clip(text)), detail);
    };
    let error = match value.get("error") {
        Some(Value::Object(_)) => value.get("error"),
        Some(Value::String(s)) => return (Some(clip(s)), detail),
        _ => Some(&value),
    };
    let Some(error) = error else {
        return (None, detail);
    };
    detail.error_type = error.get("type").and_then(text_of);
    detail.code = error.get("code").and_then(text_of);
    detail.param = error.get("param").and_then(text_of);
    let message = ["message", "detail", "msg"]
        .iter()
        .find_map(|k| error.get(*k).and_then(text_of))
        .map(|m| clip(&m));
    (message, detail)
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_upstream_classification_of_a_400() {
        let body = br#"{"error":{"code":"unsupported_value","message":"Unsupported value: 'messages[0].role' does not support 'system' with this model.","param":"messages[0].role","type":"invalid_request_error"}}"#;
        let e = from_status("closeai", StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert_eq!(e.status(), 400);
        assert_eq!(e.code(), Some("unsupported_value"));
        assert_eq!(e.param(), Some("messages[0].role"));
        assert!(e.message().starts_with("Unsupported value"));
    }

    #[test]
    fn a_rejected_provider_key_is_a_502_without_the_upstream_text() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let e = from_status("closeai", StatusCode::UNAUTHORIZED, &HeaderMap::new(), body);
        assert_eq!(e.status(), 502);
        assert!(!e.message().contains("sk-"));
        assert_eq!(e.code(), Some("upstream_error"));
    }

    #[test]
    fn rate_limits_keep_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        let e = from_status("d", StatusCode::TOO_MANY_REQUESTS, &h, b"slow down");
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(3)));
        assert_eq!(e.message(), "slow down");
    }

    #[test]
    fn server_errors_are_502_with_their_text() {
        let e = from_status(
            "d",
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            br#"{"detail":"overloaded"}"#,
        );
        assert_eq!(e.status(), 502);
        assert!(e.message().contains("overloaded"));
        assert!(e.message().contains("503"));
    }

    #[test]
    fn stream_error_events() {
        let e = from_stream_event(
            "d",
            br#"{"error":{"message":"boom","type":"server_error"}}"#,
        );
        assert_eq!(e.status(), 502);
        assert_eq!(e.message(), "boom");
    }
}
