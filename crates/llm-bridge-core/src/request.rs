//! The chat completion request as the client sent it.
//!
//! The body is kept as the client's bytes (see `raw`), or as a JSON object once something
//! needs one, so that every field the client sent reaches an OpenAI-compatible upstream
//! untouched; only the fields the gateway must understand are validated and given accessors.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::trace::TraceParent;

mod raw;

use raw::Raw;

/// `bytes` with every `\\uXXXX` escape of an unpaired surrogate replaced by `\\ufffd`, or
/// `None` if there is none.
fn replace_lone_surrogates(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    // The code unit of a `\uXXXX` escape starting at `at`.
    let escape = |at: usize| -> Option<u16> {
        (bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u'))
            .then(|| hex(at + 2))
            .flatten()
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let Some(unit) = escape(i) else {
            // Another escape (`\\\\`, `\\"`, …): copy it whole so its second byte is not
            // taken for the start of an escape.
            out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
            i += 2;
            continue;
        };
        let high = (0xD800..0xDC00).contains(&unit);
        let low = (0xDC00..0xE000).contains(&unit);
        if high && escape(i + 6).is_some_and(|next| (0xDC00..0xE000).contains(&next)) {
            out.extend_from_slice(&bytes[i..i + 12]);
            i += 12;
        } else if high || low {
            out.extend_from_slice(b"\\ufffd");
            changed = true;
            i += 6;
        } else {
            out.extend_from_slice(&bytes[i..i + 6]);
            i += 6;
        }
    }
    changed.then_some(out)
}

/// A stable 64-bit hash (FNV-1a) of a session name: the same in every process, so that
/// instances behind a load balancer pick the same provider key for a session.
pub fn session_hash(session: &str) -> u64 {
    session.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A validated `POST /v1/chat/completions` body.
#[derive(Clone)]
pub struct ChatRequest {
    /// The client's bytes, while no edit has needed the parsed body: forwarded to an
    /// OpenAI-compatible upstream with only the gateway's changes spliced in. Boxed: every
    /// future on the request path holds a `ChatRequest`, some several times over, and an
    /// unboxed `Raw` made the handler's future 3 KB larger and each open stream 8 KB.
    raw: Option<Box<Raw>>,
    /// The body as a JSON object: given, or parsed from `raw` (with its edits) on first need.
    /// Once `raw` is gone this is the request.
    body: OnceLock<Map<String, Value>>,
    /// The session named outside the body (an `x-session-id` header), if any.
    session: Option<u64>,
    /// The trace context the upstream request carries (`traceparent`), if any.
    traceparent: Option<TraceParent>,
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRequest")
            .field("body", self.body())
            .field("session", &self.session)
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

impl PartialEq for ChatRequest {
    fn eq(&self, other: &Self) -> bool {
        self.body() == other.body()
            && self.session == other.session
            && self.traceparent == other.traceparent
    }
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes(Bytes::copy_from_slice(bytes))
    }

    /// Parses and validates a request body, keeping the bytes (shared, not copied) for the
    /// upstream request.
    pub fn from_bytes(bytes: Bytes) -> Result<Self> {
        if let Some(raw) = Raw::read(bytes.clone()) {
            return Ok(ChatRequest {
                raw: Some(Box::new(raw)),
                body: OnceLock::new(),
                session: None,
                traceparent: None,
            });
        }
        Self::parse(&bytes)
    }

    /// Parses a body into a JSON tree and validates it: for what `Raw::read` does not take,
    /// and for the errors.
    fn parse(bytes: &[u8]) -> Result<Self> {
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(value) => value,
            // JavaScript strings may hold half a surrogate pair, and OpenAI accepts them as
            // U+FFFD; serde_json refuses them. Only on this error path is the body rewritten.
            Err(e) => match replace_lone_surrogates(bytes) {
                Some(fixed) => serde_json::from_slice(&fixed),
                None => Err(e),
            }
            .map_err(|e| Error::invalid_request(format!("request body is not valid JSON: {e}")))?,
        };
        Self::from_value(value)
    }

    /// Validates an already parsed request body.
    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(body) = value else {
            return Err(Error::invalid_request("request body must be a JSON object"));
        };
        validate(&body)?;
        Ok(ChatRequest {
            raw: None,
            body: OnceLock::from(body),
            session: None,
            traceparent: None,
        })
    }

    /// Names the request's session (from an `x-session-id` header); it wins over the
    /// session fields of the body.
    pub fn set_session(&mut self, session: &str) {
        self.session = Some(session_hash(session));
    }

    /// The session this request belongs to, hashed: the `x-session-id` it was given, else
    /// its `prompt_cache_key`, else its `user` (where Anthropic's `metadata.user_id` lands).
    /// Requests of one session go to the same route target and provider key while those
    /// stay healthy, so that the provider's prompt cache keeps hitting.
    pub fn session(&self) -> Option<u64> {
        self.session.or_else(|| match &self.raw {
            Some(raw) => raw.session(),
            None => ["prompt_cache_key", "user"]
                .iter()
                .find_map(|k| self.body().get(*k)?.as_str().filter(|s| !s.is_empty()))
                .map(session_hash),
        })
    }

    /// Sets the `traceparent` the upstream request carries (the router sets it per attempt,
    /// to the attempt's span).
    pub fn set_traceparent(&mut self, traceparent: Option<TraceParent>) {
        self.traceparent = traceparent;
    }

    /// The `traceparent` the upstream request carries, if the request is traced.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.traceparent
    }

    /// The model the client asked for (`provider/model`, an alias, or a bare name).
    pub fn model(&self) -> &str {
        match &self.raw {
            Some(raw) => raw.model(),
            None => self
                .body()
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        }
    }

    /// Rewrites the model name (to the upstream's name).
    pub fn set_model(&mut self, model: &str) {
        if let Some(raw) = &mut self.raw {
            raw.set_model(model);
        }
        if let Some(body) = self.body.get_mut() {
            body.insert("model".into(), Value::String(model.to_owned()));
        }
    }

    /// Whether the client asked for a server-sent-event stream.
    pub fn stream(&self) -> bool {
        match &self.raw {
            Some(raw) => raw.stream(),
            None => self
                .body()
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// `stream` as given (by the client or since), `None` when absent or null.
    pub fn stream_given(&self) -> Option<bool> {
        match &self.raw {
            Some(raw) => raw.stream_given(),
            None => self.body().get("stream").and_then(Value::as_bool),
        }
    }

    /// Sets `stream`.
    pub fn set_stream(&mut self, stream: bool) {
        if let Some(raw) = &mut self.raw {
            raw.set_stream(stream);
        }
        if let Some(body) = self.body.get_mut() {
            body.insert("stream".into(), Value::Bool(stream));
        }
    }

    /// Whether the client asked for the final usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        match &self.raw {
            Some(raw) => raw.include_usage(),
            None => self
                .body()
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// Sets `stream_options.include_usage`, keeping any other stream option.
    pub fn set_include_usage(&mut self, include: bool) {
        if let Some(raw) = &mut self.raw {
            raw.set_include_usage(include);
        }
        if let Some(body) = self.body.get_mut() {
            set_include_usage(body, include);
        }
    }

    /// `max_tokens`, when it is given.
    pub fn max_tokens(&self) -> Option<u64> {
        match &self.raw {
            Some(raw) => raw.max_tokens(),
            None => self.body().get("max_tokens").and_then(Value::as_u64),
        }
    }

    /// `max_completion_tokens`, when it is given.
    pub fn max_completion_tokens(&self) -> Option<u64> {
        match &self.raw {
            Some(raw) => raw.max_completion_tokens(),
            None => self
                .body()
                .get("max_completion_tokens")
                .and_then(Value::as_u64),
        }
    }

    /// The messages, as JSON values.
    pub fn messages(&self) -> &[Value] {
        self.body()
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The messages as typed values, for adapters that translate them.
    pub fn typed_messages(&self) -> Result<Vec<Message>> {
        self.messages()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Message::deserialize_value(m).map_err(|e| {
                    Error::invalid_request(format!("messages[{i}] is not a valid message: {e}"))
                        .with_param(format!("messages[{i}]"))
                })
            })
            .collect()
    }

    /// One field of the body.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.body().get(key)
    }

    /// The whole body.
    pub fn body(&self) -> &Map<String, Value> {
        self.body.get_or_init(|| {
            self.raw
                .as_ref()
                .map(|raw| raw.to_map())
                .unwrap_or_default()
        })
    }

    /// The whole body, for targeted edits. The caller keeps it valid.
    pub fn body_mut(&mut self) -> &mut Map<String, Value> {
        self.body();
        // From here on the parsed body is the request.
        self.raw = None;
        self.body.get_mut().expect("the body was parsed above")
    }

    /// The body, consumed.
    pub fn into_body(mut self) -> Map<String, Value> {
        self.body();
        self.body.take().unwrap_or_default()
    }

    /// The body serialised as JSON: the client's bytes with the gateway's edits, when the
    /// body was never edited otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match &self.raw {
            Some(raw) => raw.to_bytes(),
            // Serialising a `Map<String, Value>` cannot fail: keys are strings, numbers are
            // finite.
            None => Bytes::from(serde_json::to_vec(self.body()).unwrap_or_default()),
        }
    }
}

