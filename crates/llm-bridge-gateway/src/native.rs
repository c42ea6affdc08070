//! The body of an answer forwarded in the client's own dialect: the upstream's bytes as they
//! arrive, read on the way for usage (never changed), with the request's log ended exactly
//! once: finished, truncated (the dialect's end marker never came), failed, cut at the drain
//! timeout, or abandoned by the client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame};
use llm_bridge_core::{Error, ErrorKind, Ingress, IngressStream, NativeMeter};
use tokio::sync::watch;

use crate::log_context::LogContext;
use crate::request_log::{Outcome, RequestLog};

type Pieces = Pin<Box<dyn Stream<Item = llm_bridge_core::Result<Bytes>> + Send>>;

/// See the module docs.
pub enum NativeBody {
    /// A complete answer, already metered.
    Complete(Option<Bytes>),
    /// A stream being forwarded.
    Stream(Box<NativeStream>),
}

/// A native event stream on its way to the client.
pub struct NativeStream {
    pieces: Pieces,
    meter: Box<dyn NativeMeter>,
    /// Renders an error event in the dialect, for failures after the stream started.
    errors: Box<dyn IngressStream>,
    log: Option<RequestLog>,
    context: LogContext,
    cut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl NativeBody {
    /// A complete answer.
    pub fn complete(bytes: Bytes) -> Self {
        NativeBody::Complete(Some(bytes))
    }

    /// A stream of `pieces` in `ingress`'s dialect; `log` ends when it does.
    pub fn new(pieces: Pieces, ingress: &dyn Ingress, mut log: RequestLog) -> Self {
        log.answered = true;
        log.telemetry().metrics.stream(true);
        NativeBody::Stream(Box::new(NativeStream {
            pieces,
            meter: ingress.native_meter(),
            errors: ingress.stream(log.model.as_deref().unwrap_or_default(), b"{}"),
            context: log.context.clone(),
            log: Some(log),
            cut: None,
        }))
    }

    /// Ends the stream with an error event when `cut` turns `true` (the drain timeout).
    pub fn cut_by(mut self, mut cut: watch::Receiver<bool>) -> Self {
        if let NativeBody::Stream(s) = &mut self {
            s.cut = Some(Box::pin(async move {
                let _ = cut.wait_for(|cut| *cut).await;
            }));
        }
        self
    }
}

impl NativeStream {
    fn finish(&mut self, outcome: Outcome, error: Option<&Error>) {
        if let Some(mut log) = self.log.take() {
            log.telemetry().metrics.stream(false);
            log.usage = self.meter.usage();
            if let Some(e) = error {
                log.error = Some(e.message().to_owned());
                log.error_kind = Some(e.kind());
            }
            log.finish(outcome);
        }
    }

    /// The error event that ends the stream, with the log finished as `outcome`.
    fn fail(&mut self, e: &Error, outcome: Outcome) -> Bytes {
        self.finish(outcome, Some(e));
        self.errors.error(e)
    }
}

impl Body for NativeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = match self.get_mut() {
            NativeBody::Complete(bytes) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
            NativeBody::Stream(s) => &mut **s,
        };
        if this.log.is_none() {
            return Poll::Ready(None);
        }
        let _entered = this.context.enter();
        let next = match this.pieces.as_mut().poll_next(cx) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                if let Some(cut) = this.cut.as_mut() {
                    ready!(cut.as_mut().poll(cx));
                    let e = Error::new(
                        ErrorKind::Unavailable,
                        "the gateway is shutting down: the stream was cut at server.drain_timeout",
                    );
                    return Poll::Ready(Some(Ok(Frame::data(this.fail(&e, Outcome::Cancelled)))));
                }
                return Poll::Pending;
            }
        };
        let bytes = match next {
            Some(Ok(bytes)) => {
                if let Some(log) = this.log.as_mut().filter(|l| l.ttft.is_none()) {
                    log.ttft = Some(log.started.elapsed());
                }
                this.meter.feed(&bytes);
                bytes
            }
            Some(Err(e)) => this.fail(&e, Outcome::Error),
            None if this.meter.finished() => {
                this.finish(Outcome::Ok, None);
                return Poll::Ready(None);
            }
            None => {
                let e = Error::new(
                    ErrorKind::UpstreamTruncated,
                    "the upstream ended the stream before the answer was complete",
                );
                this.fail(&e, Outcome::Truncated)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            NativeBody::Complete(bytes) => bytes.is_none(),
            NativeBody::Stream(s) => s.log.is_none(),
        }
    }
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.finish(Outcome::Cancelled, None);
    }
}
