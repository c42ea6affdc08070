//! Anthropic's stream events → pivot `chat.completion.chunk`s, one event at a time.

use std::collections::BTreeMap;

use bytes::Bytes;
use llm_bridge_core::{ChatChunk, Error, ErrorKind, Result};
use serde_json::{Map, Value, json};

use crate::egress::request::JSON_OUTPUT_TOOL;
use crate::egress::response::{bad_response, completion_id, finish_reason, now, tool_call};
use crate::errors::error_from_event;
use crate::thinking;
use crate::usage::MessagesUsage;
use crate::wire::{ContentBlock, StreamEvent};

/// What an open content block of the stream is.
enum Block {
    Text,
    /// The `n`th thinking block of the answer, its text and signature so far.
    Thinking {
        n: u64,
        text: String,
        signature: String,
    },
    /// A tool call, numbered in OpenAI's `tool_calls[].index`.
    Tool {
        call: u64,
    },
    /// The tool that carries a `response_format` answer: its input is the answer text.
    JsonAnswer,
    /// Server tools and block types this crate does not know: not shown.
    Ignored,
}

/// Turns the events of an Anthropic stream (`message_start`, `content_block_start` /
/// `_delta` / `_stop`, `message_delta`, `message_stop`, `ping`, `error`) into
/// `chat.completion.chunk`s as they arrive.
///
/// Text, thinking (`reasoning_content`) and tool call arguments go out as soon as they
/// arrive; each thinking block is sent whole with its signature when it ends (see the crate
/// docs). `message_stop` yields the chunk with `finish_reason`, then one with
/// `"choices": []` and the usage. An `error` event is an `Err`: the stream ends there.
pub struct ChunkTranslator {
    id: String,
    created: u64,
    model: String,
    role_sent: bool,
    blocks: BTreeMap<u64, Block>,
    calls: u64,
    thinking_blocks: u64,
    json_answer: bool,
    stop_reason: Option<String>,
    usage: Option<MessagesUsage>,
    done: bool,
}

impl ChunkTranslator {
    /// A translator for one stream; the chunks name `model_for_client`.
    pub fn new(model_for_client: &str) -> Self {
        ChunkTranslator {
            id: completion_id(None),
            created: now(),
            model: model_for_client.to_owned(),
            role_sent: false,
            blocks: BTreeMap::new(),
            calls: 0,
            thinking_blocks: 0,
            json_answer: false,
            stop_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Whether `message_stop` (or an error) has ended the stream.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One event (its SSE `event:` name, which may be empty, and its `data:`) → the chunks to
    /// send. The data's own `type` decides; the name is used only when the data has none.
    pub fn push(&mut self, event: &str, data: &[u8]) -> Result<Vec<ChatChunk>> {
        if self.done {
            return Ok(Vec::new());
        }
        let parsed: StreamEvent = serde_json::from_slice(data).map_err(|e| {
            bad_response(format!(
                "Anthropic sent a stream event that is not JSON: {e}"
            ))
        })?;
        let kind = parsed.kind.as_deref().unwrap_or(event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                if let Some(m) = &parsed.message {
                    if let Some(id) = m.id.as_deref() {
                        self.id = completion_id(Some(id));
                    }
                    self.take_usage(m.usage.as_ref());
                }
                self.delta(Map::new(), &mut out);
            }
            "content_block_start" => {
                let index = parsed.index.unwrap_or(0);
                if let Some(block) = &parsed.content_block {
                    let delta = self.start_block(index, block);
                    self.delta(delta, &mut out);
                }
            }
            "content_block_delta" => {
                let index = parsed.index.unwrap_or(0);
                if let Some(d) = &parsed.delta {
                    let delta = self.block_delta(index, d);
                    self.delta(delta, &mut out);
                }
            }
            "content_block_stop" => {
                let index = parsed.index.unwrap_or(0);
                if let Some(Block::Thinking { n, text, signature }) = self.blocks.remove(&index) {
                    let mut block = thinking::thinking_block(&text, &signature);
                    block["index"] = n.into();
                    let mut delta = Map::new();
                    delta.insert("extra_content".into(), thinking::extra_content(vec![block]));
                    self.delta(delta, &mut out);
                }
            }
            "message_delta" => {
                if let Some(reason) = parsed.delta.as_ref().and_then(|d| d.stop_reason.clone()) {
                    self.stop_reason = Some(reason);
                }
                self.take_usage(parsed.usage.as_ref());
            }
            "message_stop" => out.extend(self.end()),
            "error" => {
                self.done = true;
                return Err(error_from_event(data));
            }
            // `ping`, and event types newer than this code.
            _ => {}
        }
        Ok(out)
    }

    /// At the end of the body: nothing when `message_stop` came; the final chunks when the
    /// stop reason came but `message_stop` did not; else an `Err` — the answer was cut.
    pub fn finish(&mut self) -> Result<Vec<ChatChunk>> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.stop_reason.is_none() {
            self.done = true;
            return Err(Error::new(
                ErrorKind::UpstreamTruncated,
                "Anthropic ended the stream before the answer was complete (no stop reason, no message_stop)",
            ));
        }
        Ok(self.end())
    }

