//! The gateway's view of an upstream stream: it forwards chunks as they arrive, takes the
//! usage out of them, holds back the usage chunk the client did not ask for, and ends the
//! request's log exactly once (finished, failed, or abandoned by the client).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use llm_bridge_core::{ChunkStream, Error, ErrorKind, Usage, inspect, strip_usage};

use crate::access::{Outcome, RequestLog, Telemetry};

/// What a transport sends next.
pub enum StreamItem {
    /// One `chat.completion.chunk`, serialised.
    Chunk(Bytes),
    /// The stream failed; nothing follows.
    Failed(Error),
}

/// A metered upstream stream. See the module docs.
pub struct MeteredStream {
    inner: ChunkStream,
    telemetry: std::sync::Arc<Telemetry>,
    span: tracing::Span,
    client_wants_usage: bool,
    usage: Option<Usage>,
    /// Finished (and taken) when the stream ends; `Drop` finishes it as cancelled.
    log: Option<RequestLog>,
}

impl MeteredStream {
    /// Meters `inner`; `log` is finished when the stream ends or is dropped.
    pub fn new(inner: ChunkStream, client_wants_usage: bool, mut log: RequestLog) -> Self {
        log.answered = true;
        let telemetry = log.telemetry().clone();
        telemetry.metrics.stream(true);
        MeteredStream {
            inner,
            telemetry,
            span: log.span.clone(),
            client_wants_usage,
            usage: None,
            log: Some(log),
        }
    }

    /// The usage reported so far (the upstream's final figures once the stream ended).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn finish(&mut self, outcome: Outcome, error: Option<&Error>) {
        if let Some(mut log) = self.log.take() {
            self.telemetry.metrics.stream(false);
            if let Some(e) = error {
                log.error_kind = Some(e.kind());
            }
            log.usage = self.usage;
            if let Some(e) = error {
                log.error = Some(e.message().to_owned());
            }
            log.finish(outcome);
        }
    }
}

impl Stream for MeteredStream {
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        let this = &mut *self;
        let span = this.span.clone();
        let _entered = span.enter();
        loop {
            let Some(log) = this.log.as_mut() else {
                return Poll::Ready(None);
            };
            let chunk = match ready!(this.inner.as_mut().poll_next(cx)) {
                None => {
                    this.finish(Outcome::Ok, None);
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.finish(Outcome::Error, Some(&e));
                    return Poll::Ready(Some(StreamItem::Failed(e)));
                }
                Some(Ok(chunk)) => chunk,
            };
            let seen = match inspect(&chunk.data, Some(&mut log.delivered_text)) {
                Ok(seen) => seen,
                Err(parse) => {
                    let e = Error::new(
                        ErrorKind::UpstreamBadResponse,
                        format!("upstream sent a chunk that is not valid JSON: {parse}"),
                    );
                    this.finish(Outcome::Error, Some(&e));
                    return Poll::Ready(Some(StreamItem::Failed(e)));
                }
            };
            log.bound_delivered_text();
            if log.ttft.is_none() {
                log.ttft = Some(log.started.elapsed());
            }
            let mut data = chunk.data;
            if let Some(usage) = seen.usage {
                this.usage = Some(usage);
                if !this.client_wants_usage {
                    if !seen.has_choices {
                        continue;
                    }
                    match strip_usage(&data) {
                        Ok(stripped) => data = stripped,
                        Err(_) => continue,
                    }
                }
            }
            return Poll::Ready(Some(StreamItem::Chunk(data)));
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled, None);
    }
}
