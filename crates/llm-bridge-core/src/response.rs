//! Chat completion responses and stream chunks, in OpenAI's format.
//!
//! Providers hand the gateway serialised OpenAI JSON (`chat.completion` or
//! `chat.completion.chunk`), so a pass-through adapter forwards upstream bytes untouched. The
//! inspection functions here read just what the gateway needs from that JSON (usage, the text
//! delivered) without building a tree of it.

use std::borrow::Cow;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A complete (non-streamed) answer: one `chat.completion` JSON object.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The `chat.completion` object, serialised.
    pub body: Bytes,
}

/// One `chat.completion.chunk` JSON object of a stream.
#[derive(Debug, Clone)]
pub struct ChatChunk {
    /// The chunk, serialised (without the SSE `data: ` framing).
    pub data: Bytes,
}

/// A stream of chunks; it ends after the last chunk (the `[DONE]` marker is not a chunk).
/// An `Err` item ends the stream: the gateway sends it as an error event.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated, reasoning included.
    pub completion_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic bills them at a premium);
    /// part of `prompt_tokens`, apart from `cached_tokens`.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Usage from prompt and completion counts, total computed.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Usage::default()
        }
    }

    /// The `usage` object in OpenAI's shape, details included. Cache writes (a field OpenAI
    /// does not have) appear as `prompt_tokens_details.cache_write_tokens` when there are any.
    pub fn to_openai_json(&self) -> serde_json::Value {
        let mut usage = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        });
        if self.cache_write_tokens > 0 {
            usage["prompt_tokens_details"]["cache_write_tokens"] = self.cache_write_tokens.into();
        }
        usage
    }
}

/// OpenAI's usage object and the variants compatible providers send.
#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<WireCompletionDetails>,
    /// Deepseek's name for cached prompt tokens.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// Written by the gateway's Anthropic translation (not an OpenAI field).
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireCompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        let prompt = w.prompt_tokens.unwrap_or(0);
        let completion = w.completion_tokens.unwrap_or(0);
        let details = w.prompt_tokens_details;
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: w.total_tokens.unwrap_or(prompt.saturating_add(completion)),
            cached_tokens: details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .or(w.prompt_cache_hit_tokens)
                .unwrap_or(0),
            reasoning_tokens: w
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            cache_write_tokens: details.and_then(|d| d.cache_write_tokens).unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<WireChoice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(default, borrow)]
    message: Option<WireDelta<'a>>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Deserialize)]
pub(crate) struct WireToolCall<'a> {
    #[serde(default, borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Deserialize)]
struct WireFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// What the gateway needs to know of one chunk or completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The usage the object reports, if any.
    pub usage: Option<Usage>,
    /// Whether it has at least one choice. A chunk with usage and no choices is the final
    /// usage chunk OpenAI sends when `include_usage` was asked for.
    pub has_choices: bool,
}

/// Reads usage and appends the generated text (content, reasoning, refusal, tool names and
/// arguments) of a `chat.completion.chunk` or `chat.completion` to `text`, so that the
/// gateway can estimate tokens when the upstream reports none.
pub fn inspect(
    json: &[u8],
    mut text: Option<&mut String>,
) -> Result<Inspection, serde_json::Error> {
    if let Some(seen) = crate::chunk_scan::scan(json, text.as_deref_mut()) {
        return Ok(seen);
    }
    inspect_by_serde(json, text)
}

/// [`inspect`] through serde: every chunk the fast scan leaves, and what it is checked against.
pub(crate) fn inspect_by_serde(
    json: &[u8],
    text: Option<&mut String>,
) -> Result<Inspection, serde_json::Error> {
    let chunk: WireChunk<'_> = serde_json::from_slice(json)?;
    let choices = chunk.choices.unwrap_or_default();
    if let Some(out) = text {
        for choice in &choices {
            for d in [&choice.delta, &choice.message].into_iter().flatten() {
                for s in [&d.content, &d.reasoning_content, &d.refusal]
                    .into_iter()
                    .flatten()
                {
                    out.push_str(s);
                }
                push_tool_text(d.tool_calls.as_deref().unwrap_or_default(), out);
            }
        }
    }
    Ok(Inspection {
        usage: chunk.usage.map(Usage::from),
        has_choices: !choices.is_empty(),
    })
}

