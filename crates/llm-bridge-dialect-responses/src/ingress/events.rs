//! Pivot `chat.completion.chunk`s → Responses' typed stream events, for `/v1/responses`
//! clients whose request went to a provider that does not speak Responses.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bytes::Bytes;
use llm_bridge_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use crate::ids;
use crate::ingress::response::{
    Echo, Head, call_item, encrypted_of, message_item, reasoning_item, refusal_part, response_json,
    response_usage, status_for, text_part,
};

/// The content part of a message item being written.
#[derive(Clone, Copy, PartialEq)]
enum PartKind {
    Text,
    Refusal,
}

/// The output item being written.
enum Open {
    Reasoning {
        text: String,
        encrypted: Option<Value>,
    },
    Message {
        /// Finished content parts.
        parts: Vec<Value>,
        /// The part being written and its text so far.
        part: Option<(PartKind, String)>,
    },
    Call {
        /// The pivot `tool_calls[].index`.
        pivot_index: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes Responses' event sequence for a stream of pivot chunks, each event framed as
/// `event: <type>\ndata: <json>\n\n` with `sequence_number` 0, 1, 2…:
///
/// `response.created`, `response.in_progress`; then one output item at a time —
/// `reasoning` (`response.reasoning_summary_part.added`, `…_text.delta`…, `…_text.done`,
/// `…_part.done`), `message` (`response.content_part.added`, `response.output_text.delta`…
/// or `response.refusal.delta`…, their `.done`, `response.content_part.done`) or
/// `function_call` (`response.function_call_arguments.delta`…, `.done`) between its
/// `response.output_item.added` and `response.output_item.done`; finally
/// `response.completed` (or `response.incomplete` for `length` / `content_filter`) with
/// the whole response and its usage, once the finish reason and the usage (which
/// OpenAI-style upstreams send in a chunk of their own) are known.
///
/// After an error: the open item is closed (status `incomplete`), then an `error` event and
/// `response.failed`, as OpenAI sends them. A stream that ends without a finish reason is
/// such an error (`upstream_truncated`).
///
/// Only the first choice is written. Tool calls are expected one after another, as OpenAI
/// sends them; argument fragments for a call whose item was already closed cannot be
/// placed and are left out.
pub struct EventWriter {
    model: String,
    echo: Echo,
    id: String,
    created_at: u64,
    seq: u64,
    started: bool,
    done: bool,
    /// Finished output items.
    output: Vec<Value>,
    open: Option<Open>,
    /// Pivot tool call indexes whose item was opened.
    calls: BTreeSet<u64>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// The whole response, once `response.completed` / `.incomplete` was written.
    final_response: Option<Value>,
}

impl EventWriter {
    /// A writer for one answer naming `client_model`, echoing the defaults.
    pub fn new(client_model: &str) -> Self {
        Self::with_echo(client_model, Echo::default())
    }

    /// A writer for one answer naming `client_model`, echoing the request's fields.
    pub fn with_echo(client_model: &str, echo: Echo) -> Self {
        EventWriter {
            model: client_model.to_owned(),
            echo,
            id: String::new(),
            created_at: 0,
            seq: 0,
            started: false,
            done: false,
            output: Vec::new(),
            open: None,
            calls: BTreeSet::new(),
            finish_reason: None,
            usage: None,
            final_response: None,
        }
    }

    /// Whether the final event (`response.completed`, `.incomplete` or `.failed`) has been
    /// written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The response id the events carry (empty before the first chunk).
    pub fn response_id(&self) -> &str {
        &self.id
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
        if self.done {
            return Ok(Bytes::new());
        }
        let mut out = String::new();
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
            if let Some(delta) = choice.get("delta").filter(|d| d.is_object()) {
                self.delta(delta, &mut out);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                // A cut answer's last item is incomplete, as the response will be.
                let status = match status_for(Some(reason)).0 {
                    "completed" => "completed",
                    _ => "incomplete",
                };
                self.close_as(&mut out, status);
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            self.end(&mut out);
        }
        Ok(Bytes::from(out))
    }

    /// The upstream's stream is over: the closing events when it gave a finish reason
    /// (without usage), the failure events when it stopped without one (a cut answer).
    pub fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        if self.finish_reason.is_none() {
            return self.error_event(&Error::new(
                ErrorKind::UpstreamTruncated,
                "the upstream ended the stream before the answer was complete",
            ));
        }
        let mut out = String::new();
        self.end(&mut out);
        Bytes::from(out)
    }

    /// The failure events for an error after the stream started (see the type's docs); they
    /// end the stream.
    pub fn error_event(&mut self, error: &Error) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        let mut out = String::new();
        self.start(&Value::Null, &mut out);
        self.close_as(&mut out, "incomplete");
        self.done = true;
        let code = error.code().unwrap_or(error.error_type()).to_owned();
        self.event(
            &mut out,
            json!({"type": "error", "code": code, "message": error.message(), "param": error.param()}),
        );
        let response = self.response(
            "failed",
            json!({"code": code, "message": error.message()}),
            Value::Null,
        );
        self.event(
            &mut out,
            json!({"type": "response.failed", "response": response}),
        );
        Bytes::from(out)
    }

