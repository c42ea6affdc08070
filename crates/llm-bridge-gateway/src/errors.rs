//! Errors rendered the way OpenAI renders them.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use llm_bridge_core::{Error, ErrorKind};
use serde_json::json;

use crate::body::GatewayBody;

/// `{"message", "type", "param", "code"}`.
pub(crate) fn error_object(e: &Error) -> serde_json::Value {
    json!({
        "message": e.message(),
        "type": e.error_type(),
        "param": e.param(),
        "code": e.code(),
    })
}

/// `{"error": {…}}` as bytes.
pub(crate) fn error_body(e: &Error) -> Bytes {
    Bytes::from(json!({ "error": error_object(e) }).to_string())
}

/// The HTTP answer for an error that happened before any byte of the response was sent.
pub(crate) fn error_response(e: &Error) -> Response<GatewayBody> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(GatewayBody::full(error_body(e)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(delay) = e.retry_after() {
        // Whole seconds, rounded up: a client that waits this long is not too early.
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if e.kind() == ErrorKind::Authentication {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
