//! Pivot `chat.completion.chunk`s → Anthropic's stream events, for `/v1/messages` clients
//! whose request went to a provider that does not speak Messages.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bytes::Bytes;
use llm_bridge_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use crate::errors::status_and_type;
use crate::ids;
use crate::ingress::response::{message_id, stop_reason};
use crate::thinking;
use crate::usage::MessagesUsage;

/// The content block being written.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by its pivot `tool_calls[].index`.
    Tool(u64),
}

/// Writes Anthropic's event sequence for a stream of pivot chunks: `message_start` first;
/// `content_block_start` / `_delta` / `_stop` for each thinking, text and `tool_use` block
/// (indexes 0, 1, 2…, one block open at a time, every block closed); `message_delta` with
/// the stop reason and usage, then `message_stop`, once the finish reason and the usage
/// (which OpenAI-style upstreams send in a chunk of their own) are known.
///
/// Only the first choice is written: Messages answers have one. Tool calls are expected one
/// after another, as OpenAI sends them; argument fragments for a call whose block was
/// already closed cannot be placed and are left out.
pub struct EventWriter {
    model: String,
    started: bool,
    next_index: u64,
    open: Option<(u64, Open)>,
    /// Pivot tool call indexes whose block was opened.
    tools: BTreeSet<u64>,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
    done: bool,
}

/// One event, framed.
fn event(out: &mut String, name: &str, data: &Value) {
    // Writing to a String cannot fail.
    let _ = write!(out, "event: {name}\ndata: {data}\n\n");
}

impl EventWriter {
    /// A writer for one answer; the events name `client_model`.
    pub fn new(client_model: &str) -> Self {
        EventWriter {
            model: client_model.to_owned(),
            started: false,
            next_index: 0,
            open: None,
            tools: BTreeSet::new(),
            stop_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Whether `message_stop` (or an error event) has been written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One pivot chunk → the events it yields (possibly none). A chunk that is not JSON is
    /// an `Err` of kind `UpstreamBadResponse`; chunks after the end are ignored.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes> {
        let value: Value = serde_json::from_slice(chunk).map_err(|e| {
            Error::new(
                ErrorKind::UpstreamBadResponse,
                format!("a stream chunk is not JSON: {e}"),
            )
        })?;
        let mut out = String::new();
        if self.done {
            return Ok(Bytes::new());
        }
        self.start(&value, &mut out);
        if let Some(u) = value.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let choice = value
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                self.delta(delta, &mut out);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close(&mut out);
                self.stop_reason = Some(stop_reason(Some(reason)));
            }
        }
        if self.stop_reason.is_some() && self.usage.is_some() {
            self.end(&mut out);
        }
        Ok(Bytes::from(out))
    }

    /// The upstream's stream is over: the closing events when it gave a finish reason
    /// (without usage), an `api_error` event when it stopped without one (a cut answer).
    pub fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        if self.stop_reason.is_none() {
            return self.error_event(&Error::new(
                ErrorKind::UpstreamBadResponse,
                "the upstream ended the stream before the answer was complete",
            ));
        }
        let mut out = String::new();
        self.end(&mut out);
        Bytes::from(out)
    }

    /// An `error` event for an error after the stream started; it ends the stream, as
    /// Anthropic's own error events do.
    pub fn error_event(&mut self, error: &Error) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        self.done = true;
        let (_, kind) = status_and_type(error);
        let mut out = String::new();
        event(
            &mut out,
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": error.message()}}),
        );
        Bytes::from(out)
    }

    fn start(&mut self, chunk: &Value, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(chunk.get("id").and_then(Value::as_str)),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn delta(&mut self, delta: &Value, out: &mut String) {
        let text = |k: &str| {
            delta
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(r) = text("reasoning_content").or_else(|| text("reasoning")) {
            self.open_block(Open::Thinking, out);
            self.block_delta(json!({"type": "thinking_delta", "thinking": r}), out);
        }
        if let Some(m) = delta.as_object() {
            for block in thinking::blocks_of(m) {
                self.thinking_block(&block, out);
            }
        }
        if let Some(t) = text("content").or_else(|| text("refusal")) {
            self.open_block(Open::Text, out);
            self.block_delta(json!({"type": "text_delta", "text": t}), out);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_call(call, out);
        }
    }

    /// A whole thinking block from the pivot (an Anthropic upstream's, through translation):
    /// its signature completes the thinking block being written; a redacted block is written
    /// whole.
    fn thinking_block(&mut self, block: &Value, out: &mut String) {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                let signed = self.open.is_some_and(|(_, o)| o == Open::Thinking);
                if let (true, Some(sig)) = (signed, block.get("signature")) {
                    self.block_delta(json!({"type": "signature_delta", "signature": sig}), out);
                }
            }
            Some("redacted_thinking") => {
                self.close(out);
                let index = self.next_index;
                self.next_index += 1;
                event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": block}),
                );
                event(
                    out,
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                );
            }
            _ => {}
        }
    }

    fn tool_call(&mut self, call: &Value, out: &mut String) {
        let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = call.get("function");
        if self.tools.insert(n) {
            self.close(out);
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|i| !i.is_empty())
                .map_or_else(|| format!("toolu_{}", ids::random_hex()), str::to_owned);
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
            self.open_with(Open::Tool(n), block, out);
        }
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty());
        if let Some(args) = args {
            if self.open.is_some_and(|(_, o)| o == Open::Tool(n)) {
                self.block_delta(
                    json!({"type": "input_json_delta", "partial_json": args}),
                    out,
                );
            }
        }
    }

    /// Makes sure a block of this kind is the open one.
    fn open_block(&mut self, kind: Open, out: &mut String) {
        if self.open.is_some_and(|(_, o)| o == kind) {
            return;
        }
        self.close(out);
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        self.open_with(kind, block, out);
    }

    fn open_with(&mut self, kind: Open, block: Value, out: &mut String) {
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    fn block_delta(&mut self, delta: Value, out: &mut String) {
        if let Some((index, _)) = self.open {
            event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
    }

    fn close(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn end(&mut self, out: &mut String) {
        self.close(out);
        self.done = true;
        let usage = MessagesUsage::messages_json_from_pivot(self.usage.as_ref());
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": usage}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}
