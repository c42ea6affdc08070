//! The server-sent-event body of a streamed answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body, Frame};
use llm_bridge_core::{Error, ErrorKind, IngressStream};
use tokio::sync::watch;

use std::sync::Arc;

use crate::errors::error_body;
use crate::meter::{MeteredStream, StreamItem};
use crate::seal::{Sealer, seal_answer};

const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <chunk>\n\n` per chunk, one `data: [DONE]` at the end; a failure becomes one
/// `data: {"error": …}` event before it. Each chunk is written as soon as it arrives.
pub struct SseBody {
    stream: MeteredStream,
    ended: bool,
    /// Renders the stream in a dialect's events; `None`: chat completion chunks.
    writer: Option<Box<dyn IngressStream>>,
    /// Given the writer's whole answer once the stream completed (to keep it).
    on_answer: Option<Box<dyn FnOnce(Bytes) + Send>>,
    /// Seals each chunk's provider state before the writer renders it.
    sealer: Option<Arc<Sealer>>,
    /// Resolves when the drain timeout passed during shutdown: the stream is cut.
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl SseBody {
    /// A body for a metered stream, cut when `cut` turns `true`.
    pub fn new(stream: MeteredStream, mut cut: watch::Receiver<bool>) -> Self {
        SseBody {
            stream,
            ended: false,
            writer: None,
            on_answer: None,
            sealer: None,
            cut: Box::pin(async move {
                let _ = cut.wait_for(|cut| *cut).await;
            }),
        }
    }
}

impl SseBody {
    /// The same stream rendered by a dialect's writer instead of as chat completion chunks.
    pub fn rendered_by(mut self, writer: Box<dyn IngressStream>) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Seals each chunk's provider state (see [`crate::seal`]) before it is rendered.
    pub fn sealing(mut self, sealer: Arc<Sealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Calls `f` with the dialect writer's whole answer when the stream completes.
    pub fn then(mut self, f: Box<dyn FnOnce(Bytes) + Send>) -> Self {
        self.on_answer = Some(f);
        self
    }

    /// The bytes for the next item; `None` when it renders to nothing (keep polling).
    fn render(&mut self, next: Option<StreamItem>) -> Option<Bytes> {
        let Some(writer) = self.writer.as_mut() else {
            return Some(match next {
                Some(StreamItem::Chunk(data)) => event(&data, false),
                Some(StreamItem::Failed(e)) => {
                    self.ended = true;
                    event(&error_body(&e), true)
                }
                None => {
                    self.ended = true;
                    Bytes::from_static(DONE)
                }
            });
        };
        let bytes = match next {
            Some(StreamItem::Chunk(data)) => match writer.chunk(
                &self
                    .sealer
                    .as_ref()
                    .and_then(|s| seal_answer(s, &data))
                    .unwrap_or(data),
            ) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.ended = true;
                    writer.error(&e)
                }
            },
            Some(StreamItem::Failed(e)) => {
                self.ended = true;
                writer.error(&e)
            }
            None => {
                self.ended = true;
                writer.finish()
            }
        };
        if self.on_answer.is_some() {
            if let Some(answer) = writer.final_answer() {
                if let Some(f) = self.on_answer.take() {
                    f(answer);
                }
            }
        }
        (!bytes.is_empty() || self.ended).then_some(bytes)
    }
}

fn event(data: &[u8], then_done: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8 + if then_done { DONE.len() } else { 0 });
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    if then_done {
        out.put_slice(DONE);
    }
    out.freeze()
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let next = match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    ready!(self.cut.as_mut().poll(cx));
                    let e = Error::new(
                        ErrorKind::Unavailable,
                        "the gateway is shutting down: the stream was cut at server.drain_timeout",
                    );
                    self.stream.cut(&e);
                    Some(StreamItem::Failed(e))
                }
            };
            if let Some(bytes) = self.render(next) {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
