//! Usage of native Responses answers, read without changing them.

use llm_bridge_core::Usage;
use serde::Deserialize;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// A `response` object, or an event carrying one.
#[derive(Deserialize)]
struct WireObject {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    response: Option<Box<WireObject>>,
}

impl WireUsage {
    fn to_usage(&self) -> Option<Usage> {
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        let input = self.input_tokens.unwrap_or(0);
        let output = self.output_tokens.unwrap_or(0);
        let details = self.input_tokens_details.as_ref();
        Some(Usage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: self.total_tokens.unwrap_or(input.saturating_add(output)),
            cached_tokens: details.and_then(|d| d.cached_tokens).unwrap_or(0),
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            cache_write_tokens: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
        })
    }
}

/// The usage of a native Responses JSON: a `response` object's `usage`, or the
/// `response.usage` of a stream event (`response.completed`, `response.incomplete`,
/// `response.failed`). `None` when it has none or is not JSON.
pub fn usage_from_response(json: &[u8]) -> Option<Usage> {
    let object: WireObject = serde_json::from_slice(json).ok()?;
    object
        .usage
        .as_ref()
        .and_then(WireUsage::to_usage)
        .or_else(|| {
            object
                .response
                .as_ref()
                .and_then(|r| r.usage.as_ref())
                .and_then(WireUsage::to_usage)
        })
}

/// A stream event's `type` and the usage of the response it carries, if it is one of the
/// events that end a stream (`response.completed`, `response.incomplete`,
/// `response.failed`).
pub(crate) fn final_event(json: &[u8]) -> Option<Option<Usage>> {
    let object: WireObject = serde_json::from_slice(json).ok()?;
    match object.kind.as_deref() {
        Some("response.completed" | "response.incomplete" | "response.failed") => Some(
            object
                .response
                .as_ref()
                .and_then(|r| r.usage.as_ref())
                .and_then(WireUsage::to_usage),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn usage_of_a_response_and_of_an_event() {
        let body = br#"{"id":"resp_1","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":15}}"#;
        let u = usage_from_response(body).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (10, 5, 15)
        );
        assert_eq!((u.cached_tokens, u.reasoning_tokens), (4, 2));
        let event = br#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":1}}}"#;
        assert_eq!(usage_from_response(event).unwrap().total_tokens, 4);
        assert!(usage_from_response(br#"{"usage":null}"#).is_none());
        assert!(usage_from_response(b"nope").is_none());
    }
}
