//! Where Anthropic's thinking blocks live in the pivot.
//!
//! A `thinking` block's `signature` must come back byte for byte with its text on the next
//! turn, and a `redacted_thinking` block's `data` is opaque; `reasoning_content` (a plain
//! string) can carry neither, nor the boundaries between several blocks. So the exact blocks
//! travel next to it, in the place Google's OpenAI endpoint uses for its own signatures:
//!
//! ```json
//! {"role": "assistant", "reasoning_content": "…",
//!  "extra_content": {"anthropic": {"thinking_blocks": [
//!     {"type": "thinking", "thinking": "…", "signature": "…"},
//!     {"type": "redacted_thinking", "data": "…"}]}}}
//! ```
//!
//! In a stream, each block is sent once, whole, in the delta of the chunk that ends it, with
//! an `index` (0, 1, … per answer) so that an accumulating client (the OpenAI SDKs merge list
//! deltas by `index`) keeps them apart. OpenAI SDK clients keep unknown fields when they send
//! a message back, so the blocks return with it. LiteLLM's top-level `thinking_blocks` is read
//! too. A `thinking` block without a signature (reasoning from another provider) is never sent
//! to Anthropic: it would be rejected.

use serde_json::{Map, Value, json};

/// `extra_content.anthropic.thinking_blocks` holding `blocks`.
pub(crate) fn extra_content(blocks: Vec<Value>) -> Value {
    json!({"anthropic": {"thinking_blocks": blocks}})
}

/// A thinking block in Anthropic's shape.
pub(crate) fn thinking_block(text: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": text, "signature": signature})
}

/// A redacted thinking block in Anthropic's shape.
pub(crate) fn redacted_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

/// The thinking blocks a pivot message carries, in Anthropic's shape (the stream's `index`
/// removed), signed or redacted ones only.
pub(crate) fn blocks_of(message: &Map<String, Value>) -> Vec<Value> {
    let listed = message
        .get("extra_content")
        .and_then(|e| e.get("anthropic"))
        .and_then(|a| a.get("thinking_blocks"))
        .or_else(|| message.get("thinking_blocks"))
        .and_then(Value::as_array);
    let mut blocks: Vec<(Option<u64>, Value)> = Vec::new();
    for b in listed.into_iter().flatten() {
        let index = b.get("index").and_then(Value::as_u64);
        let text = |k: &str| b.get(k).and_then(Value::as_str);
        match text("type") {
            Some("thinking") => match (text("thinking"), text("signature")) {
                (Some(t), Some(s)) if !s.is_empty() => blocks.push((index, thinking_block(t, s))),
                _ => {}
            },
            Some("redacted_thinking") => {
                if let Some(d) = text("data") {
                    blocks.push((index, redacted_block(d)));
                }
            }
            _ => {}
        }
    }
    // A client that accumulated a stream by hand may list them out of order.
    blocks.sort_by_key(|(i, _)| *i);
    blocks.into_iter().map(|(_, b)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blocks_in_order_without_index_and_drops_unsigned_ones() {
        let m = json!({"extra_content": {"anthropic": {"thinking_blocks": [
            {"index": 1, "type": "redacted_thinking", "data": "opaque"},
            {"index": 0, "type": "thinking", "thinking": "a", "signature": "s"},
            {"index": 2, "type": "thinking", "thinking": "b", "signature": ""},
            {"type": "thinking", "thinking": "c"},
        ]}}});
        let blocks = blocks_of(m.as_object().unwrap());
        assert_eq!(
            blocks,
            vec![thinking_block("a", "s"), redacted_block("opaque")]
        );
        let litellm =
            json!({"thinking_blocks": [{"type": "thinking", "thinking": "x", "signature": "y"}]});
        assert_eq!(blocks_of(litellm.as_object().unwrap()).len(), 1);
    }
}