    /// Writes one event: `sequence_number` goes in after `type`.
    fn event(&mut self, out: &mut String, mut data: Value) {
        let name = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(map) = data.as_object_mut() {
            map.shift_insert(1.min(map.len()), "sequence_number".into(), self.seq.into());
        }
        self.seq += 1;
        // Writing to a String cannot fail.
        let _ = write!(out, "event: {name}\ndata: {data}\n\n");
    }

    fn response(&self, status: &str, error: Value, incomplete: Value) -> Value {
        let head = Head {
            id: &self.id,
            created_at: self.created_at,
            status,
            error,
            incomplete_details: incomplete,
            model: &self.model,
        };
        let usage = if status == "in_progress" {
            Value::Null
        } else {
            response_usage(self.usage.as_ref())
        };
        response_json(&head, &self.echo, &self.output, usage)
    }

    fn start(&mut self, chunk: &Value, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = ids::response_id(chunk.get("id").and_then(Value::as_str));
        self.created_at = chunk
            .get("created")
            .and_then(Value::as_u64)
            .unwrap_or_else(ids::now);
        let response = self.response("in_progress", Value::Null, Value::Null);
        self.event(
            out,
            json!({"type": "response.created", "response": response.clone()}),
        );
        self.event(
            out,
            json!({"type": "response.in_progress", "response": response}),
        );
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    fn item_id(&self, prefix: &str) -> String {
        ids::item_id(&self.id, prefix, self.output_index())
    }

    fn delta(&mut self, delta: &Value, out: &mut String) {
        let text = |k: &str| {
            delta
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let encrypted = encrypted_of(delta);
        if let Some(r) = text("reasoning_content").or_else(|| text("reasoning")) {
            self.reasoning(r, out);
        }
        if let Some(e) = encrypted {
            if !matches!(self.open, Some(Open::Reasoning { .. })) {
                self.reasoning("", out);
            }
            if let Some(Open::Reasoning { encrypted, .. }) = &mut self.open {
                *encrypted = Some(e);
            }
        }
        if let Some(t) = text("content") {
            self.message_text(PartKind::Text, t, out);
        }
        if let Some(t) = text("refusal") {
            self.message_text(PartKind::Refusal, t, out);
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

    fn reasoning(&mut self, fragment: &str, out: &mut String) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = self.item_id("rs");
            let index = self.output_index();
            self.event(
                out,
                json!({"type": "response.output_item.added", "output_index": index,
                       "item": reasoning_item(&id, "", None)}),
            );
            self.open = Some(Open::Reasoning {
                text: String::new(),
                encrypted: None,
            });
        }
        if fragment.is_empty() {
            return;
        }
        let id = self.item_id("rs");
        let index = self.output_index();
        let first = matches!(&self.open, Some(Open::Reasoning { text, .. }) if text.is_empty());
        if first {
            self.event(
                out,
                json!({"type": "response.reasoning_summary_part.added", "item_id": id,
                       "output_index": index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            );
        }
        self.event(
            out,
            json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                   "output_index": index, "summary_index": 0, "delta": fragment}),
        );
        if let Some(Open::Reasoning { text, .. }) = &mut self.open {
            text.push_str(fragment);
        }
    }

    fn message_text(&mut self, kind: PartKind, fragment: &str, out: &mut String) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let id = self.item_id("msg");
            let index = self.output_index();
            self.event(
                out,
                json!({"type": "response.output_item.added", "output_index": index,
                       "item": message_item(&id, "in_progress", Vec::new())}),
            );
            self.open = Some(Open::Message {
                parts: Vec::new(),
                part: None,
            });
        }
        let same =
            matches!(&self.open, Some(Open::Message { part: Some((k, _)), .. }) if *k == kind);
        if !same {
            self.close_part(out);
            let content_index = self.content_index();
            let (id, index) = (self.item_id("msg"), self.output_index());
            let part = match kind {
                PartKind::Text => text_part(""),
                PartKind::Refusal => refusal_part(""),
            };
            self.event(
                out,
                json!({"type": "response.content_part.added", "item_id": id, "output_index": index,
                       "content_index": content_index, "part": part}),
            );
            if let Some(Open::Message { part, .. }) = &mut self.open {
                *part = Some((kind, String::new()));
            }
        }
        let content_index = self.content_index();
        let (id, index) = (self.item_id("msg"), self.output_index());
        let event = match kind {
            PartKind::Text => json!({"type": "response.output_text.delta", "item_id": id,
                "output_index": index, "content_index": content_index, "delta": fragment,
                "logprobs": []}),
            PartKind::Refusal => json!({"type": "response.refusal.delta", "item_id": id,
                "output_index": index, "content_index": content_index, "delta": fragment}),
        };
        self.event(out, event);
        if let Some(Open::Message {
            part: Some((_, text)),
            ..
        }) = &mut self.open
        {
            text.push_str(fragment);
        }
    }