/// Sets `stream_options.include_usage` in a body, keeping any other stream option.
fn set_include_usage(body: &mut Map<String, Value>, include: bool) {
    let options = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(map) = options {
        set_include_usage_in(map, include);
    }
}

/// Sets `include_usage` in a `stream_options` object.
fn set_include_usage_in(options: &mut Map<String, Value>, include: bool) {
    options.insert("include_usage".into(), Value::Bool(include));
}

fn validate(body: &Map<String, Value>) -> Result<()> {
    match body.get("model") {
        None | Some(Value::Null) => {
            return Err(
                Error::invalid_request("missing required parameter: 'model'").with_param("model"),
            );
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(Error::invalid_request("'model' must not be empty").with_param("model"));
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(Error::invalid_request(format!(
                "'model' must be a string, found {}",
                kind_of(other)
            ))
            .with_param("model"));
        }
    }
    match body.get("messages") {
        None | Some(Value::Null) => {
            return Err(
                Error::invalid_request("missing required parameter: 'messages'")
                    .with_param("messages"),
            );
        }
        Some(Value::Array(messages)) => {
            if messages.is_empty() {
                return Err(
                    Error::invalid_request("'messages' must contain at least one message")
                        .with_param("messages"),
                );
            }
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role");
                if !m.is_object() {
                    return Err(Error::invalid_request(format!(
                        "messages[{i}] must be an object, found {}",
                        kind_of(m)
                    ))
                    .with_param(format!("messages[{i}]")));
                }
                if !matches!(role, Some(Value::String(_))) {
                    return Err(Error::invalid_request(format!(
                        "messages[{i}].role is required and must be a string"
                    ))
                    .with_param(format!("messages[{i}].role")));
                }
            }
        }
        Some(other) => {
            return Err(Error::invalid_request(format!(
                "'messages' must be an array, found {}",
                kind_of(other)
            ))
            .with_param("messages"));
        }
    }
    expect(body, "stream", "a boolean", Value::is_boolean)?;
    expect(body, "stream_options", "an object", Value::is_object)?;
    expect(body, "max_tokens", "an integer", is_non_negative_integer)?;
    expect(
        body,
        "max_completion_tokens",
        "an integer",
        is_non_negative_integer,
    )?;
    Ok(())
}

