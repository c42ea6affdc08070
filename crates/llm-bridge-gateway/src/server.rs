//! Accepting connections, serving HTTP/1.1 and HTTP/2 on them, and shutting down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Gateway;
use crate::Lanes;
use crate::body::GatewayBody;
use crate::conn::{BusyGuard, Connections, GuardedIo, Registered};
use crate::dispatch::handle;
use crate::drain::{Drain, Entered};

/// How long connections get, after the drain timeout cut their streams, to send the final
/// events before they are dropped.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests and streams finish for at most `drain_timeout`, cuts what is left
/// (streams get an error event and `[DONE]`, every request its access event and usage
/// record), and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(gateway, listener, None, shutdown).await;
}

/// [`serve`], with each accepted connection handed to one of `lanes` (see [`Lanes`]); with
/// `None`, connections are spawned on the runtime this runs on.
pub async fn serve_on(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    lanes: Option<Arc<Lanes>>,
    shutdown: impl Future<Output = ()>,
) {
    let config = gateway.config.clone();
    let header_timeout = config.header_read_timeout.duration();
    let write_timeout = config.write_timeout.duration();
    let builders = Arc::new(Builders::new(header_timeout));
    let connections = Connections::new(
        config
            .max_connections
            .unwrap_or_else(crate::conn::default_max_connections),
    );
    // The HTTP connections open, and the signal that tells them to finish and close.
    let served = Drain::default();
    let mut accept_errors = AcceptErrors::default();
    // Expired kept answers are pruned every hour, off the async threads.
    let pruner = gateway.responses.clone().map(|store| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let store = store.clone();
                let now = llm_bridge_usage::time::now_ms();
                match tokio::task::spawn_blocking(move || store.prune(now)).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "expired kept answers pruned"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "pruning kept answers failed"),
                    _ => {}
                }
            }
        })
    });
    // Traces are batched and exported by one task, off the request path.
    let exporter = gateway.tracer().and_then(|t| t.start());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok((stream, peer)) => (stream, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: free one if an idle
                        // connection holds it, back off instead of spinning, and say so
                        // once in a while rather than for every attempt.
                        connections.evict_one();
                        let wait = accept_errors.failed(&e);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                };
                accept_errors.succeeded();
                let also_open = gateway.ws_connections.open();
                let Some(registered) = connections.admit(also_open) else {
                    refuse(stream);
                    continue;
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let state = registered.state.clone();
                let gw = gateway.clone();
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer.ip()));
                    let busy = state.busy();
                    // Boxed apart: hyper keeps the box of a connection's request future for as
                    // long as the connection lives, and `handle`'s is about 6.6 KB. This way
                    // hyper's box holds a pointer, and those KB go back as soon as the answer
                    // starts (an open stream no longer holds them).
                    let handled = Box::pin(handle(gw.clone(), req));
                    async move {
                        let response = handled.await?;
                        Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
                    }
                });
                let connection = Connection {
                    builders: builders.clone(),
                    shutdown: served.subscribe(),
                    _open: served.enter(),
                    cut: gateway.ws_connections.subscribe_cut(),
                    registered,
                    header_timeout,
                    write_timeout,
                };
                match &lanes {
                    None => {
                        tokio::spawn(connection.serve(move || Ok(stream), service));
                    }
                    // The socket leaves this runtime's reactor and joins its lane's there.
                    Some(lanes) => match stream.into_std() {
                        Ok(stream) => lanes.spawn(
                            connection.serve(move || TcpStream::from_std(stream), service),
                        ),
                        Err(e) => tracing::debug!(error = %e, "could not move a connection to a lane"),
                    },
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    gateway.set_ready(false);
    // WebSocket connections left hyper's care when they upgraded: tell them too.
    gateway.ws_connections.start();
    let drain = gateway.config.drain_timeout.duration();
    tracing::info!(
        drain_timeout_s = drain.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    served.start();
    let all = async {
        served.idle().await;
        gateway.ws_connections.idle().await;
    };
    tokio::pin!(all);
    // A little beyond the drain timeout: WebSocket connections cut their requests at the
    // timeout and then need a moment to send their close frames.
    match tokio::time::timeout(drain, &mut all).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(
                open = connections.len(),
                "drain timeout reached: ending the remaining requests"
            );
            gateway.ws_connections.cut();
            if tokio::time::timeout(CUT_GRACE * 2, &mut all).await.is_err() {
                tracing::warn!("closing the remaining connections");
            }
        }
    }
    // The last requests' spans, sent while the collector gives them a moment.
    if let (Some(tracer), Some(exporter)) = (gateway.tracer(), exporter) {
        tracer.flush(Duration::from_secs(5)).await;
        exporter.abort();
    }
}

