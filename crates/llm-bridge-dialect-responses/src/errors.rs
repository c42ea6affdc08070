//! Errors in OpenAI's shape: Responses clients get the gateway's own error body.

use bytes::Bytes;
use llm_bridge_core::Error;
use serde_json::json;

/// `{"error": {"message", "type", "param", "code"}}`, exactly what the gateway answers on
/// `/v1/chat/completions`.
pub fn error_body(e: &Error) -> Bytes {
    Bytes::from(
        json!({"error": {
            "message": e.message(),
            "type": e.error_type(),
            "param": e.param(),
            "code": e.code(),
        }})
        .to_string(),
    )
}

/// The status and body answering an error that happened before the stream started.
pub fn error_response(e: &Error) -> (u16, Bytes) {
    (e.status(), error_body(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use llm_bridge_core::ErrorKind;
    use serde_json::Value;

    #[test]
    fn the_body_is_openais() {
        let e = Error::invalid_request("bad input").with_param("input");
        let (status, body) = error_response(&e);
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "bad input", "type": "invalid_request_error", "param": "input", "code": null}})
        );
        let (status, body) = error_response(&Error::new(ErrorKind::RateLimited, "slow down"));
        assert_eq!(status, 429);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
}
