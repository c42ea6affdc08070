//! Typed chat messages, for the adapters that translate them and for token estimates.
//!
//! Pass-through adapters never need these: they forward the JSON the client sent. Every
//! struct keeps the fields it does not name in `extra`, so a typed round trip loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One chat message (`system`, `developer`, `user`, `assistant`, `tool`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// Text, or a list of typed parts; absent on assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls the assistant made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Reasoning text some providers return (Deepseek) and some clients send back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// Reads a message from a JSON value.
    pub fn deserialize_value(value: &Value) -> Result<Message, serde_json::Error> {
        Message::deserialize(value)
    }

    /// Appends the text a tokenizer should count for this message.
    pub fn append_text(&self, out: &mut String) {
        push(out, &self.role);
        if let Some(name) = &self.name {
            push(out, name);
        }
        match &self.content {
            Some(Content::Text(t)) => push(out, t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    if let Some(t) = &p.text {
                        push(out, t);
                    }
                }
            }
            None => {}
        }
        if let Some(r) = &self.reasoning_content {
            push(out, r);
        }
        for call in self.tool_calls.iter().flatten() {
            push(out, &call.function.name);
            push(out, &call.function.arguments);
        }
    }
}

fn push(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

/// Message content: a plain string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, audio, files).
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The image of an `image_url` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// Every other field, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image reference: an `http(s)://` URL or a `data:` URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// `auto`, `low` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id; tool results refer to it.
    #[serde(default)]
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function called.
    pub function: FunctionCall,
    /// Every other field, kept as sent (e.g. provider-specific signatures).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn function_type() -> String {
    "function".to_owned()
}

/// A function name and its arguments as a JSON string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, as a JSON-encoded string.
    #[serde(default)]
    pub arguments: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let v = json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"},
                "extra_content": {"google": {"thought_signature": "abc"}}}],
            "audio": {"id": "a1"}
        });
        let m = Message::deserialize_value(&v).unwrap();
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(
            back["tool_calls"][0]["extra_content"],
            v["tool_calls"][0]["extra_content"]
        );
        assert_eq!(back["audio"], v["audio"]);
    }

    #[test]
    fn text_parts_are_counted() {
        let m = Message::deserialize_value(&json!({
            "role": "user",
            "content": [{"type": "text", "text": "hello"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
        }))
        .unwrap();
        let mut s = String::new();
        m.append_text(&mut s);
        assert_eq!(s, "user\nhello");
    }
}
