//! Keeping connections from outliving their use: every accepted connection is registered,
//! knows whether a request is in flight on it, and is closed once it has been idle (no
//! request in flight) for `server.header_read_timeout`: from accept for a connection that
//! never sends a request head, whatever its protocol (HTTP/1, h2c, or nothing at all), and
//! from the end of its last request on keep-alive. Beyond `server.max_connections` the
//! longest-idle connection makes room for the new one; when none is idle, the new one is
//! refused with a 503.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// The open connections of one server.
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// How many may be open at once.
    pub max: usize,
}

/// One connection's state, shared by its task, its requests and the registry.
pub(crate) struct ConnState {
    id: u64,
    /// Requests in flight (their responses not yet fully sent).
    busy: AtomicU32,
    /// Milliseconds after the registry's epoch when the connection last became idle.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    /// Wakes the connection's task to close it (when idle) to make room.
    evict: Notify,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// How long until an idle connection's deadline, if it is idle now (zero when passed).
    fn idle_deadline_in(&self, timeout: Duration) -> Option<Duration> {
        if !self.is_idle() {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        let idle_for = Duration::from_millis(self.now_ms().saturating_sub(since));
        Some(timeout.saturating_sub(idle_for))
    }

    /// Waits until the connection should be closed: idle for `timeout`, or evicted while
    /// idle. Never resolves while a request is in flight.
    pub(crate) async fn closing(&self, timeout: Duration) {
        loop {
            let wait = self.idle_deadline_in(timeout).unwrap_or(timeout);
            if self.idle_deadline_in(timeout) == Some(Duration::ZERO) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.evict.notified() => {
                    if self.is_idle() {
                        return;
                    }
                }
            }
        }
    }
}

/// A request in flight; dropping it marks the connection idle again (when it was the last).
pub(crate) struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let state = &self.0;
        // Store the time first: the task reads it only once it sees the count at zero.
        state.idle_since_ms.store(state.now_ms(), Ordering::Release);
        state.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A registered connection; dropping it unregisters it.
pub(crate) struct Registered {
    registry: Arc<Connections>,
    /// The connection's state.
    pub state: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.state.id);
    }
}

impl Connections {
    /// A registry allowing `max` open connections.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            max: max.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a just-accepted connection, making room by evicting the longest-idle one
    /// when `also_open` (connections counted elsewhere, e.g. upgraded WebSockets) plus the
    /// registered ones reach the maximum. `None`: full, and nothing idle to evict.
    pub(crate) fn admit(self: &Arc<Self>, also_open: usize) -> Option<Registered> {
        let mut open = self.lock();
        if open.len() + also_open >= self.max && !evict_longest_idle(&open) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: self.epoch,
            evict: Notify::new(),
        });
        state.idle_since_ms.store(state.now_ms(), Ordering::Release);
        open.insert(id, state.clone());
        drop(open);
        Some(Registered {
            registry: self.clone(),
            state,
        })
    }

    /// Closes the longest-idle connection (to free a file descriptor); whether there was one.
    pub(crate) fn evict_one(&self) -> bool {
        evict_longest_idle(&self.lock())
    }
}

fn evict_longest_idle(open: &HashMap<u64, Arc<ConnState>>) -> bool {
    let oldest = open
        .values()
        .filter(|s| s.is_idle())
        .min_by_key(|s| s.idle_since_ms.load(Ordering::Acquire));
    match oldest {
        Some(s) => {
            s.evict.notify_one();
            true
        }
        None => false,
    }
}

/// The connection's socket, with a write deadline: a client that accepts no byte for
/// `write_timeout` (it stopped reading) gets its connection closed, which drops its requests
/// and so cancels their upstream calls. Also gives hyper's own header-less error answers
/// (400 for a malformed head, 431) the JSON body every other error has.
pub(crate) struct GuardedIo<T> {
    inner: T,
    write_timeout: Duration,
    /// Armed while a write is blocked; kept to be re-armed without allocating.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    /// What is left to send of a rewritten error answer.
    replacement: Option<(bytes::Bytes, usize)>,
}

impl<T> GuardedIo<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, write_timeout: Duration) -> Self {
        GuardedIo {
            inner,
            write_timeout,
            stall: None,
            stalled: false,
            replacement: None,
        }
    }

    /// Called when a write made no progress: arms the deadline, or reports that it passed.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.write_timeout;
            match &mut self.stall {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let passed = self
            .stall
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if passed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for server.write_timeout",
            )));
        }
        Poll::Pending
    }
}

