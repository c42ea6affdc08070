//! Reading upstream bodies under an idle timeout: whole (JSON answers, error bodies) or as a
//! stream of server-sent events.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::Body;
use hyper::body::Incoming;
use llm_bridge_core::{Error, ErrorKind};
use tokio::time::{Instant, Sleep};

use crate::client::InFlight;
use crate::error::describe;
use crate::h1::{self, BoxError};
use crate::sse::{SseDecoder, SseEvent};

/// The body of an upstream's answer. Over a pool of hyper-util's, its request counts as in
/// flight on that pool until it is dropped (see [`crate::client::STREAMS_PER_POOL`]); over a
/// lane's own HTTP/1 connection, the connection goes back to the lane once the body has been
/// read to the end, or is dropped.
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    Pooled {
        body: Incoming,
        _in_flight: InFlight,
    },
    Lane(h1::Body),
}

impl UpstreamBody {
    pub(crate) fn pooled(body: Incoming, in_flight: InFlight) -> Self {
        UpstreamBody {
            inner: Inner::Pooled {
                body,
                _in_flight: in_flight,
            },
        }
    }

    pub(crate) fn lane(body: h1::Body) -> Self {
        UpstreamBody {
            inner: Inner::Lane(body),
        }
    }

    /// Whether a lane's connection holds a block of read bytes for this body.
    #[cfg(test)]
    pub(crate) fn holds_a_block(&self) -> bool {
        match &self.inner {
            Inner::Pooled { .. } => true,
            Inner::Lane(body) => body.holds_a_block(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Pooled { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            Inner::Lane(body) => body
                .poll_data(cx)
                .map(|d| d.map(|d| d.map(http_body::Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled { body, .. } => body.is_end_stream(),
            Inner::Lane(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.inner {
            Inner::Pooled { body, .. } => body.size_hint(),
            Inner::Lane(body) => body.size_hint(),
        }
    }
}

/// The frames of a body, failing when none arrives for `idle`.
pub struct IdleBody {
    body: UpstreamBody,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleBody {
    /// Wraps a body.
    pub fn new(body: UpstreamBody, idle: Duration) -> Self {
        IdleBody {
            body,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The next piece of data; `None` at the end of the body.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.deadline.as_mut().reset(Instant::now() + self.idle);
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Trailers carry nothing we need.
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!(
                            "upstream connection failed while reading the response: {}",
                            describe(&*e)
                        ),
                    ))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    ready!(self.deadline.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::UpstreamTimeout,
                        format!("upstream sent nothing for {} s", fmt_secs(self.idle)),
                    ))));
                }
            }
        }
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, Error> {
        let mut buf = BytesMut::new();
        let mut first: Option<Bytes> = None;
        while let Some(data) = std::future::poll_fn(|cx| self.poll_data(cx)).await {
            let data = data?;
            let total = buf.len() + first.as_ref().map_or(0, Bytes::len) + data.len();
            if total > limit {
                return Err(Error::new(
                    ErrorKind::UpstreamBadResponse,
                    format!("upstream response is larger than {limit} bytes"),
                ));
            }
            // A body in one frame (the usual case) is returned without copying.
            match first.take() {
                None if buf.is_empty() => first = Some(data),
                None => buf.extend_from_slice(&data),
                Some(f) => {
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    }
}

pub(crate) fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.3}")
    }
}

/// The events of a `text/event-stream` body, failing when the upstream stays silent
/// longer than the idle timeout.
pub struct SseStream {
    body: IdleBody,
    decoder: SseDecoder,
    ended: bool,
}

impl futures_util::Stream for IdleBody {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_data(cx)
    }
}

impl SseStream {
    /// Decodes a body.
    pub fn new(body: UpstreamBody, idle: Duration) -> Self {
        SseStream {
            body: IdleBody::new(body, idle),
            decoder: SseDecoder::default(),
            ended: false,
        }
    }
}

impl Stream for SseStream {
    type Item = Result<SseEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => {}
                Err(_) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::UpstreamBadResponse,
                        "upstream sent an oversized event-stream line",
                    ))));
                }
            }
            match ready!(this.body.poll_data(cx)) {
                Some(Ok(data)) => this.decoder.push(&data),
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.ended = true;
                    return Poll::Ready(this.decoder.finish().map(Ok));
                }
            }
        }
    }
}
