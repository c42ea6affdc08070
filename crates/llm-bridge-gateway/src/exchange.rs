//! One chat request, from a validated body to an answer, the same for every transport:
//! routing, timing, usage and the access event live here, framing lives in the transports.

use std::time::Instant;

use bytes::Bytes;
use llm_bridge_core::{ChatRequest, Error, ErrorKind, inspect};

use crate::Gateway;
use crate::access::{Outcome, RequestLog};
use crate::meter::MeteredStream;

/// A successful answer.
pub enum Answer {
    /// A complete `chat.completion` object.
    Complete {
        /// The upstream's JSON, untouched.
        body: Bytes,
    },
    /// A stream of chunks.
    Stream(Box<MeteredStream>),
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
                log.upstream = Some(upstream_started.elapsed());
                log.provider = Some(served.provider);
                log.upstream_model = Some(served.upstream_model);
                Ok(Answer::Stream(Box::new(MeteredStream::new(
                    served.value,
                    client_wants_usage,
                    log,
                ))))
            }
            Err(e) => Err(failed(log, e)),
        }
    } else {
        match gateway.router.chat(request).await {
            Ok(served) => {
                log.upstream = Some(upstream_started.elapsed());
                log.provider = Some(served.provider);
                log.upstream_model = Some(served.upstream_model);
                let body = served.value.body;
                match inspect(&body, None) {
                    Ok(seen) => {
                        log.usage = seen.usage;
                        log.finish(Outcome::Ok);
                        Ok(Answer::Complete { body })
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

/// Finishes the log of a request that failed before its answer started.
pub fn failed(mut log: RequestLog, e: Error) -> Error {
    if log.provider.is_none() {
        log.provider = e.provider().map(Into::into);
    }
    log.fail(&e);
    log.finish(Outcome::Error);
    e
}
