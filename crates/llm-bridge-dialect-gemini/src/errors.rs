//! Gemini's error answers (`{"error": {"code", "message", "status", "details": [...]}}`,
//! google.rpc.Status, sometimes wrapped in a one-element list) → [`Error`].
//!
//! Gemini says "your key is wrong" with a 400 (`ErrorInfo.reason = API_KEY_INVALID`), not a
//! 401: that is the gateway's own provider key, so the client gets a 502, not a 400 that
//! would blame its request. The `DebugInfo` details, which can quote the key, are never read.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use llm_bridge_core::{Error, ErrorKind, UpstreamDetail};
use serde::Deserialize;
use serde_json::Value;

use crate::wire::ErrorBody;

/// A request the translation cannot express: 400 naming the parameter.
pub(crate) fn bad(param: impl Into<String>, message: impl Into<String>) -> Error {
    Error::invalid_request(message).with_param(param)
}

/// Longest upstream message passed on; beyond it the text is cut.
const MAX_MESSAGE: usize = 2000;

/// What an error body says.
#[derive(Debug, Default)]
struct Parsed {
    code: Option<u64>,
    message: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    retry_delay: Option<Duration>,
}

/// The error for a non-2xx answer from Gemini.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let parsed = parse_body(body);
    let who = format!("provider '{provider}'");
    classify(&who, status.as_u16(), &parsed, Some(headers)).with_provider(provider)
}

/// The error for an error object Gemini sent where an answer was expected: in an event of a
/// stream, or as the whole body of an answer to a stream request.
pub fn from_stream_event(provider: &str, data: &[u8]) -> Error {
    from_parsed(&parse_body(data)).with_provider(provider)
}

/// The error for the `error` member of a response object.
pub(crate) fn from_error_value(error: &Value) -> Error {
    let wrapped = serde_json::json!({ "error": error });
    from_parsed(&parse_value(&wrapped))
}

fn from_parsed(parsed: &Parsed) -> Error {
    // Gemini puts the HTTP status it would have answered with in `code`.
    let code = parsed
        .code
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    classify("Gemini", code, parsed, None)
}

/// An answer that is not Gemini's protocol.
pub(crate) fn bad_response(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::UpstreamBadResponse, message)
}

fn classify(who: &str, code: u16, p: &Parsed, headers: Option<&HeaderMap>) -> Error {
    let status = p.status.as_deref().unwrap_or("");
    let label = if status.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code} {status}")
    };
    let key_invalid = p.reason.as_deref() == Some("API_KEY_INVALID")
        || (code == 400
            && p.message
                .as_deref()
                .is_some_and(|m| m.contains("API key not valid")));
    if key_invalid || code == 401 {
        // Gemini's text may quote part of the key: leave it out.
        return Error::new(
            ErrorKind::UpstreamAuth,
            format!(
                "{who} rejected the gateway's API key for it (Gemini {label}{})",
                p.reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            ),
        );
    }
    let message = p.message.clone();
    match code {
        403 => Error::new(
            ErrorKind::UpstreamAuth,
            format!(
                "{who} refused the gateway's access (Gemini {label}): {}",
                message.as_deref().unwrap_or("permission denied")
            ),
        ),
        408 => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("{who} timed out (Gemini {label})"),
        ),
        429 => {
            let mut e = Error::new(
                ErrorKind::UpstreamRateLimited,
                message.unwrap_or_else(|| format!("{who} is rate limiting requests")),
            );
            // `Retry-After` headers are read by the transport (provider-gemini), which knows
            // every form they take; the body's `retryDelay` is Gemini's own.
            let _ = headers;
            let delay = p.retry_delay;
            if let Some(delay) = delay {
                e = e.with_retry_after(delay);
            }
            e
        }
        // 499 is Gemini cancelling on its side, not a fault of the client's request.
        400..=498 => Error::new(
            ErrorKind::UpstreamRejected(code),
            message.unwrap_or_else(|| format!("{who} rejected the request (Gemini {label})")),
        )
        .with_upstream_detail(UpstreamDetail {
            error_type: None,
            code: p.reason.clone().or_else(|| p.status.clone()),
            param: None,
        }),
        _ => Error::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "{who} failed (Gemini {label}){}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
    }
}

