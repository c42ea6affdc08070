//! The Messages API as the gateway mounts it (`POST /v1/messages`, `/v1/messages/count_tokens`).

use bytes::Bytes;
use llm_bridge_core::{Error, Ingress, IngressRequest, IngressStream, NativeMeter, Result, Usage};

use crate::errors::error_response;
use crate::ingress::events::EventWriter;
use crate::ingress::request::chat_request;
use crate::ingress::response::messages_response;
use crate::usage::{
    MessagesUsage, usage_from_message, usage_from_message_delta, usage_from_message_start,
};

/// Anthropic's Messages API in front of the gateway.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessagesIngress;

impl Ingress for MessagesIngress {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn path(&self) -> &'static str {
        "/v1/messages"
    }

    fn count_tokens_path(&self) -> Option<&'static str> {
        Some("/v1/messages/count_tokens")
    }

    fn request(&self, body: &[u8]) -> Result<IngressRequest> {
        let translated = chat_request(body)?;
        Ok(IngressRequest {
            request: translated.request,
            dropped: translated.dropped,
        })
    }

    fn response(&self, completion: &[u8], model: &str, _request: &[u8]) -> Result<Bytes> {
        messages_response(completion, model)
    }

    fn stream(&self, model: &str, _request: &[u8]) -> Box<dyn IngressStream> {
        Box::new(EventWriter::new(model))
    }

    fn error(&self, error: &Error) -> (u16, Bytes) {
        error_response(error)
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["anthropic-version", "anthropic-beta"]
    }

    fn native_usage(&self, body: &[u8]) -> Option<Usage> {
        usage_from_message(body).map(|u| u.to_usage())
    }

    fn native_meter(&self) -> Box<dyn NativeMeter> {
        Box::new(MessagesMeter::default())
    }
}

/// Reads usage from a native Messages event stream as it is forwarded: `message_start`
/// carries the input side, `message_delta` the output; `message_stop` ends the answer.
/// Only `data:` lines of those events are parsed; the rest is skipped by a byte scan.
#[derive(Default)]
pub(crate) struct MessagesMeter {
    /// The unfinished last line of what was fed.
    partial: Vec<u8>,
    usage: Option<MessagesUsage>,
    stopped: bool,
}

impl MessagesMeter {
    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        // Every event's data starts with its type; only three matter here.
        let head = &data[..data.len().min(40)];
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
        let seen = if has(b"\"message_start\"") {
            usage_from_message_start(data)
        } else if has(b"\"message_delta\"") {
            usage_from_message_delta(data)
        } else {
            if has(b"\"message_stop\"") {
                self.stopped = true;
            }
            None
        };
        if let Some(seen) = seen {
            match &mut self.usage {
                Some(u) => u.merge(&seen),
                None => self.usage = Some(seen),
            }
        }
    }
}

impl NativeMeter for MessagesMeter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let (line, rest) = bytes.split_at(end);
            bytes = &rest[1..];
            if self.partial.is_empty() {
                self.line(line.strip_suffix(b"\r").unwrap_or(line));
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let trimmed = whole.strip_suffix(b"\r").unwrap_or(&whole).to_vec();
                self.line(&trimmed);
            }
        }
        // A content delta's line can be long; only the lines that matter are kept whole.
        if self.partial.len() < 64 * 1024 {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(MessagesUsage::to_usage)
    }

    fn finished(&self) -> bool {
        self.stopped
    }
}

impl IngressStream for EventWriter {
    fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes> {
        self.push(chunk)
    }

    fn finish(&mut self) -> Bytes {
        EventWriter::finish(self)
    }

    fn error(&mut self, error: &Error) -> Bytes {
        self.error_event(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_reads_usage_from_events_in_any_pieces() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":30,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_stop\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for piece in [1, 7, 64, stream.len()] {
            let mut meter = MessagesMeter::default();
            for part in stream.as_bytes().chunks(piece) {
                meter.feed(part);
            }
            let usage = meter.usage().unwrap();
            assert_eq!(usage.prompt_tokens, 47, "pieces of {piece}");
            assert_eq!(usage.cached_tokens, 30);
            assert_eq!(usage.completion_tokens, 9);
            assert!(meter.finished());
        }
        let mut cut = MessagesMeter::default();
        cut.feed(&stream.as_bytes()[..200]);
        assert!(!cut.finished());
    }
}
