//! Token counts in both dialects.
//!
//! Anthropic splits the prompt three ways: `input_tokens` (not cached),
//! `cache_read_input_tokens` (served from the prompt cache) and `cache_creation_input_tokens`
//! (written to it, billed at a premium). The pivot's `prompt_tokens` is their sum,
//! `prompt_tokens_details.cached_tokens` the reads, and `prompt_tokens_details.cache_write_tokens`
//! (a field OpenAI does not have) the writes, so that the gateway can record them apart.
//!
//! The `usage_from_*` functions read native Anthropic bytes without changing them, for
//! pass-through metering.

use llm_bridge_core::Usage;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::wire::WireUsage;

/// Usage as an Anthropic answer or stream event reports it. A field is `None` when the
/// object did not carry it: a later event's counts replace earlier ones only where present
/// ([`MessagesUsage::merge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagesUsage {
    /// Prompt tokens neither read from nor written to the cache.
    pub input_tokens: Option<u64>,
    /// Generated tokens, thinking included (cumulative in `message_delta`).
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    pub cache_read_input_tokens: Option<u64>,
    /// Prompt tokens written to the cache.
    pub cache_creation_input_tokens: Option<u64>,
    /// Generated tokens spent thinking, when the model reports them.
    pub thinking_tokens: Option<u64>,
}

impl MessagesUsage {
    /// Takes every count `later` carries; keeps the others. Anthropic's `message_delta`
    /// counts are cumulative, so the last one seen is the total.
    pub fn merge(&mut self, later: &MessagesUsage) {
        fn take(a: &mut Option<u64>, b: Option<u64>) {
            if b.is_some() {
                *a = b;
            }
        }
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(
            &mut self.cache_read_input_tokens,
            later.cache_read_input_tokens,
        );
        take(
            &mut self.cache_creation_input_tokens,
            later.cache_creation_input_tokens,
        );
        take(&mut self.thinking_tokens, later.thinking_tokens);
    }

    /// Prompt tokens written to the cache (0 when not reported).
    pub fn cache_write_tokens(&self) -> u64 {
        self.cache_creation_input_tokens.unwrap_or(0)
    }

    /// The pivot's counts: prompt = uncached + cache reads + cache writes.
    pub fn to_usage(&self) -> Usage {
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            cached_tokens: self.cache_read_input_tokens.unwrap_or(0),
            reasoning_tokens: self.thinking_tokens.unwrap_or(0),
            cache_write_tokens: self.cache_write_tokens(),
        }
    }

    /// The pivot's `usage` object, with `prompt_tokens_details.cache_write_tokens`.
    pub fn to_pivot_json(&self) -> Value {
        let mut usage = self.to_usage().to_openai_json();
        usage["prompt_tokens_details"]["cache_write_tokens"] = json!(self.cache_write_tokens());
        usage
    }

    pub(crate) fn from_wire(w: &WireUsage) -> MessagesUsage {
        MessagesUsage {
            input_tokens: w.input_tokens,
            output_tokens: w.output_tokens,
            cache_read_input_tokens: w.cache_read_input_tokens,
            cache_creation_input_tokens: w.cache_creation_input_tokens,
            thinking_tokens: w.output_tokens_details.and_then(|d| d.thinking_tokens),
        }
    }

    /// Anthropic's `usage` object for a pivot usage (the inverse of [`Self::to_pivot_json`]):
    /// `input_tokens` excludes cache reads and writes.
    pub(crate) fn messages_json_from_pivot(usage: Option<&Value>) -> Value {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let u = usage.unwrap_or(&Value::Null);
        let prompt = n(u.get("prompt_tokens"));
        let details = u.get("prompt_tokens_details");
        let read = n(details.and_then(|d| d.get("cached_tokens")));
        let write = n(details.and_then(|d| d.get("cache_write_tokens")));
        json!({
            "input_tokens": prompt.saturating_sub(read).saturating_sub(write),
            "output_tokens": n(u.get("completion_tokens")),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        })
    }
}

#[derive(Deserialize)]
struct UsageHolder {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    message: Option<Box<UsageHolder>>,
}

fn holder(data: &[u8]) -> Option<UsageHolder> {
    serde_json::from_slice(data).ok()
}

/// The usage of a `message_start` event's data (prompt counts, cache reads and writes, and
/// the first output tokens). `None` for any other event or unreadable data.
pub fn usage_from_message_start(data: &[u8]) -> Option<MessagesUsage> {
    let h = holder(data)?;
    if h.kind.as_deref() != Some("message_start") {
        return None;
    }
    h.message?.usage.as_ref().map(MessagesUsage::from_wire)
}

/// The usage of a `message_delta` event's data (cumulative output tokens; some services
/// repeat the prompt counts here). `None` for any other event or unreadable data.
pub fn usage_from_message_delta(data: &[u8]) -> Option<MessagesUsage> {
    let h = holder(data)?;
    if h.kind.as_deref() != Some("message_delta") {
        return None;
    }
    h.usage.as_ref().map(MessagesUsage::from_wire)
}

/// The usage of a complete Messages answer (`"type": "message"`).
pub fn usage_from_message(body: &[u8]) -> Option<MessagesUsage> {
    holder(body)?.usage.as_ref().map(MessagesUsage::from_wire)
}

/// Prompt tokens written to the provider's cache, from a pivot `chat.completion` or
/// `chat.completion.chunk` this crate produced (`usage.prompt_tokens_details.cache_write_tokens`).
/// `None` when the object carries no such count.
pub fn cache_write_tokens(pivot_json: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Root {
        #[serde(default)]
        usage: Option<U>,
    }
    #[derive(Deserialize)]
    struct U {
        #[serde(default)]
        prompt_tokens_details: Option<D>,
    }
    #[derive(Deserialize)]
    struct D {
        #[serde(default)]
        cache_write_tokens: Option<u64>,
    }
    serde_json::from_slice::<Root>(pivot_json)
        .ok()?
        .usage?
        .prompt_tokens_details?
        .cache_write_tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_the_sum_of_the_three_parts() {
        let u = MessagesUsage {
            input_tokens: Some(10),
            output_tokens: Some(5),
            cache_read_input_tokens: Some(100),
            cache_creation_input_tokens: Some(20),
            thinking_tokens: None,
        };
        let p = u.to_usage();
        assert_eq!(
            (p.prompt_tokens, p.cached_tokens, p.total_tokens),
            (130, 100, 135)
        );
        let json = u.to_pivot_json();
        assert_eq!(json["prompt_tokens_details"]["cache_write_tokens"], 20);
        let bytes = serde_json::to_vec(&json!({"usage": json})).unwrap();
        assert_eq!(cache_write_tokens(&bytes), Some(20));
        let back = MessagesUsage::messages_json_from_pivot(Some(&json));
        assert_eq!(
            back,
            json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100})
        );
    }

    #[test]
    fn native_events_are_read_and_merged() {
        let start = br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3,"cache_read_input_tokens":7,"cache_creation_input_tokens":2,"output_tokens":1}}}"#;
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#;
        let mut u = usage_from_message_start(start).unwrap();
        assert_eq!(usage_from_message_delta(start), None);
        u.merge(&usage_from_message_delta(delta).unwrap());
        assert_eq!(u.input_tokens, Some(3));
        assert_eq!(u.output_tokens, Some(9));
        assert_eq!(u.to_usage().prompt_tokens, 12);
        assert_eq!(u.cache_write_tokens(), 2);
        assert_eq!(usage_from_message_start(b"not json"), None);
    }
}
