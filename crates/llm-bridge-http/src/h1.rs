//! Cleartext HTTP/1 upstream connections: spoken by the gateway itself, pooled by the lane
//! that uses them.
//!
//! hyper's client gives each connection a task, a request channel (a first block of 32
//! request slots, 9 KB), an 8 KB read buffer and an 8 KB head buffer (heaptrack): an open
//! stream to an HTTP/1 upstream cost 34 KB with them, 18 KB without. Here a connection is
//! its socket: the request is written and its response head read by the request's own
//! task, and the body is read by whoever polls it, through a buffer on the stack, keeping
//! only the bytes not yet taken. hyper-util's pool cost a request more than the connection
//! it lends (it looks the connection up by `(Scheme, Authority)` in a SipHash map three
//! times and spawns a task per request to put it back; callgrind: 8.3k of the 118k
//! instructions of a request). A provider has one upstream and a lane one thread, so a
//! lane's idle connections are a short list: a request takes the newest, its response body
//! puts it back when it ends or is dropped, and a reaper closes those idle longer than the
//! idle timeout. `https://` upstreams (HTTP/2 by ALPN, shared connections) and proxied ones
//! stay with hyper-util.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use http::{Method, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::{self, Framing, WireError};

/// The most of a body dropped before its end that is read to keep its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The most read from a connection at once: on the stack of the task reading, so that a
/// connection keeps no read buffer between reads.
const READ_SIZE: usize = 16 * 1024;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    conn: Conn,
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
    pub(crate) async fn take(&self, authority: &Authority) -> Option<Conn> {
        loop {
            let conn = {
                let mut state = self.state();
                let at = state.idle.iter().rposition(|i| i.authority == *authority)?;
                state.idle.remove(at).conn
            };
            if conn.is_quiet() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn`, whose last response body has been read to its end, for the next request
    /// ([`take`](Self::take) checks that the upstream has not closed it since). Outside a
    /// Tokio runtime (no reaper could close it) it is dropped, closing it.
    fn put(self: &Arc<Self>, authority: Authority, conn: Conn) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.state();
        state.idle.push(Idle {
            authority,
            conn,
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
        // Dropping a connection closes its socket: done outside the lock.
        drop(closed);
        if !reaping {
            return;
        }
    }
}

/// An open connection, and what is left of the response body it is reading.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet taken: empty (no allocation) between reads, unless a read
    /// ended amid a chunk's framing.
    buf: BytesMut,
    framing: Framing,
}

/// Why a request got no response head.
pub(crate) enum Unanswered {
    /// The request could not be written whole (nor was it answered): the upstream cannot
    /// have acted on it, and a request on a reused connection goes out on another.
    Unsent(BoxError),
    Failed(BoxError),
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            framing: Framing::Done,
        }
    }

    /// Writes a request (`head`, then `body`) and reads the response head, reading while
    /// it writes: an upstream may answer (an error, say) before it has read a large body.
    /// Returns the response, whose body this connection then reads, and whether the
    /// connection may be used again after it.
    pub(crate) async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        method: &Method,
    ) -> Result<(Response<()>, bool), Unanswered> {
        let mut written = None;
        let (head, mut buf) = {
            let (mut reader, mut writer) = self.io.split();
            let write = write_request(&mut writer, head, body);
            let read = read_head(&mut reader, method);
            tokio::pin!(write, read);
            loop {
                tokio::select! {
                    biased;
                    w = &mut write, if written.is_none() => written = Some(w),
                    head = &mut read => match (head, written.take()) {
                        (Ok(head), w) => {
                            written = w;
                            break head;
                        }
                        (Err(_), Some(Err(unsent))) => {
                            return Err(Unanswered::Unsent(unsent.into()));
                        }
                        (Err(e), _) => return Err(Unanswered::Failed(e)),
                    },
                }
            }
        };
        buf.advance(head.len);
        // The start of the body, if it came with the head, in a block of its own size: the
        // head's buffer is not kept for the body's life.
        self.buf = if buf.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&buf[..])
        };
        self.framing = head.framing;
        let reusable = head.reusable && matches!(written, Some(Ok(())));
        Ok((head.response, reusable))
    }

    /// The next piece of the response body; `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            match self.framing.next(&mut self.buf) {
                Ok(Some(data)) => {
                    if self.buf.is_empty() {
                        // Lets go of the block the data came in (the data keeps it while needed).
                        self.buf = BytesMut::new();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) if self.framing.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut stack);
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut read)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            if read.filled().is_empty() {
                return Poll::Ready(self.framing.closed().err().map(|e| Err(e.into())));
            }
            self.buf.extend_from_slice(read.filled());
        }
    }

    /// Reads the rest of a body dropped before its end, if it has arrived already (a stream
    /// read up to its `[DONE]`, whose last chunk came with it) and is short; whether it had
    /// (and the connection can be used again). One still coming is not waited for: the
    /// upstream may be generating it, at a cost, for nobody.
    fn finish(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut left = DRAIN_LIMIT;
        loop {
            match self.poll_data(&mut cx) {
                Poll::Ready(None) => return true,
                Poll::Ready(Some(Ok(data))) if data.len() <= left => left -= data.len(),
                _ => return false,
            }
        }
    }

    /// Whether the upstream has neither closed the connection nor sent anything unasked.
    fn is_quiet(&self) -> bool {
        self.framing.is_done()
            && self.buf.is_empty()
            && matches!(self.io.try_read(&mut [0; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Writes a request's head and body in one vectored write (then the rest, when the socket
/// takes less): one segment for a request that fits. Two, when the upstream's listener was
/// overflowing and answered with SYN cookies, could see the first lost and the second, whose
/// sequence number is no cookie's, reset (measured: 6–39 of 5,000 streams opened at once).
async fn write_request(
    writer: &mut (impl AsyncWrite + Unpin),
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        let n = writer
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        match head.get(n..) {
            Some(rest) => head = rest,
            None => {
                body = &body[n - head.len()..];
                head = &[];
            }
        }
    }
    writer.write_all(body).await
}

/// Reads a response head, skipping interim (1xx) responses; returns it with what was read
/// (the head, and perhaps the start of the body).
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    method: &Method,
) -> Result<(wire::Head, BytesMut), BoxError> {
    let mut buf = BytesMut::new();
    loop {
        if !buf.is_empty() {
            match wire::parse_head(&buf, method)? {
                Some(head) if head.response.status().is_informational() => {
                    buf.advance(head.len);
                    continue;
                }
                Some(head) => return Ok((head, buf)),
                None => {}
            }
        }
        buf.reserve(4096);
        if reader.read_buf(&mut buf).await? == 0 {
            return Err(Box::new(WireError(if buf.is_empty() {
                "the upstream closed the connection without answering"
            } else {
                "the upstream closed the connection amid the response head"
            })));
        }
    }
}

/// The body of a response read over a lane's connection, which goes back to the lane when
/// the body has been read to its end, or is dropped.
pub(crate) struct Body {
    /// `None` once the body has ended (the connection is back in the list) or failed.
    conn: Option<Conn>,
    home: Arc<IdleConnections>,
    authority: Authority,
    reusable: bool,
}

impl Body {
    pub(crate) fn new(
        conn: Conn,
        home: Arc<IdleConnections>,
        authority: Authority,
        reusable: bool,
    ) -> Self {
        Body {
            conn: Some(conn),
            home,
            authority,
            reusable,
        }
    }

    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        let polled = conn.poll_data(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if !conn.framing.is_done() => {}
            Poll::Pending => {}
            // A connection that failed is not used again.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => self.give_back(),
        }
        polled
    }

    /// Whether the connection holds a block of read bytes (an empty `BytesMut` may still
    /// point into one: then it is not the dangling pointer of one that never had any).
    #[cfg(test)]
    pub(crate) fn holds_a_block(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.buf.capacity() > 0 || c.buf.as_ptr() != BytesMut::new().as_ptr())
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.framing.is_done())
    }

    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self.conn.as_ref().map(|c| &c.framing) {
            Some(Framing::Length(left)) => http_body::SizeHint::with_exact(*left),
            Some(Framing::Done) | None => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }

    fn give_back(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // A body that runs until the connection closes leaves nothing to reuse.
        if self.reusable && !matches!(conn.framing, Framing::Close) && conn.finish() {
            self.home.put(self.authority.clone(), conn);
        }
    }
}

impl Drop for Body {
    /// A body dropped before its end gives its connection back if the rest of it has
    /// arrived, and closes it otherwise.
    fn drop(&mut self) {
        self.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `take` bytes a write and counts the writes.
    struct Recorder {
        written: Vec<u8>,
        writes: usize,
        take: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let mut n = 0;
            for buf in bufs {
                let part = &buf[..buf.len().min(self.take - n)];
                self.written.extend_from_slice(part);
                n += part.len();
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_request_goes_out_in_one_write_when_the_socket_takes_it() {
        let (head, body) = (
            &b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n"[..],
            &b"{}"[..],
        );
        let mut socket = Recorder {
            written: Vec::new(),
            writes: 0,
            take: usize::MAX,
        };
        write_request(&mut socket, head, body).await.unwrap();
        assert_eq!(socket.writes, 1);
        assert_eq!(socket.written, [head, body].concat());
        // A socket that takes a few bytes at a time still gets all of it, in order.
        for take in [1, 5, head.len(), head.len() + 1] {
            let mut socket = Recorder {
                written: Vec::new(),
                writes: 0,
                take,
            };
            write_request(&mut socket, head, body).await.unwrap();
            assert_eq!(socket.written, [head, body].concat(), "{take} at a time");
        }
    }
}
