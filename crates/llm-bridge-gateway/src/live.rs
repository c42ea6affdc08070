//! Access events as they happen, for `GET /admin/events` (the console's live view): every
//! finished request is offered to a broadcast channel — only when someone listens — and each
//! listener gets the events matching its filter as server-sent events.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};

/// Events a slow listener may fall behind by before it misses some.
const CAPACITY: usize = 1024;

/// One finished request, as the live view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// When the request arrived (RFC 3339).
    pub time: String,
    /// The request id.
    pub request_id: String,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// The access key's name.
    pub key: Option<String>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// The provider that served it.
    pub provider: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// The HTTP status.
    pub status: u16,
    /// `ok`, `error`, `cancelled` or `truncated`.
    pub outcome: &'static str,
    /// Time to the end of the answer.
    pub latency_ms: f64,
    /// Time to the first chunk of a stream.
    pub ttft_ms: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost, where priced.
    pub cost: Option<f64>,
    /// What went wrong.
    pub error: Option<String>,
}

/// The broadcast side, shared by all requests.
pub struct Live {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Live {
    /// Whether anyone listens (events are built only then).
    pub fn listening(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Offers an event to the listeners.
    pub fn send(&self, event: LiveEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }
}

/// Which events a listener wants: each set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The key's name.
    pub key: Option<String>,
    /// A substring of the model the client asked for.
    pub model: Option<String>,
    /// A status (`429`) or class (`4xx`, `5xx`, `error` for anything but 2xx).
    pub status: Option<String>,
}

impl Filter {
    fn matches(&self, e: &LiveEvent) -> bool {
        if let Some(k) = &self.key {
            if e.key.as_deref() != Some(k.as_str()) {
                return false;
            }
        }
        if let Some(m) = &self.model {
            if !e.model.as_deref().unwrap_or_default().contains(m.as_str()) {
                return false;
            }
        }
        match self.status.as_deref() {
            None | Some("") => true,
            Some("error") => !(200..300).contains(&e.status),
            Some(class) if class.len() == 3 && class.ends_with("xx") => {
                class.as_bytes()[0] == b'0' + u8::try_from(e.status / 100).unwrap_or(0)
            }
            Some(exact) => exact == e.status.to_string(),
        }
    }
}

/// The SSE body of one listener: `event: access` / `data: <json>` per matching event, a
/// comment every 15 s to keep proxies from closing it, and the end at shutdown.
pub struct LiveBody {
    rx: mpsc::Receiver<Bytes>,
}

impl LiveBody {
    /// Starts forwarding `live`'s events that match `filter` until the client goes away or
    /// `shutdown` turns true.
    pub fn start(live: &Live, filter: Filter, mut shutdown: watch::Receiver<bool>) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let mut events = live.subscribe();
        tokio::spawn(async move {
            // Tells the page at once that it is connected.
            if tx
                .send(Bytes::from_static(b": connected\n\n"))
                .await
                .is_err()
            {
                return;
            }
            let mut beat = tokio::time::interval(Duration::from_secs(15));
            beat.tick().await;
            loop {
                let frame = tokio::select! {
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = beat.tick() => Bytes::from_static(b": keep-alive\n\n"),
                    event = events.recv() => match event {
                        Ok(e) if filter.matches(&e) => {
                            let json = serde_json::to_string(&*e).unwrap_or_default();
                            Bytes::from(format!("event: access\ndata: {json}\n\n"))
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n"))
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        LiveBody { rx }
    }
}

impl Body for LiveBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> LiveEvent {
        LiveEvent {
            time: String::new(),
            request_id: "r".into(),
            transport: "http",
            key: Some("alice".into()),
            model: Some("up/gpt-4o".into()),
            provider: Some("up".into()),
            stream: false,
            status,
            outcome: "ok",
            latency_ms: 1.0,
            ttft_ms: None,
            prompt_tokens: 1,
            completion_tokens: 1,
            cost: None,
            error: None,
        }
    }

    #[test]
    fn filters_by_key_model_and_status() {
        let all = Filter::default();
        assert!(all.matches(&event(200)));
        let f = |key: Option<&str>, model: Option<&str>, status: Option<&str>| Filter {
            key: key.map(str::to_owned),
            model: model.map(str::to_owned),
            status: status.map(str::to_owned),
        };
        assert!(f(Some("alice"), None, None).matches(&event(200)));
        assert!(!f(Some("bob"), None, None).matches(&event(200)));
        assert!(f(None, Some("gpt"), None).matches(&event(200)));
        assert!(!f(None, Some("claude"), None).matches(&event(200)));
        assert!(f(None, None, Some("429")).matches(&event(429)));
        assert!(!f(None, None, Some("429")).matches(&event(200)));
        assert!(f(None, None, Some("4xx")).matches(&event(401)));
        assert!(!f(None, None, Some("4xx")).matches(&event(502)));
        assert!(f(None, None, Some("error")).matches(&event(502)));
        assert!(!f(None, None, Some("error")).matches(&event(200)));
    }
}