/// How connections are served, set once per server.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_timeout: Duration) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        // Pings find dead peers of connections with streams open; idle ones close by the
        // connection registry's deadline.
        h2.timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders { h1, h2 }
    }
}

/// What serving one accepted connection takes, wherever it runs.
struct Connection {
    builders: Arc<Builders>,
    /// `true` once the server shuts down: finish the requests in flight, then close.
    shutdown: watch::Receiver<bool>,
    /// Counts the connection open until it is dropped (shutdown waits for none).
    _open: Entered,
    /// `true` once the drain timeout has passed.
    cut: watch::Receiver<bool>,
    registered: Registered,
    header_timeout: Duration,
    write_timeout: Duration,
}

// An open stream keeps its connection's task, all of it written when the task is spawned:
// what a connection holds is kept small. Its fields are used in place (an async fn keeps what
// it moves out of `self` in slots of its own, as it does the arguments it passes on and the
// futures it awaits), and hyper's connection (HTTP/1 ~0.75 KB, HTTP/2 ~1.6 KB) is boxed
// apart: inline, it would be copied into each future that wraps it and size every
// connection's task for HTTP/2.
impl Connection {
    /// Serves HTTP on the stream `socket` gives (called where the connection runs: a socket
    /// joins the reactor of the runtime it is made on) until the client leaves, the
    /// connection idles past `server.header_read_timeout`, or the drain timeout cuts it.
    async fn serve<S>(mut self, socket: impl FnOnce() -> std::io::Result<TcpStream>, service: S)
    where
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = hyper::Response<Tracked>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let stream = match socket() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "could not move a connection to its lane");
                return;
            }
        };
        let h2 = tokio::select! {
            h2 = opens_with_h2_preface(&stream) => match h2 {
                Ok(h2) => h2,
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended before its first request");
                    return;
                }
            },
            () = self.registered.state.closing(self.header_timeout) => {
                tracing::debug!("closing a connection idle for server.header_read_timeout");
                return;
            }
            () = set(&mut self.shutdown) => return,
        };
        let io = TokioIo::new(GuardedIo::new(stream, self.write_timeout));
        if h2 {
            let conn = Box::pin(self.builders.h2.serve_connection(io, service));
            self.drive(conn, |conn| conn.graceful_shutdown()).await;
        } else {
            let conn = Box::pin(
                self.builders
                    .h1
                    .serve_connection(io, service)
                    .with_upgrades(),
            );
            self.drive(conn, |conn| conn.graceful_shutdown()).await;
        }
    }

    /// Runs `conn` until it ends, it idles past the header read timeout, or the drain timeout
    /// cuts it; at shutdown, `graceful` tells it to finish its requests and close.
    async fn drive<F>(&mut self, mut conn: Pin<Box<F>>, graceful: fn(Pin<&mut F>))
    where
        F: Future<Output = hyper::Result<()>>,
    {
        let mut draining = false;
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = self.registered.state.closing(self.header_timeout) => {
                    tracing::debug!("closing a connection idle for server.header_read_timeout");
                    return;
                }
                () = set(&mut self.shutdown), if !draining => {
                    draining = true;
                    graceful(conn.as_mut());
                }
                () = set(&mut self.cut) => {
                    // The drain timeout passed: streams were told to end; let them send
                    // their last events, then drop what is left (its requests are logged
                    // and recorded as cancelled).
                    let _ = tokio::time::timeout(CUT_GRACE, &mut conn).await;
                    return;
                }
            }
        }
    }
}

