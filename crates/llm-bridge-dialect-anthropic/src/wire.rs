//! Anthropic Messages wire types: the parts of answers, stream events and error bodies this
//! crate reads. Every field is optional and unknown fields are ignored, so that a newer API
//! (new block types, new usage counters) degrades to "not understood" instead of an error.
//! Requests are built and read as `serde_json::Value`, because their unknown fields must be
//! reported (ingress) or never exist (egress).

use serde::Deserialize;
use serde_json::Value;

/// A Messages answer (`"type": "message"`), also the `message` of a `message_start` event.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MessageResponse {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    /// Present when the body is an error object instead of a message.
    #[serde(default)]
    pub error: Option<Value>,
}

/// One content block of an answer or of a `content_block_start` event. One struct for every
/// type: the translation looks at `kind` and reads the fields that type has.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ContentBlock {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    /// The opaque payload of a `redacted_thinking` block.
    #[serde(default)]
    pub data: Option<String>,
}

/// Token counts as Anthropic reports them. `input_tokens` excludes cached prompt tokens.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputDetails>,
}

/// `usage.output_tokens_details` (newer models report thinking tokens there).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub(crate) struct OutputDetails {
    #[serde(default)]
    pub thinking_tokens: Option<u64>,
}

/// One stream event's data. The `type` field names the event (the SSE `event:` line repeats it).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamEvent {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<MessageResponse>,
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub content_block: Option<ContentBlock>,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// The `delta` of `content_block_delta` (text, JSON, thinking, signature) and of
/// `message_delta` (stop reason).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Delta {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub partial_json: Option<String>,
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default)]
    pub stop_reason: Option<String>,
}
