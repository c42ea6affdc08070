//! Cleartext HTTP/1 upstream connections, pooled by the lane that uses them.
//!
//! hyper-util's pool costs a request more than the connection it lends: it looks the
//! connection up by `(Scheme, Authority)` in a SipHash map three times, races the checkout
//! against a lazily built connect future, and spawns a task per request that waits for the
//! connection to be ready again before putting it back (callgrind: `send_request` 8.3k of
//! the 118k instructions of a request). A provider has one upstream and a lane one thread,
//! so a lane's idle connections are a short list: a request takes the newest, its response
//! body puts it back when it ends or is dropped, and a reaper closes those idle longer than
//! the idle timeout. `https://` upstreams (HTTP/2 by ALPN, shared connections)
//! and proxied ones stay with hyper-util.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Uri};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use tokio::time::Instant;

/// How long a connection taken from the list may take to become ready for a request.
const READY_WAIT: Duration = Duration::from_millis(50);

/// The sending half of a pooled connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// One lane's idle cleartext HTTP/1 connections.
pub(crate) struct IdleConnections {
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Oldest first: a connection is put back at the end and taken from the end, so the
    /// front is what has been idle longest.
    idle: Vec<Idle>,
    /// A reaper task is waiting for the oldest connection's timeout.
    reaping: bool,
}

struct Idle {
    authority: Authority,
    sender: Sender,
    since: Instant,
}

impl IdleConnections {
    pub(crate) fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(IdleConnections {
            idle_timeout,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `authority` that can take a request; `None`
    /// when there is none (closed ones are dropped on the way).
    pub(crate) async fn take(&self, authority: &Authority) -> Option<Sender> {
        loop {
            let mut sender = {
                let mut state = self.state();
                let at = state.idle.iter().rposition(|i| i.authority == *authority)?;
                state.idle.remove(at).sender
            };
            match std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => return Some(sender),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => {}
            }
            // Given back as its body was dropped, the connection may not have read the rest
            // of it yet: its task does (and asks for the next request, or closes) when it next
            // runs. One still busy after that (writing a request body that the upstream, having
            // answered, no longer reads) is closed rather than waited for.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender`, whose last response body ended or was dropped, for the next request
    /// ([`take`](Self::take) finds whether hyper kept the connection). Outside a Tokio runtime
    /// (no reaper could close it) it is dropped, closing it.
    pub(crate) fn put(self: &Arc<Self>, authority: Authority, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.state();
        state.idle.push(Idle {
            authority,
            sender,
            since: Instant::now(),
        });
        if !state.reaping {
            state.reaping = true;
            runtime.spawn(reap(Arc::downgrade(self)));
        }
    }

    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.state().idle.len()
    }
}

/// Closes connections idle for the idle timeout, waking when the oldest one's is up; ends
/// when none is left (the next `put` starts another) or the client is gone.
async fn reap(connections: Weak<IdleConnections>) {
    let mut wake = {
        let Some(c) = connections.upgrade() else {
            return;
        };
        Instant::now() + c.idle_timeout
    };
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(c) = connections.upgrade() else {
            return;
        };
        let (closed, reaping) = {
            let mut state = c.state();
            let now = Instant::now();
            let expired = state
                .idle
                .iter()
                .position(|i| now.saturating_duration_since(i.since) < c.idle_timeout)
                .unwrap_or(state.idle.len());
            let closed: Vec<Idle> = state.idle.drain(..expired).collect();
            state.idle.retain(|i| !i.sender.is_closed());
            match state.idle.first() {
                Some(oldest) => wake = oldest.since + c.idle_timeout,
                None => {
                    // A burst's list is not kept at its size.
                    state.idle = Vec::new();
                    state.reaping = false;
                }
            }
            (closed, state.reaping)
        };
        // Dropping a sender ends its idle connection: done outside the lock.
        drop(closed);
        if !reaping {
            return;
        }
    }
}

/// Opens a connection over `io` and runs it as a task of the current runtime.
pub(crate) async fn handshake<T>(io: T) -> hyper::Result<Sender>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await?;
    // `map`, not an `async` block that awaits it: such a block keeps a second slot the size
    // of hyper's connection, and the task is the connection's for its whole life.
    tokio::spawn(connection.map(|ended| {
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    }));
    Ok(sender)
}

/// Gives `request` the URI an HTTP/1 request line to an origin server has (the path and
/// query), and returns the one it had (moved, not copied: it is what a new connection dials).
pub(crate) fn origin_form<B>(request: &mut Request<B>) -> Uri {
    let path = match request.uri().path_and_query() {
        Some(path) if path.as_str() != "/" => path.clone(),
        _ => PathAndQuery::from_static("/"),
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    match Uri::from_parts(parts) {
        Ok(origin) => std::mem::replace(request.uri_mut(), origin),
        Err(_) => request.uri().clone(),
    }
}

/// A connection lent to one request, put back in its lane's list when the response body
/// ends or is dropped (see [`crate::UpstreamBody`]).
pub(crate) struct Lent {
    pub(crate) connections: Arc<IdleConnections>,
    pub(crate) authority: Authority,
    pub(crate) sender: Sender,
}

impl Lent {
    pub(crate) fn give_back(self) {
        self.connections.put(self.authority, self.sender);
    }
}
