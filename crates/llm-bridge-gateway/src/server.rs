//! Accepting connections, serving HTTP/1.1 and HTTP/2 on them, and shutting down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::Gateway;
use crate::service::handle;

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests and streams finish for at most `drain_timeout`, and returns.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let gw = gateway.clone();
                let service = service_fn(move |req| handle(gw.clone(), req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
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
    // A little beyond the drain timeout: WebSocket connections cut their requests at the
    // timeout and then need a moment to send their close frames.
    match tokio::time::timeout(drain + Duration::from_secs(1), all).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("drain timeout reached: closing the remaining connections"),
    }
}