    /// The index of the message's part being written (or about to be).
    fn content_index(&self) -> usize {
        match &self.open {
            Some(Open::Message { parts, .. }) => parts.len(),
            _ => 0,
        }
    }

    fn tool_call(&mut self, call: &Value, out: &mut String) {
        let n = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = call.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty());
        if self.calls.insert(n) {
            self.close(out);
            let call_id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|i| !i.is_empty())
                .map_or_else(ids::call_id, str::to_owned);
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let (id, index) = (self.item_id("fc"), self.output_index());
            self.event(
                out,
                json!({"type": "response.output_item.added", "output_index": index,
                       "item": call_item(&id, "in_progress", &call_id, &name, "")}),
            );
            self.open = Some(Open::Call {
                pivot_index: n,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(args) = args else { return };
        let is_open =
            matches!(&self.open, Some(Open::Call { pivot_index, .. }) if *pivot_index == n);
        if !is_open {
            return;
        }
        let (id, index) = (self.item_id("fc"), self.output_index());
        self.event(
            out,
            json!({"type": "response.function_call_arguments.delta", "item_id": id,
                   "output_index": index, "delta": args}),
        );
        if let Some(Open::Call { arguments, .. }) = &mut self.open {
            arguments.push_str(args);
        }
    }

    /// Closes the message's open content part.
    fn close_part(&mut self, out: &mut String) {
        let Some(Open::Message { part, .. }) = &mut self.open else {
            return;
        };
        let Some((kind, text)) = part.take() else {
            return;
        };
        let content_index = self.content_index();
        let (id, index) = (self.item_id("msg"), self.output_index());
        let (done, part) = match kind {
            PartKind::Text => (
                json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                       "content_index": content_index, "text": text, "logprobs": []}),
                text_part(&text),
            ),
            PartKind::Refusal => (
                json!({"type": "response.refusal.done", "item_id": id, "output_index": index,
                       "content_index": content_index, "refusal": text}),
                refusal_part(&text),
            ),
        };
        self.event(out, done);
        self.event(
            out,
            json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                   "content_index": content_index, "part": part.clone()}),
        );
        if let Some(Open::Message { parts, .. }) = &mut self.open {
            parts.push(part);
        }
    }

    fn close(&mut self, out: &mut String) {
        self.close_as(out, "completed");
    }

    /// Closes the open item with `status`.
    fn close_as(&mut self, out: &mut String, status: &str) {
        self.close_part(out);
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output_index();
        let item = match open {
            Open::Reasoning { text, encrypted } => {
                let id = self.item_id("rs");
                if !text.is_empty() {
                    self.event(
                        out,
                        json!({"type": "response.reasoning_summary_text.done", "item_id": id,
                               "output_index": index, "summary_index": 0, "text": text}),
                    );
                    self.event(
                        out,
                        json!({"type": "response.reasoning_summary_part.done", "item_id": id,
                               "output_index": index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": text}}),
                    );
                }
                reasoning_item(&id, &text, encrypted.as_ref())
            }
            Open::Message { parts, .. } => message_item(&self.item_id("msg"), status, parts),
            Open::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                let id = self.item_id("fc");
                self.event(
                    out,
                    json!({"type": "response.function_call_arguments.done", "item_id": id,
                           "output_index": index, "name": name, "arguments": arguments}),
                );
                call_item(&id, status, &call_id, &name, &arguments)
            }
        };
        self.event(
            out,
            json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
        );
        self.output.push(item);
    }

    fn end(&mut self, out: &mut String) {
        self.close(out);
        self.done = true;
        let (status, incomplete) = status_for(self.finish_reason.as_deref());
        let response = self.response(status, Value::Null, incomplete);
        self.final_response = Some(response.clone());
        self.event(
            out,
            json!({"type": format!("response.{status}"), "response": response}),
        );
    }

    /// The whole response, once the stream completed (or ended incomplete).
    pub fn final_response(&self) -> Option<&Value> {
        self.final_response.as_ref()
    }
}
