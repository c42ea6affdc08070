//! The connector under the TLS layer: a direct TCP connection, or a tunnel through the
//! provider's proxy (`CONNECT` over TCP or TLS, SOCKS5). Every socket gets TCP_NODELAY and
//! the connect timeout; a tunnel is bounded by the connect timeout as a whole.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use llm_bridge_core::Error;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower_service::Service;

use crate::body::fmt_secs;
use crate::error::describe;
use crate::handshake::{HandshakeError, SocksTarget, http_connect, socks5};
use crate::proxy::{Proxy, ProxyScheme};
use crate::tls::TlsRoots;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to upstreams, directly or through one proxy.
#[derive(Clone)]
pub(crate) struct Connector {
    tcp: HttpConnector,
    route: Option<Arc<Route>>,
    timeout: Duration,
}

/// The proxy and, for an `https://` proxy, the TLS connector that reaches it.
struct Route {
    proxy: Proxy,
    tls: Option<TlsConnector>,
}

impl Connector {
    pub(crate) fn new(
        tcp: HttpConnector,
        proxy: Option<&Proxy>,
        roots: &TlsRoots,
        timeout: Duration,
    ) -> Result<Connector, Error> {
        let route = match proxy {
            None => None,
            Some(proxy) => {
                let tls = if proxy.scheme() == ProxyScheme::Https {
                    // One protocol inside the tunnel to the proxy: HTTP/1.1, for CONNECT.
                    let config = roots.client_config(&[b"http/1.1"])?;
                    Some(TlsConnector::from(Arc::new(config)))
                } else {
                    None
                };
                Some(Arc::new(Route {
                    proxy: proxy.clone(),
                    tls,
                }))
            }
        };
        Ok(Connector {
            tcp,
            route,
            timeout,
        })
    }
}

impl Service<Uri> for Connector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(route) = self.route.clone() else {
            let connecting = self.tcp.call(dst);
            return Box::pin(async move {
                let io = connecting.await?;
                Ok(UpstreamStream(Inner::Direct(io)))
            });
        };
        let mut tcp = self.tcp.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let failure = match tokio::time::timeout(timeout, tunnel(&mut tcp, &route, &dst)).await
            {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::Timeout(timeout),
            };
            Err(Box::new(ProxyError {
                proxy: route.proxy.to_string(),
                failure,
            }) as BoxError)
        })
    }
}

async fn tunnel(
    tcp: &mut HttpConnector,
    route: &Route,
    dst: &Uri,
) -> Result<UpstreamStream, Failure> {
    let host = dst.host().ok_or(Failure::NoHost)?;
    let port = dst
        .port_u16()
        .unwrap_or(if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        });
    let proxy = &route.proxy;
    let proxy_uri: Uri = format!("http://{}:{}", proxy.host(), proxy.port())
        .parse()
        .map_err(|_| Failure::NoHost)?;
    let io = tcp
        .call(proxy_uri)
        .await
        .map_err(|e| Failure::Unreachable(describe(&e)))?;
    let credentials = proxy.credentials();
    match proxy.scheme() {
        ProxyScheme::Http | ProxyScheme::Https => {
            let target = format!("{host}:{port}");
            // `Connector::new` gave exactly the https:// proxies a TLS connector.
            let Some(tls) = &route.tls else {
                let mut stream = io.into_inner();
                http_connect(&mut stream, &target, credentials).await?;
                return Ok(UpstreamStream(Inner::Tunnel(TokioIo::new(stream))));
            };
            let name = ServerName::try_from(unbracket(proxy.host()).to_owned())
                .map_err(|_| Failure::NoHost)?;
            let mut stream = tls
                .connect(name, io.into_inner())
                .await
                .map_err(|e| Failure::ProxyTls(describe(&e)))?;
            http_connect(&mut stream, &target, credentials).await?;
            Ok(UpstreamStream(Inner::TlsTunnel(TokioIo::new(Box::new(
                stream,
            )))))
        }
        scheme @ (ProxyScheme::Socks5 | ProxyScheme::Socks5h) => {
            let host = unbracket(host);
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => SocksTarget::Ip(ip),
                Err(_) if scheme == ProxyScheme::Socks5h => SocksTarget::Domain(host.to_owned()),
                Err(_) => SocksTarget::Ip(resolve(host, port).await?),
            };
            let mut stream = io.into_inner();
            socks5(&mut stream, &target, port, credentials).await?;
            Ok(UpstreamStream(Inner::Tunnel(TokioIo::new(stream))))
        }
    }
}

/// `socks5://` resolves the upstream's name here, off the async threads like every lookup.
async fn resolve(host: &str, port: u16) -> Result<IpAddr, Failure> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::Resolve(host.to_owned(), e.to_string()))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| Failure::Resolve(host.to_owned(), "no address".to_owned()))
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A connection through a proxy that failed. Its `Display` is the whole message for the
/// client: it names the proxy as `scheme://host:port`, never with credentials.
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: String,
    failure: Failure,
}

#[derive(Debug)]
enum Failure {
    NoHost,
    Unreachable(String),
    ProxyTls(String),
    Resolve(String, String),
    Handshake(HandshakeError),
    Timeout(Duration),
}

impl From<HandshakeError> for Failure {
    fn from(e: HandshakeError) -> Self {
        Failure::Handshake(e)
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not connect through proxy {}: ", self.proxy)?;
        match &self.failure {
            Failure::NoHost => f.write_str("the address has no usable host"),
            Failure::Unreachable(why) => write!(f, "cannot reach the proxy ({why})"),
            Failure::ProxyTls(why) => write!(f, "TLS handshake with the proxy failed ({why})"),
            Failure::Resolve(host, why) => write!(f, "cannot resolve {host} ({why})"),
            Failure::Handshake(e) => e.fmt(f),
            Failure::Timeout(t) => write!(
                f,
                "no tunnel within the connect timeout of {} s",
                fmt_secs(*t)
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// A connection to an upstream: direct, or tunnelled through a proxy.
pub(crate) struct UpstreamStream(Inner);

enum Inner {
    Direct(TokioIo<TcpStream>),
    Tunnel(TokioIo<TcpStream>),
    TlsTunnel(TokioIo<Box<TlsStream<TcpStream>>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match &self.0 {
            Inner::Direct(io) => io.connected(),
            Inner::Tunnel(_) | Inner::TlsTunnel(_) => Connected::new(),
        }
    }
}

impl Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(io) | Inner::Tunnel(io) => Pin::new(io).poll_read(cx, buf),
            Inner::TlsTunnel(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Direct(io) | Inner::Tunnel(io) => Pin::new(io).poll_write(cx, buf),
            Inner::TlsTunnel(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Direct(io) | Inner::Tunnel(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Inner::TlsTunnel(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Direct(io) | Inner::Tunnel(io) => io.is_write_vectored(),
            Inner::TlsTunnel(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(io) | Inner::Tunnel(io) => Pin::new(io).poll_flush(cx),
            Inner::TlsTunnel(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Direct(io) | Inner::Tunnel(io) => Pin::new(io).poll_shutdown(cx),
            Inner::TlsTunnel(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