    fn take_usage(&mut self, usage: Option<&crate::wire::WireUsage>) {
        if let Some(u) = usage {
            self.usage
                .get_or_insert_with(MessagesUsage::default)
                .merge(&MessagesUsage::from_wire(u));
        }
    }

    fn start_block(&mut self, index: u64, block: &ContentBlock) -> Map<String, Value> {
        let mut delta = Map::new();
        let state = match block.kind.as_str() {
            "text" => {
                if let Some(t) = block.text.as_deref().filter(|t| !t.is_empty()) {
                    delta.insert("content".into(), t.into());
                }
                Block::Text
            }
            "thinking" => {
                let text = block.thinking.clone().unwrap_or_default();
                if !text.is_empty() {
                    delta.insert("reasoning_content".into(), text.as_str().into());
                }
                let n = self.thinking_blocks;
                self.thinking_blocks += 1;
                Block::Thinking {
                    n,
                    text,
                    signature: block.signature.clone().unwrap_or_default(),
                }
            }
            "redacted_thinking" => {
                let n = self.thinking_blocks;
                self.thinking_blocks += 1;
                let mut b = thinking::redacted_block(block.data.as_deref().unwrap_or_default());
                b["index"] = n.into();
                delta.insert("extra_content".into(), thinking::extra_content(vec![b]));
                Block::Ignored
            }
            "tool_use" if block.name.as_deref() == Some(JSON_OUTPUT_TOOL) => {
                self.json_answer = true;
                Block::JsonAnswer
            }
            "tool_use" => {
                let call = self.calls;
                self.calls += 1;
                // Anthropic sends `input: {}` here and the JSON in deltas; a compatible
                // service that sends the whole input at once is read too.
                let args = match &block.input {
                    Some(Value::Object(o)) if !o.is_empty() => Value::Object(o.clone()).to_string(),
                    _ => String::new(),
                };
                let mut c = tool_call(
                    block.id.as_deref().unwrap_or_default(),
                    block.name.as_deref().unwrap_or_default(),
                    &args,
                );
                c["index"] = call.into();
                delta.insert("tool_calls".into(), json!([c]));
                Block::Tool { call }
            }
            _ => Block::Ignored,
        };
        self.blocks.insert(index, state);
        delta
    }

    fn block_delta(&mut self, index: u64, d: &crate::wire::Delta) -> Map<String, Value> {
        let mut delta = Map::new();
        let Some(block) = self.blocks.get_mut(&index) else {
            return delta;
        };
        match (block, d.kind.as_deref()) {
            (Block::Text, Some("text_delta")) => {
                if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    delta.insert("content".into(), t.into());
                }
            }
            (Block::Thinking { text, .. }, Some("thinking_delta")) => {
                if let Some(t) = d.thinking.as_deref().filter(|t| !t.is_empty()) {
                    text.push_str(t);
                    delta.insert("reasoning_content".into(), t.into());
                }
            }
            (Block::Thinking { signature, .. }, Some("signature_delta")) => {
                signature.push_str(d.signature.as_deref().unwrap_or_default());
            }
            (Block::Tool { call }, Some("input_json_delta")) => {
                if let Some(j) = d.partial_json.as_deref().filter(|j| !j.is_empty()) {
                    delta.insert(
                        "tool_calls".into(),
                        json!([{"index": *call, "function": {"arguments": j}}]),
                    );
                }
            }
            (Block::JsonAnswer, Some("input_json_delta")) => {
                if let Some(j) = d.partial_json.as_deref().filter(|j| !j.is_empty()) {
                    delta.insert("content".into(), j.into());
                }
            }
            _ => {}
        }
        delta
    }

    /// Sends a content delta (the first one carries the role); an empty delta is only sent
    /// as the very first chunk.
    fn delta(&mut self, mut delta: Map<String, Value>, out: &mut Vec<ChatChunk>) {
        if self.role_sent && delta.is_empty() {
            return;
        }
        if !self.role_sent {
            self.role_sent = true;
            delta.insert("role".into(), "assistant".into());
            delta.entry("content").or_insert_with(|| "".into());
        }
        let choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null});
        out.push(self.chunk(json!([choice]), None));
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> ChatChunk {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        ChatChunk {
            data: Bytes::from(c.to_string()),
        }
    }

    /// The finish chunk and the usage chunk.
    fn end(&mut self) -> Vec<ChatChunk> {
        self.done = true;
        let mut out = Vec::new();
        // A stream that stopped before any content still starts with the role.
        self.delta(Map::new(), &mut out);
        let reason = finish_reason(
            self.stop_reason.as_deref().unwrap_or("end_turn"),
            self.json_answer && self.calls == 0,
        );
        let choice = json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason});
        out.push(self.chunk(json!([choice]), None));
        if let Some(u) = &self.usage {
            out.push(self.chunk(json!([]), Some(u.to_pivot_json())));
        }
        out
    }
}