fn parse_body(body: &[u8]) -> Parsed {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => parse_value(&value),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            Parsed {
                message: (!text.is_empty()).then(|| clip(text)),
                ..Parsed::default()
            }
        }
    }
}

fn parse_value(value: &Value) -> Parsed {
    // Streaming endpoints answer some failures with a list of one error object.
    let value = match value {
        Value::Array(items) => items.first().unwrap_or(value),
        other => other,
    };
    if let Some(Value::String(s)) = value.get("error") {
        return Parsed {
            message: Some(clip(s)),
            ..Parsed::default()
        };
    }
    let Ok(ErrorBody {
        error: Some(status),
    }) = ErrorBody::deserialize(value)
    else {
        return Parsed::default();
    };
    let mut parsed = Parsed {
        code: status.code,
        message: status.message.as_deref().map(clip),
        status: status.status,
        ..Parsed::default()
    };
    for detail in &status.details {
        let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("google.rpc.ErrorInfo") {
            parsed.reason = detail
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
        } else if kind.ends_with("google.rpc.RetryInfo") {
            parsed.retry_delay = detail
                .get("retryDelay")
                .and_then(Value::as_str)
                .and_then(proto_duration);
        }
    }
    parsed
}

/// A protobuf Duration in JSON: `"38s"`, `"1.5s"`, `"45.837906927s"`.
fn proto_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
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

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn an_invalid_key_is_the_gateways_fault_and_never_quoted() {
        let body = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"},{"@type":"type.googleapis.com/google.rpc.DebugInfo","detail":"Invalid API key: AIza-secret-1234"}]}}"#;
        let e = from_status("gemini", status(400), &HeaderMap::new(), body);
        assert_eq!(e.kind(), ErrorKind::UpstreamAuth);
        assert_eq!(e.status(), 502);
        assert!(e.message().contains("API_KEY_INVALID"), "{}", e.message());
        assert!(!e.message().contains("AIza"));
        assert_eq!(e.provider(), Some("gemini"));
    }

    #[test]
    fn forbidden_is_a_502_with_the_reason() {
        let body = br#"{"error":{"code":403,"message":"Generative Language API has not been used in project 1 before or it is disabled.","status":"PERMISSION_DENIED"}}"#;
        let e = from_status("g", status(403), &HeaderMap::new(), body);
        assert_eq!(e.status(), 502);
        assert!(e.message().contains("has not been used"));
        assert!(e.message().contains("PERMISSION_DENIED"));
    }

    #[test]
    fn rate_limits_take_the_delay_from_retry_info() {
        let body = br#"[{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"45.5s"}]}}]"#;
        let e = from_status("g", status(429), &HeaderMap::new(), body);
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(45_500)));
        assert_eq!(e.message(), "You exceeded your current quota");
        // A `Retry-After` header is the transport's to read (provider-gemini).
    }

    #[test]
    fn not_found_keeps_status_and_message() {
        let body = br#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#;
        let e = from_status("g", status(404), &HeaderMap::new(), body);
        assert_eq!(e.status(), 404);
        assert_eq!(e.code(), Some("NOT_FOUND"));
        assert!(e.message().starts_with("models/gemini-9 is not found"));
    }

    #[test]
    fn server_errors_and_garbage() {
        let e = from_status("g", status(503), &HeaderMap::new(), b"<html>down</html>");
        assert_eq!(e.status(), 502);
        assert!(e.message().contains("503") && e.message().contains("down"));
        let e = from_stream_event(
            "g",
            br#"{"error":{"code":499,"message":"The operation was cancelled.","status":"CANCELLED"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
        let e = from_stream_event("g", br#"{"error":{"code":429,"message":"slow"}}"#);
        assert_eq!(e.kind(), ErrorKind::UpstreamRateLimited);
        let e = from_error_value(&serde_json::json!({"code": "x", "message": 5}));
        assert_eq!(e.status(), 502);
    }

    #[test]
    fn durations() {
        assert_eq!(proto_duration("38s"), Some(Duration::from_secs(38)));
        assert_eq!(proto_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(proto_duration("-1s"), None);
        assert_eq!(proto_duration("soon"), None);
    }
}