/// hyper answers a request head it cannot parse itself, with an empty body. This is the
/// answer it writes, rewritten with OpenAI's error body, or `None` when `buf` is not one.
fn rewrite_protocol_error(buf: &[u8]) -> Option<bytes::Bytes> {
    let (status, message) = if buf.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "the request's header fields are too large",
        )
    } else if buf.starts_with(b"HTTP/1.1 400 ") {
        ("400 Bad Request", "the request head is malformed")
    } else if buf.starts_with(b"HTTP/1.1 414 ") {
        ("414 URI Too Long", "the request URI is too long")
    } else {
        return None;
    };
    let head_end = memchr::memmem::find(buf, b"\r\n\r\n")?;
    let head = buf[..head_end].to_ascii_lowercase();
    if head_end + 4 != buf.len() || memchr::memmem::find(&head, b"\r\ncontent-length: 0").is_none()
    {
        return None;
    }
    let body = format!(
        r#"{{"error":{{"message":"{message}","type":"invalid_request_error","param":null,"code":null}}}}"#
    );
    Some(bytes::Bytes::from(format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )))
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Sends what is left of a rewritten answer; `Ready(Ok(()))` once it is all out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(n)) => {
                    self.stalled = false;
                    *sent += n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.blocked(cx).map_ok(|_| ()),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_some() {
            std::task::ready!(this.poll_replacement(cx))?;
        }
        if let Some(answer) = rewrite_protocol_error(buf) {
            this.replacement = Some((answer, 0));
            std::task::ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.blocked(cx),
            ready => {
                this.stalled = false;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_some() {
            std::task::ready!(this.poll_replacement(cx))?;
        }
        if let [only] = bufs {
            if let Some(answer) = rewrite_protocol_error(only) {
                this.replacement = Some((answer, 0));
                std::task::ready!(this.poll_replacement(cx))?;
                return Poll::Ready(Ok(only.len()));
            }
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.blocked(cx),
            ready => {
                this.stalled = false;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.blocked(cx).map_ok(|_| ()),
            ready => {
                this.stalled = false;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The soft limit on open files of this process (`ulimit -n`), when Linux says.
pub(crate) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `server.max_connections` when not configured: half of what the file-descriptor limit
/// leaves after 64 for files and listeners (each client connection may need an upstream one
/// too), and at most 65,536.
pub(crate) fn default_max_connections() -> usize {
    open_files_limit().map_or(10_000, |n| (n.saturating_sub(64) / 2).clamp(16, 65_536))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_error_answers_get_a_json_body() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 14:00:00 GMT\r\n\r\n";
        let rewritten = rewrite_protocol_error(hyper).unwrap();
        let text = std::str::from_utf8(&rewritten).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(text.contains(&format!("content-length: {}", body.len())));
        // Our own answers (with a body) and successes are left alone.
        assert!(
            rewrite_protocol_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n")
                .is_none()
        );
        assert!(rewrite_protocol_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_the_timeout_and_a_busy_one_never() {
        let registry = Connections::new(4);
        let conn = registry.admit(0).unwrap();
        let guard = conn.state.busy();
        let closing = conn.state.closing(Duration::from_secs(30));
        tokio::pin!(closing);
        // Busy: not even after ten timeouts.
        assert!(
            tokio::time::timeout(Duration::from_secs(300), &mut closing)
                .await
                .is_err()
        );
        drop(guard);
        let before = tokio::time::Instant::now();
        closing.await;
        assert!(before.elapsed() <= Duration::from_secs(31));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_registry_evicts_the_longest_idle_connection() {
        let registry = Connections::new(2);
        let first = registry.admit(0).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = registry.admit(0).unwrap();
        let _busy = second.state.busy();
        let third = registry
            .admit(0)
            .expect("room made by evicting the idle one");
        // The evicted one is told at once.
        tokio::time::timeout(
            Duration::from_millis(10),
            first.state.closing(Duration::from_secs(30)),
        )
        .await
        .expect("evicted");
        drop(first);
        let _busy3 = third.state.busy();
        assert!(registry.admit(0).is_none(), "all busy: refused");
    }
}
