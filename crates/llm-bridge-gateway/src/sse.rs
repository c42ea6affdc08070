//! The server-sent-event body of a streamed answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body, Frame};
use llm_bridge_core::{Error, ErrorKind};
use tokio::sync::watch;

use crate::errors::error_body;
use crate::meter::{MeteredStream, StreamItem};

const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <chunk>\n\n` per chunk, one `data: [DONE]` at the end; a failure becomes one
/// `data: {"error": …}` event before it. Each chunk is written as soon as it arrives.
pub struct SseBody {
    stream: MeteredStream,
    ended: bool,
    /// Resolves when the drain timeout passed during shutdown: the stream is cut.
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl SseBody {
    /// A body for a metered stream, cut when `cut` turns `true`.
    pub fn new(stream: MeteredStream, mut cut: watch::Receiver<bool>) -> Self {
        SseBody {
            stream,
            ended: false,
            cut: Box::pin(async move {
                let _ = cut.wait_for(|cut| *cut).await;
            }),
        }
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
        let bytes = match next {
            Some(StreamItem::Chunk(data)) => event(&data, false),
            Some(StreamItem::Failed(e)) => {
                self.ended = true;
                event(&error_body(&e), true)
            }
            None => {
                self.ended = true;
                Bytes::from_static(DONE)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
