//! The chunk stream of a Gemini `streamGenerateContent?alt=sse` answer: each event goes
//! through the [`ChunkTranslator`] as soon as it arrives; the end of Gemini's body (it sends
//! no `[DONE]`) yields the finish and usage chunks. An error ends the stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use llm_bridge_core::{ChatChunk, Result};
use llm_bridge_http::SseStream;

use crate::ChunkTranslator;

/// Chunks translated from Gemini's events.
pub(crate) struct GeminiChunks {
    events: SseStream,
    translator: ChunkTranslator,
    /// Chunks of the last event not yet handed out (an event yields at most two).
    pending: VecDeque<Bytes>,
    provider: Arc<str>,
    done: bool,
}

impl GeminiChunks {
    pub(crate) fn new(events: SseStream, translator: ChunkTranslator, provider: Arc<str>) -> Self {
        GeminiChunks {
            events,
            translator,
            pending: VecDeque::new(),
            provider,
            done: false,
        }
    }

    /// Reads until the first chunk is ready, so that an error Gemini reports in its first
    /// event becomes a real HTTP status (and a retry) instead of an error inside a 200.
    pub(crate) async fn first(&mut self) -> Result<()> {
        while self.pending.is_empty() && !self.done {
            if let Some(Err(e)) = std::future::poll_fn(|cx| self.poll_event(cx)).await {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Handles one event (or the end): `Some(Ok)` when something was processed, `None` once
    /// the stream is over.
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
                if data == b"[DONE]" {
                    // Gemini sends none; a proxy in front of it might.
                    self.end()
                } else {
                    self.translator.push(data)
                }
            }
            None => self.end(),
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

    fn end(&mut self) -> Result<Vec<Bytes>> {
        self.done = true;
        self.translator.finish()
    }
}

impl Stream for GeminiChunks {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(ChatChunk { data })));
            }
            match ready!(this.poll_event(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(())) => {}
            }
        }
    }
}
