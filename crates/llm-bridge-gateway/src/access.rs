//! One access event per request, whatever its transport or outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_bridge_core::{Error, Usage};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered completely.
    Ok,
    /// Failed with an error (before or after the answer started).
    Error,
    /// The client went away before the answer was complete.
    Cancelled,
}

impl Outcome {
    /// The label used in logs and usage records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What the gateway learns about one request while serving it; emitted once, as the
/// access event, when the request ends.
#[derive(Debug)]
pub struct RequestLog {
    /// The request id (the client's `x-request-id` or a generated one).
    pub request_id: Arc<str>,
    /// When the request arrived.
    pub started: Instant,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// The access key's name.
    pub key: Option<Arc<str>>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The provider that served it.
    pub provider: Option<Arc<str>>,
    /// The model name sent upstream.
    pub upstream_model: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The HTTP status of the answer (for streams: of its start).
    pub status: u16,
    /// Time to the first chunk of a stream.
    pub ttft: Option<Duration>,
    /// Time until the upstream's answer started.
    pub upstream: Option<Duration>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    finished: bool,
}

impl RequestLog {
    /// A log for a request that just arrived.
    pub fn new(request_id: Arc<str>, transport: &'static str) -> Self {
        RequestLog {
            request_id,
            started: Instant::now(),
            transport,
            key: None,
            model: None,
            provider: None,
            upstream_model: None,
            stream: false,
            status: 200,
            ttft: None,
            upstream: None,
            usage: None,
            error: None,
            finished: false,
        }
    }

    /// Notes an error.
    pub fn fail(&mut self, e: &Error) {
        self.status = e.status();
        self.error = Some(e.message().to_owned());
    }

    /// Emits the access event.
    pub fn finish(mut self, outcome: Outcome) {
        self.emit(outcome);
    }

    fn emit(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let latency = self.started.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let usage = self.usage.unwrap_or_default();
        tracing::info!(
            target: "llm_bridge::access",
            request_id = %self.request_id,
            transport = self.transport,
            key = self.key.as_deref(),
            model = self.model.as_deref(),
            provider = self.provider.as_deref(),
            upstream_model = self.upstream_model.as_deref(),
            stream = self.stream,
            status = self.status,
            outcome = outcome.as_str(),
            latency_ms = ms(latency),
            ttft_ms = self.ttft.map(ms),
            upstream_ms = self.upstream.map(ms),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            error = self.error.as_deref(),
            "request finished"
        );
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        // A request dropped before it finished was abandoned by its client.
        if !self.finished {
            self.emit(Outcome::Cancelled);
        }
    }
}