fn is_non_negative_integer(v: &Value) -> bool {
    v.as_u64().is_some()
}

fn expect(
    body: &Map<String, Value>,
    key: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<()> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if ok(v) => Ok(()),
        Some(v) => Err(Error::invalid_request(format!(
            "'{key}' must be {what}, found {}",
            kind_of(v)
        ))
        .with_param(key)),
    }
}

/// The JSON type name of a value, for error messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn lone_surrogates_are_accepted_as_replacement_characters() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"a\ud800b\udc00c \ud83d\ude00 \\ud800"}]}"#;
        let request = ChatRequest::from_slice(body).unwrap();
        assert_eq!(
            request.messages()[0]["content"],
            "a\u{fffd}b\u{fffd}c \u{1f600} \\ud800"
        );
        // Other bad JSON is still refused.
        assert!(ChatRequest::from_slice(br#"{"model":"m","messages":[],"#).is_err());
        assert!(
            ChatRequest::from_slice(
                br#"{"model":"m","messages":[{"role":"user","content":"\ud800"#
            )
            .is_err()
        );
    }
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn err(v: Value) -> Error {
        ChatRequest::from_value(v).expect_err("should be rejected")
    }

    #[test]
    fn accepts_a_minimal_request_and_keeps_unknown_fields() {
        let r = ChatRequest::from_value(json!({
            "model": "deepseek/deepseek-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "some_future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(r.model(), "deepseek/deepseek-chat");
        assert!(!r.stream());
        assert_eq!(r.get("some_future_field"), Some(&json!({"x": 1})));
    }

    #[test]
    fn rejects_what_the_gateway_cannot_route() {
        assert_eq!(err(json!([])).kind(), ErrorKind::InvalidRequest);
        assert_eq!(err(json!({"messages": []})).param(), Some("model"));
        assert_eq!(
            err(json!({"model": 3, "messages": []})).param(),
            Some("model")
        );
        assert_eq!(err(json!({"model": "m"})).param(), Some("messages"));
        assert_eq!(
            err(json!({"model": "m", "messages": []})).param(),
            Some("messages")
        );
        assert_eq!(
            err(json!({"model": "m", "messages": "hi"})).param(),
            Some("messages")
        );
        assert_eq!(
            err(json!({"model": "m", "messages": [{"content": "x"}]})).param(),
            Some("messages[0].role")
        );
        assert_eq!(
            err(json!({"model": "m", "messages": [{"role": "user"}], "stream": "yes"})).param(),
            Some("stream")
        );
        assert_eq!(
            err(json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": -1})).param(),
            Some("max_tokens")
        );
    }

    #[test]
    fn invalid_json_is_a_400() {
        let e = ChatRequest::from_slice(b"{not json").expect_err("invalid");
        assert_eq!(e.status(), 400);
        assert!(e.message().contains("not valid JSON"));
    }

    #[test]
    fn include_usage_is_set_without_losing_other_options() {
        let mut r = ChatRequest::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "stream": true, "stream_options": {"future": true}
        }))
        .unwrap();
        assert!(!r.include_usage());
        r.set_include_usage(true);
        assert!(r.include_usage());
        assert_eq!(
            r.get("stream_options"),
            Some(&json!({"future": true, "include_usage": true}))
        );
    }
}
