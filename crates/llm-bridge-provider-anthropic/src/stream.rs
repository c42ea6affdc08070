//! The chunk stream of an Anthropic `stream: true` answer: each event goes through the
//! dialect's [`ChunkTranslator`] as soon as it arrives. `message_stop` ends the answer; a body
//! that ends before it is a cut answer (the translator decides), and an `error` event ends the
//! stream with that error.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use llm_bridge_core::{ChatChunk, Result};
use llm_bridge_dialect_anthropic::ChunkTranslator;
use llm_bridge_http::SseStream;

/// Chunks translated from Anthropic's events.
pub(crate) struct AnthropicChunks {
    events: SseStream,
    translator: ChunkTranslator,
    /// Chunks translated but not yet handed out.
    pending: VecDeque<ChatChunk>,
    provider: Arc<str>,
    /// An event other than `message_start` and `ping` has been read.
    answering: bool,
    done: bool,
}

impl AnthropicChunks {
    pub(crate) fn new(events: SseStream, translator: ChunkTranslator, provider: Arc<str>) -> Self {
        AnthropicChunks {
            events,
            translator,
            pending: VecDeque::new(),
            provider,
            answering: false,
            done: false,
        }
    }

    /// Reads until the answer itself starts (past `message_start` and `ping`s), so that an
    /// error Anthropic reports before any content (`overloaded_error` right after
    /// `message_start` is common) becomes a real HTTP status and a retry, not an error
    /// inside a 200. What was read stays queued.
    pub(crate) async fn first(&mut self) -> Result<()> {
        while !self.answering && !self.done {
            if let Some(Err(e)) = std::future::poll_fn(|cx| self.poll_event(cx)).await {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Handles one event (or the end of the body): `Some(Ok)` when something was processed,
    /// `None` once the stream is over.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<()>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let outcome = match ready!(Pin::new(&mut self.events).poll_next(cx)) {
            Some(Err(e)) => Err(e),
            Some(Ok(event)) => {
                let data = event.data.trim_ascii();
                if data.is_empty() {
                    return Poll::Ready(Some(Ok(())));
                }
                let name = event
                    .event
                    .as_deref()
                    .and_then(|e| std::str::from_utf8(e).ok())
                    .unwrap_or_default();
                if !self.answering && !is_preamble(name, data) {
                    self.answering = true;
                }
                let chunks = self.translator.push(name, data);
                if self.translator.is_done() {
                    self.done = true;
                }
                chunks
            }
            None => {
                self.done = true;
                self.translator.finish()
            }
        };
        Poll::Ready(Some(match outcome {
            Ok(chunks) => {
                self.pending.extend(chunks);
                Ok(())
            }
            Err(e) => {
                self.done = true;
                Err(e.with_provider(&*self.provider))
            }
        }))
    }
}

impl Stream for AnthropicChunks {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            match ready!(this.poll_event(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(())) => {}
            }
        }
    }
}

/// Whether an event comes before the answer proper: `message_start` or `ping`. The data's
/// `type` decides (compatible services may send no `event:` names); read only until the
/// answer starts.
fn is_preamble(name: &str, data: &[u8]) -> bool {
    let kind = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
    matches!(kind.as_deref().unwrap_or(name), "message_start" | "ping")
}
