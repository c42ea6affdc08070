//! Accepting connections, serving HTTP/1.1 and HTTP/2 on them, and shutting down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use crate::Gateway;
use crate::Lanes;
use crate::body::GatewayBody;
use crate::conn::{BusyGuard, Connections, GuardedIo, Registered};
use crate::dispatch::handle;

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // Pings find dead peers of connections with streams open; idle ones close by the
    // connection registry's deadline.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let connections = Connections::new(
        config
            .max_connections
            .unwrap_or_else(crate::conn::default_max_connections),
    );
    let graceful = GracefulShutdown::new();
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
                let mut cut = gateway.ws_connections.subscribe_cut();
                let connection = Connection {
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    cut: async move {
                        let _ = cut.wait_for(|cut| *cut).await;
                    },
                    registered,
                    header_timeout,
                    write_timeout,
                };
                match &lanes {
                    None => {
                        tokio::spawn(connection.serve(stream, service));
                    }
                    // The socket leaves this runtime's reactor and joins its lane's there.
                    Some(lanes) => match stream.into_std() {
                        Ok(stream) => lanes.spawn(async move {
                            match TcpStream::from_std(stream) {
                                Ok(stream) => connection.serve(stream, service).await,
                                Err(e) => tracing::debug!(error = %e, "could not move a connection to its lane"),
                            }
                        }),
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
    let all = async {
        graceful.shutdown().await;
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

/// What serving one accepted connection takes, wherever it runs.
struct Connection<C> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    /// Resolves when the drain timeout has passed.
    cut: C,
    registered: Registered,
    header_timeout: Duration,
    write_timeout: Duration,
}

impl<C: Future<Output = ()>> Connection<C> {
    /// Serves HTTP on `stream` until the client leaves, the connection idles past
    /// `server.header_read_timeout`, or the drain timeout cuts it.
    async fn serve<S>(self, stream: TcpStream, service: S)
    where
        S: hyper::service::Service<
                hyper::Request<hyper::body::Incoming>,
                Response = hyper::Response<Tracked>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let Connection {
            builder,
            watcher,
            cut,
            registered,
            header_timeout,
            write_timeout,
        } = self;
        let io = TokioIo::new(GuardedIo::new(stream, write_timeout));
        let conn = watcher.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::pin!(conn);
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            () = registered.state.closing(header_timeout) => {
                tracing::debug!("closing a connection idle for server.header_read_timeout");
            }
            () = cut => {
                // The drain timeout passed: streams were told to end; let them send their
                // last events, then drop what is left (its requests are logged and
                // recorded as cancelled).
                let _ = tokio::time::timeout(CUT_GRACE, &mut conn).await;
            }
        }
        drop(registered);
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
