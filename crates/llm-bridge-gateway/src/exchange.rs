//! One chat request, from a validated body to an answer, the same for every transport:
//! routing, timing, usage and the access event live here, framing lives in the transports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use llm_bridge_core::{ChatRequest, Error, ErrorKind, inspect};
use llm_bridge_router::Served;

use crate::Gateway;
use crate::access::{Outcome, RequestLog};
use crate::meter::MeteredStream;

/// A successful answer.
pub enum Answer {
    /// A complete `chat.completion` object.
    Complete {
        /// The upstream's JSON, untouched.
        body: Bytes,
        /// Time spent waiting for the upstream.
        upstream: Duration,
    },
    /// A stream of chunks.
    Stream {
        /// The chunks.
        stream: Box<MeteredStream>,
        /// Time the upstream took to start answering.
        upstream: Duration,
    },
}

/// Runs one chat request. The log is finished here, or handed to the stream.
pub async fn run(
    gateway: &Gateway,
    mut log: RequestLog,
    request: ChatRequest,
) -> Result<Answer, Error> {
    log.model = Some(request.model().to_owned());
    log.stream = request.stream();
    let upstream_started = Instant::now();
    if request.stream() {
        let client_wants_usage = request.include_usage();
        match gateway.router.chat_stream(request).await {
            Ok(served) => {
                let stream = note_served(&mut log, served, upstream_started);
                let upstream = log.upstream.unwrap_or_default();
                log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
                Ok(Answer::Stream {
                    stream: Box::new(MeteredStream::new(stream, client_wants_usage, log)),
                    upstream,
                })
            }
            Err(e) => Err(failed(log, e)),
        }
    } else {
        match gateway.router.chat(request).await {
            Ok(served) => {
                let body = note_served(&mut log, served, upstream_started).body;
                match inspect(&body, None) {
                    Ok(seen) => {
                        log.answered = true;
                        log.usage = seen.usage;
                        if seen.usage.is_none() {
                            log.response_body = Some(body.clone());
                        }
                        let upstream = log.upstream.unwrap_or_default();
                        log.overhead = Some(log.started.elapsed().saturating_sub(upstream));
                        log.finish(Outcome::Ok);
                        Ok(Answer::Complete { body, upstream })
                    }
                    Err(parse) => {
                        let e = Error::new(
                            ErrorKind::UpstreamBadResponse,
                            format!("upstream answered with invalid JSON: {parse}"),
                        );
                        Err(failed(log, e))
                    }
                }
            }
            Err(e) => Err(failed(log, e)),
        }
    }
}

fn note_served<T>(log: &mut RequestLog, served: Served<T>, upstream_started: Instant) -> T {
    log.upstream = Some(upstream_started.elapsed());
    tracing::debug!(
        provider = %served.provider,
        model = %served.model,
        upstream_model = %served.upstream_model,
        upstream_ms = upstream_started.elapsed().as_secs_f64() * 1000.0,
        "upstream answered"
    );
    log.provider = Some(served.provider);
    log.provider_model = Some(served.model);
    log.upstream_model = Some(served.upstream_model);
    log.price = served.price;
    served.value
}

/// Finishes the log of a request that failed before its answer started.
pub fn failed(mut log: RequestLog, e: Error) -> Error {
    if log.provider.is_none() {
        log.provider = e.provider().map(Into::into);
    }
    log.fail(&e);
    log.finish(Outcome::Error);
    e
}