/// Appends tool calls' names and arguments, in order.
pub(crate) fn push_tool_text(calls: &[WireToolCall<'_>], out: &mut String) {
    for f in calls.iter().filter_map(|c| c.function.as_ref()) {
        for s in [&f.name, &f.arguments].into_iter().flatten() {
            out.push_str(s);
        }
    }
}

/// The usage of a complete `chat.completion`, read without parsing the rest of it: the last
/// `"usage"` key of the object (an unescaped `"usage"` can only be a key; the top-level one
/// comes last in every upstream's answers) is parsed alone. `Err` when the body is not a
/// JSON object at all (empty, truncated, an HTML error page).
pub fn completion_usage(json: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    let body = json_object(json)?;
    let Some(at) = memchr::memmem::rfind(body, b"\"usage\"") else {
        return Ok(None);
    };
    let rest = body[at + 7..].trim_ascii_start();
    let Some(value) = rest.strip_prefix(b":") else {
        return Ok(None);
    };
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Option<WireUsage>>();
    match values.next() {
        Some(Ok(Some(u))) if u.prompt_tokens.is_some() || u.completion_tokens.is_some() => {
            Ok(Some(u.into()))
        }
        Some(Ok(_)) => Ok(None),
        // `usage` with something odd in it: fall back to reading the whole answer.
        Some(Err(_)) | None => inspect(body, None).map(|i| i.usage),
    }
}

/// The body without surrounding whitespace if it has the shape of one JSON object (an opening
/// and a closing brace), without parsing it: what tells a complete answer from an HTML page or
/// a cut body at no cost. [`completion_usage`] reads the rest.
pub fn json_object(json: &[u8]) -> Result<&[u8], serde_json::Error> {
    let body = json.trim_ascii();
    if body.starts_with(b"{") && body.ends_with(b"}") {
        return Ok(body);
    }
    // Let the parser say what is wrong.
    serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
    Err(<serde_json::Error as serde::de::Error>::custom(
        "not a JSON object",
    ))
}

/// The model that answered and the finish reasons of a `chat.completion` or of a chunk, for
/// traces. Only traced requests pay for this parse; a chunk without a finish reason is
/// skipped by a byte search before any parsing.
pub fn answer_facts(json: &[u8], first: bool) -> Option<AnswerFacts> {
    #[derive(Deserialize)]
    struct Facts<'a> {
        #[serde(default, borrow)]
        model: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        choices: Option<Vec<FactChoice<'a>>>,
    }
    #[derive(Deserialize)]
    struct FactChoice<'a> {
        #[serde(default, borrow)]
        finish_reason: Option<Cow<'a, str>>,
    }
    if !first && !has_finish_reason(json) {
        return None;
    }
    let facts: Facts<'_> = serde_json::from_slice(json).ok()?;
    Some(AnswerFacts {
        model: facts.model.map(Cow::into_owned),
        finish_reasons: facts
            .choices
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.finish_reason.map(Cow::into_owned))
            .collect(),
    })
}

/// Whether `"finish_reason"` is followed by a string (not `null`).
fn has_finish_reason(json: &[u8]) -> bool {
    let key = b"\"finish_reason\"";
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&json[from..], key) {
        let rest = json[from + at + key.len()..].trim_ascii_start();
        if let Some(value) = rest.strip_prefix(b":") {
            if value.trim_ascii_start().starts_with(b"\"") {
                return true;
            }
        }
        from += at + key.len();
    }
    false
}

/// See [`answer_facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerFacts {
    /// The `model` the answer names.
    pub model: Option<String>,
    /// Its choices' finish reasons.
    pub finish_reasons: Vec<String>,
}

/// Removes the `usage` field from a chunk that also carries choices (some providers put
/// usage on the last content chunk), for a client that did not ask for usage.
pub fn strip_usage(json: &[u8]) -> Result<Bytes, serde_json::Error> {
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)?;
    value.remove("usage");
    serde_json::to_vec(&value).map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_usage_with_details() {
        let chunk = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
            "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let i = inspect(chunk, None).unwrap();
        assert!(!i.has_choices);
        assert_eq!(
            i.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
                cached_tokens: 4,
                reasoning_tokens: 2,
                cache_write_tokens: 0,
            })
        );
    }

    #[test]
    fn cache_writes_round_trip_through_the_openai_shape() {
        let usage = Usage {
            cached_tokens: 4,
            cache_write_tokens: 3,
            ..Usage::new(10, 5)
        };
        let json = usage.to_openai_json();
        assert_eq!(json["prompt_tokens_details"]["cache_write_tokens"], 3);
        let chunk = serde_json::json!({"choices": [], "usage": json}).to_string();
        assert_eq!(inspect(chunk.as_bytes(), None).unwrap().usage, Some(usage));
        // None written: OpenAI's own shape, untouched.
        let plain = Usage::new(1, 1).to_openai_json();
        assert!(
            plain["prompt_tokens_details"]
                .get("cache_write_tokens")
                .is_none()
        );
    }

    #[test]
    fn reads_deepseek_cache_hits() {
        let chunk = br#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_cache_hit_tokens":8,"prompt_cache_miss_tokens":1}}"#;
        let i = inspect(chunk, None).unwrap();
        assert!(i.has_choices);
        assert_eq!(i.usage.map(|u| u.cached_tokens), Some(8));
    }

    #[test]
    fn collects_delivered_text_including_escapes() {
        let mut text = String::new();
        let chunk = br#"{"choices":[{"delta":{"reasoning_content":"think ","content":"a\"b","tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"x\":1}"}}]}}],"usage":null}"#;
        let i = inspect(chunk, Some(&mut text)).unwrap();
        assert_eq!(i.usage, None);
        assert_eq!(text, "a\"bthink f{\"x\":1}");
    }

    #[test]
    fn completion_usage_reads_the_top_level_usage_only() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the word \"usage\": 3"}}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;
        assert_eq!(completion_usage(body).unwrap(), Some(Usage::new(7, 2)));
        assert_eq!(
            completion_usage(br#"{"id":"x","choices":[]}"#).unwrap(),
            None
        );
        assert_eq!(completion_usage(br#"{"usage":null}"#).unwrap(), None);
        assert!(completion_usage(br#"{"id": "broken"#).is_err());
        assert!(completion_usage(b"<html>bad gateway</html>").is_err());
        assert!(json_object(b" {\"id\":1}\n").is_ok());
        assert!(json_object(b"{\"id\": \"cut").is_err());
        assert!(json_object(b"").is_err());
        assert!(json_object(b"[1]").is_err());
        assert!(completion_usage(b"").is_err());
        let full = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        assert_eq!(
            completion_usage(full).unwrap().map(|u| u.cached_tokens),
            Some(1)
        );
    }

    #[test]
    fn strip_usage_keeps_everything_else() {
        let out =
            strip_usage(br#"{"id":"1","choices":[{"index":0}],"usage":{"prompt_tokens":1},"x":2}"#)
                .unwrap();
        assert_eq!(&out[..], br#"{"id":"1","choices":[{"index":0}],"x":2}"#);
    }
}