/// Resolves once `flag` is `true` (or its sender is gone).
async fn set(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held in a `select!`.
    let _ = flag.wait_for(|set| *set).await;
}

/// Whether a connection opens with HTTP/2's preface (h2c with prior knowledge); anything
/// else is served as HTTP/1, which answers what is not HTTP with a 400. It peeks, so that
/// hyper reads the bytes into its own buffer (a copy in hand would need a buffer more).
async fn opens_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut seen = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 || seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far. A peek returns at once while bytes wait unread, so
        // give the rest a moment (the idle deadline ends a client that never sends it).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// Answers a connection beyond `server.max_connections` with a 503, if its socket takes the
/// bytes at once, and closes it.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":{"message":"the gateway is at server.max_connections and every connection is busy","type":"service_unavailable","param":null,"code":"service_unavailable"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!("refused a connection: server.max_connections reached");
}

/// The address a request's connection came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub std::net::IpAddr);

/// Failed accepts, logged at most every ten seconds, with growing back-off.
#[derive(Default)]
struct AcceptErrors {
    streak: u32,
    suppressed: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.streak = self.streak.saturating_add(1);
        if self
            .last_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(error = %e, suppressed = self.suppressed, "accept failed");
            self.last_logged = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        // 5 ms, 10 ms, … up to 1 s.
        Duration::from_millis(5u64 << self.streak.min(8)).min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.streak = 0;
    }
}

/// A response body that keeps its connection counted busy until it is sent or dropped.
struct Tracked {
    body: GatewayBody,
    _busy: BusyGuard,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connections_task_is_small_whatever_protocol_it_turns_out_to_speak() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let served = Drain::default();
        let connection = Connection {
            builders: Arc::new(Builders::new(Duration::from_secs(30))),
            shutdown: served.subscribe(),
            _open: served.enter(),
            cut: served.subscribe_cut(),
            registered: Connections::new(1).admit(0).unwrap(),
            header_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        };
        let service = service_fn(|_: hyper::Request<hyper::body::Incoming>| {
            std::future::pending::<Result<hyper::Response<Tracked>, Infallible>>()
        });
        let serving = connection.serve(move || Ok(stream), service);
        // An open stream keeps its connection's task, and every page of it is written when
        // the task is spawned: hyper's connection inline would take it past 3 KB.
        let size = std::mem::size_of_val(&serving);
        assert!(size <= 2048, "a connection's future takes {size} bytes");
    }

    #[tokio::test]
    async fn the_h2_preface_is_recognised_even_in_pieces_and_anything_else_is_http1() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (pieces, h2) in [
            (&[&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]][..], true),
            (
                &[&b"PRI * HTTP/2"[..], &b".0\r\n\r\nSM\r\n\r\n"[..]][..],
                true,
            ),
            (
                &[&b"P"[..], &b"OST /v1/chat/completions HTTP/1.1\r\n"[..]][..],
                false,
            ),
            (&[&b"PRI * HTTP/1.1\r\nhost: x\r\n\r\n"[..]][..], false),
            (&[&b"GET / HTTP/1.1\r\n"[..]][..], false),
            (&[][..], false),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let sniffing = tokio::spawn(async move {
                let h2 = opens_with_h2_preface(&stream).await.unwrap();
                (h2, stream)
            });
            for piece in pieces {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if pieces.is_empty() {
                drop(client);
            }
            let (seen, stream) = sniffing.await.unwrap();
            assert_eq!(seen, h2, "{pieces:?}");
            // Only peeked: the bytes are still there for hyper to read.
            if let Some(first) = pieces.first() {
                let mut buf = [0u8; 64];
                let n = stream.peek(&mut buf).await.unwrap();
                assert!(buf[..n].starts_with(first));
            }
        }
    }
}
