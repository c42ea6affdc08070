//! The gateway's view of an upstream stream: it forwards chunks as they arrive, takes the
//! usage out of them, holds back the usage chunk the client did not ask for, and ends the
//! request's log exactly once (finished, failed, or abandoned by the client).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use llm_bridge_core::{ChunkStream, Error, ErrorKind, Usage, inspect, strip_usage};

use crate::log_context::LogContext;
use crate::request_log::{Outcome, RequestLog, Telemetry};

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
    context: LogContext,
    client_wants_usage: bool,
    usage: Option<Usage>,
    /// Finished (and taken) when the stream ends; `Drop` finishes it as cancelled.
    log: Option<RequestLog>,
    /// Tokens spent so far, by the gateway's running estimate (prompt, plus a token per four
    /// bytes of each chunk's text), kept only for keys with a token budget.
    spent_estimate: u64,
}

/// How many more tokens a stream reserves at a time when it outgrows its reservation.
const RESERVE_STEP: u64 = 256;

impl MeteredStream {
    /// Meters `inner`; `log` is finished when the stream ends or is dropped.
    pub fn new(inner: ChunkStream, client_wants_usage: bool, mut log: RequestLog) -> Self {
        log.answered = true;
        let telemetry = log.telemetry().clone();
        telemetry.metrics.stream(true);
        MeteredStream {
            inner,
            telemetry,
            context: log.context.clone(),
            client_wants_usage,
            usage: None,
            spent_estimate: log.prompt_estimate,
            log: Some(log),
        }
    }

    /// The usage reported so far (the upstream's final figures once the stream ended).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Ends the stream early (the gateway is shutting down): the request is logged and
    /// recorded as cancelled, with `e` as its error.
    pub fn cut(&mut self, e: &Error) {
        self.finish(Outcome::Cancelled, Some(e));
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
        let _entered = this.context.enter();
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
                    let outcome = if e.kind() == ErrorKind::UpstreamTruncated {
                        Outcome::Truncated
                    } else {
                        Outcome::Error
                    };
                    this.finish(outcome, Some(&e));
                    return Poll::Ready(Some(StreamItem::Failed(e)));
                }
                Some(Ok(chunk)) => chunk,
            };
            let text_before = log.delivered_text.len();
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
            let text = (log.delivered_text.len() - text_before) as u64;
            if let Some(admission) = log.admission.as_mut().filter(|a| a.has_token_budget()) {
                this.spent_estimate += text.div_ceil(4);
                if let Some(u) = seen.usage {
                    this.spent_estimate = this.spent_estimate.max(u.total_tokens);
                }
                let over = this.spent_estimate.saturating_sub(admission.reserved());
                if over > 0 && admission.extend(over.max(RESERVE_STEP)) < over {
                    let e = Error::new(
                        ErrorKind::QuotaExceeded,
                        "the key's token budget ran out during the stream",
                    );
                    this.finish(Outcome::Error, Some(&e));
                    return Poll::Ready(Some(StreamItem::Failed(e)));
                }
            }
            if let Some(trace) = log.trace.as_deref_mut() {
                trace.see_answer(&chunk.data);
            }
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
