//! The pooled upstream client: HTTP/1.1 and HTTP/2 (by ALPN) over rustls with the ring
//! provider, TCP_NODELAY on every connection, directly or through the provider's proxy.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use llm_bridge_core::{Error, ErrorKind};
use tower_service::Service;

use crate::body::{IdleBody, UpstreamBody, fmt_secs};
use crate::connector::{Connector, ProxyError};
use crate::error::describe;
use crate::h1::{self, Conn, IdleConnections, Unanswered};
use crate::keyring::{DEFAULT_REST, KeyRing};
use crate::proxy::Proxy;
use crate::tls::TlsRoots;
use crate::wire;

/// Settings of an [`UpstreamClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on establishing a TCP connection, and on a whole tunnel through a proxy.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// The proxy every connection goes through (already chosen for this provider, see
    /// [`crate::ProxyRules`]); `None` connects directly.
    pub proxy: Option<Proxy>,
    /// The roots that upstream certificates (and an `https://` proxy's) are checked against.
    pub tls: TlsRoots,
    /// Lanes (serving threads, see [`set_thread_lane`]): each has pools of its own, so that
    /// a request borrows a connection whose task runs on its own thread.
    pub pools: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            // An idle HTTP/1 connection holds hyper's buffers and tasks, ~57 KB each: after 256
            // concurrent streams, 350 idle connections held 20 MB for the 90 s this was
            // (hyper-util's default). Closed after 15 s (checked every 15 s, so gone within
            // 30 s of the load), a client returning after a pause pays one new connection.
            pool_idle_timeout: Duration::from_secs(15),
            proxy: None,
            tls: TlsRoots::webpki(),
            pools: 1,
        }
    }
}

thread_local! {
    /// The lane (serving thread) this thread is; 0 for every other thread.
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as lane `lane`: the [`UpstreamClient`]s it sends through use
/// their pool `lane` (modulo their number of pools). Called once by each serving thread.
pub fn set_thread_lane(lane: usize) {
    LANE.with(|l| l.set(lane));
}

/// Requests in flight on one pool before the lane's next pool takes new ones. An HTTP/2
/// server bounds the streams open on a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`: RFC
/// 9113 asks for no fewer than 100; Google's front ends advertise 100, hyper's 200), and
/// hyper's pool keeps one HTTP/2 connection per host whatever that bound: a request over it
/// waited, however long the streams ahead of it lasted (measured: of 1,000 streams through
/// two lanes to an HTTP/2 upstream, 400 opened and 600 waited). Over HTTP/1 a pool opens a
/// connection per request in flight anyway; the split only keeps a burst's idle connections
/// in the pool that opened them (until the idle timeout).
pub const STREAMS_PER_POOL: usize = 100;

/// A pooled HTTP client for one provider's upstream. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    /// The pools of each lane. hyper runs each connection as a task on the runtime that
    /// opened it; a request from another thread would wake that task there and be woken back.
    lanes: Arc<[Lane]>,
    /// Makes a lane's next pool.
    make: Arc<dyn Fn() -> Pool + Send + Sync>,
    /// `scheme://host:port` of the proxy, for messages.
    proxy: Option<String>,
    /// The `Host` header of the first cleartext upstream this client sent to (a provider has
    /// one), made once: hyper-util formats it for every request otherwise (`format!` and a
    /// header value: 2.2k of the 124k instructions of a request, callgrind).
    host: Arc<OnceLock<(Authority, Option<HeaderValue>)>>,
    /// Without a proxy, what connects to cleartext upstreams, whose connections the lanes
    /// pool themselves ([`crate::h1`]).
    direct: Option<HttpConnector>,
}

type Pool = Client<HttpsConnector<Connector>, Full<Bytes>>;

/// A lane's pools, in the order they were opened; a request takes the first with room.
struct Lane {
    pools: Arc<Mutex<Vec<CountedPool>>>,
    /// Idle cleartext HTTP/1 connections, when the client connects directly.
    h1: Arc<IdleConnections>,
}

/// Why a request got no response: connecting, or sending and waiting for the head.
struct Failed {
    connect: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failed {
    fn connect(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Failed {
            connect: true,
            error: error.into(),
        }
    }

    fn request(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Failed {
            connect: false,
            error: error.into(),
        }
    }
}

/// A pool and its requests in flight (from sending to the end of the response body).
struct CountedPool {
    pool: Pool,
    in_flight: Arc<AtomicUsize>,
}

impl Lane {
    /// Runs `send` on the first pool with fewer than [`STREAMS_PER_POOL`] requests in flight
    /// (opened if none has room), with one more request counted in flight on it. `send` gets
    /// the pool borrowed: hyper's `request` clones what its future needs itself.
    fn take<R>(&self, make: &dyn Fn() -> Pool, send: impl FnOnce(&Pool) -> R) -> (R, InFlight) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let at = match pools
            .iter()
            .position(|p| p.in_flight.load(Ordering::Relaxed) < STREAMS_PER_POOL)
        {
            Some(at) => at,
            None => {
                pools.push(CountedPool {
                    pool: make(),
                    in_flight: Arc::default(),
                });
                pools.len() - 1
            }
        };
        let chosen = &pools[at];
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight {
            count: chosen.in_flight.clone(),
            // The first pool is never closed (nor moved: only later ones are removed), so its
            // requests need no way back to the lane, and their drop takes no lock.
            lane: (at > 0).then(|| self.pools.clone()),
        };
        (send(&chosen.pool), in_flight)
    }

    #[cfg(test)]
    fn pools(&self) -> usize {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One request counted in flight on its pool until dropped: with the response body, or
/// with the error.
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    /// The lane, for a request on a pool that closes when its last request ends.
    lane: Option<Arc<Mutex<Vec<CountedPool>>>>,
}

impl Drop for InFlight {
    /// The last request of a pool opened for a burst closes the pool, and with it the pool's
    /// idle connections. Kept, such pools were the memory left after a burst: each holds a few
    /// small blocks allocated amid the burst's requests, which kept the allocator's pages
    /// around them (of 1,000 streams' pages, those of ten pools' blocks stayed). The first
    /// pool stays, warm for the next request.
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let Some(lane) = &self.lane else { return };
        let mut pools = lane.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted again under the lock: `take` may have chosen this pool since.
        if let Some(i) = pools.iter().skip(1).position(|p| {
            Arc::ptr_eq(&p.in_flight, &self.count) && p.in_flight.load(Ordering::Relaxed) == 0
        }) {
            pools.remove(i + 1);
        }
    }
}

impl UpstreamClient {
    /// A client that connects as `options` say.
    pub fn new(options: &ClientOptions) -> Result<Self, Error> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(options.connect_timeout));
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let connector = Connector::new(
            tcp.clone(),
            options.proxy.as_ref(),
            &options.tls,
            options.connect_timeout,
        )?;

        // The builder sets ALPN (h2, http/1.1) on this config.
        let tls = options.tls.client_config(&[])?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let idle_timeout = options.pool_idle_timeout;
        let make = move || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(https.clone())
        };
        Ok(UpstreamClient {
            lanes: (0..options.pools.max(1))
                .map(|_| Lane {
                    pools: Arc::default(),
                    h1: IdleConnections::new(idle_timeout),
                })
                .collect(),
            make: Arc::new(make),
            proxy: options.proxy.as_ref().map(Proxy::to_string),
            host: Arc::default(),
            direct: options.proxy.is_none().then_some(tcp),
        })
    }

    /// Gives a request to a cleartext (`http://`) upstream its `Host` header, as hyper-util
    /// would, from the value made for the first such request. Such a connection is always
    /// HTTP/1 (no h2c); over `https://` the connection may be HTTP/2, where hyper-util sends
    /// `:authority` and no `Host`, so those requests are left to it.
    fn set_host<B>(&self, request: &mut Request<B>) {
        let uri = request.uri();
        if uri.scheme() != Some(&Scheme::HTTP) || request.headers().contains_key(HOST) {
            return;
        }
        let Some(authority) = uri.authority() else {
            return;
        };
        let (first, value) = self
            .host
            .get_or_init(|| (authority.clone(), host_value(uri)));
        let value = if first == authority {
            value.clone()
        } else {
            host_value(uri)
        };
        if let Some(value) = value {
            request.headers_mut().insert(HOST, value);
        }
    }

    /// Sends a request and waits for the response headers at most `header_timeout`.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        header_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, Error> {
        self.set_host(&mut request);
        let lane = &self.lanes[LANE.with(Cell::get) % self.lanes.len()];
        let sent = match &self.direct {
            Some(tcp) if request.uri().scheme() == Some(&Scheme::HTTP) => {
                tokio::time::timeout(header_timeout, send_h1(tcp, lane, request)).await
            }
            _ => {
                let (response, in_flight) = lane.take(&*self.make, |pool| pool.request(request));
                let response = async move {
                    match response.await {
                        Ok(response) => {
                            Ok(response.map(|body| UpstreamBody::pooled(body, in_flight)))
                        }
                        Err(e) => Err(Failed {
                            connect: e.is_connect(),
                            error: Box::new(e),
                        }),
                    }
                };
                tokio::time::timeout(header_timeout, response).await
            }
        };
        match sent {
            Err(_) => Err(Error::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "upstream did not answer within {} s{}",
                    fmt_secs(header_timeout),
                    self.proxy
                        .as_ref()
                        .map(|p| format!(" (through proxy {p})"))
                        .unwrap_or_default()
                ),
            )),
            Ok(Err(Failed { connect, error })) => {
                if let Some(proxy_error) = find_proxy_error(&*error) {
                    return Err(Error::new(
                        ErrorKind::UpstreamUnavailable,
                        proxy_error.to_string(),
                    ));
                }
                let what = if connect {
                    "could not connect to upstream"
                } else {
                    "upstream request failed"
                };
                // The tunnel was made; say so, since the proxy may be what broke the rest.
                let via = self
                    .proxy
                    .as_ref()
                    .map(|p| format!(" through proxy {p}"))
                    .unwrap_or_default();
                Err(Error::new(
                    ErrorKind::UpstreamUnavailable,
                    format!("{what}{via}: {}", describe(&*error)),
                ))
            }
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Sends a request to a cleartext upstream over one of the lane's idle connections, or a new
/// one. A request that an idle connection could not take whole (it had closed) goes out on
/// the next, as hyper-util's pool does; one that a new connection could not take fails.
async fn send_h1(
    tcp: &HttpConnector,
    lane: &Lane,
    request: Request<Full<Bytes>>,
) -> Result<Response<UpstreamBody>, Failed> {
    let (parts, body) = request.into_parts();
    let Some(authority) = parts.uri.authority().cloned() else {
        return Err(Failed::request("the upstream URL has no host"));
    };
    let body = full_bytes(body);
    let mut head = Vec::with_capacity(256);
    wire::encode_request(&parts, body.len(), &mut head);
    loop {
        let (mut conn, reused) = match lane.h1.take(&authority).await {
            Some(conn) => (conn, true),
            None => {
                let io = tcp
                    .clone()
                    .call(parts.uri.clone())
                    .await
                    .map_err(Failed::connect)?;
                (Conn::new(io.into_inner()), false)
            }
        };
        match conn.exchange(&head, &body, &parts.method).await {
            Ok((response, reusable)) => {
                let body = h1::Body::new(conn, lane.h1.clone(), authority, reusable);
                return Ok(response.map(|()| UpstreamBody::lane(body)));
            }
            Err(Unanswered::Unsent(_)) if reused => {}
            Err(Unanswered::Unsent(e) | Unanswered::Failed(e)) => {
                return Err(Failed::request(e));
            }
        }
    }
}

/// The bytes of a request body (`Full` has them ready: no waiting, no copy).
fn full_bytes(body: Full<Bytes>) -> Bytes {
    use http_body_util::BodyExt;
    match body.collect().now_or_never() {
        Some(Ok(collected)) => collected.to_bytes(),
        Some(Err(never)) => match never {},
        None => unreachable!("a `Full` body is ready at once"),
    }
}

/// `Host` for a cleartext `uri` as hyper-util writes it: the host, and the port as given
/// unless it is 80.
fn host_value(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    match uri.port() {
        Some(port) if port.as_u16() != 80 => {
            HeaderValue::from_maybe_shared(Bytes::from(format!("{host}:{port}"))).ok()
        }
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// A JSON `POST` to `uri`, with `Accept: text/event-stream` when `stream` (else JSON), built
/// in place: `Request::builder` moves the request's parts at every step and copies each
/// `&str` header value (about 1k instructions a request, callgrind).
pub fn json_post(uri: Uri, body: Bytes, stream: bool) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        ACCEPT,
        HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    request
}

/// Adds the `traceparent` of a traced request (W3C Trace Context), so that the upstream's
/// spans join the gateway's trace. Untraced requests are left as they are.
pub fn with_traceparent<B>(
    mut request: Request<B>,
    traceparent: Option<llm_bridge_core::TraceParent>,
) -> Request<B> {
    if let Some(tp) = traceparent {
        if let Ok(v) = http::HeaderValue::try_from(tp.to_header()) {
            request.headers_mut().insert("traceparent", v);
        }
    }
    request
}

/// The most of an upstream's error body that is read: enough for any real error object.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

impl UpstreamClient {
    /// Sends a request made with key `key_index` of `keys`, as provider `provider`. A non-2xx
    /// answer becomes the error `to_error` makes of its status, headers and body (at most
    /// [`MAX_ERROR_BYTES`]). A 429 rests that key; while another key is ready, the error drops
    /// its `Retry-After`, so that a retry goes out at once, with the other key.
    pub async fn send_keyed(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        provider: &str,
        keys: &KeyRing,
        key_index: usize,
        to_error: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> Error,
    ) -> Result<Response<UpstreamBody>, Error> {
        let response = self
            .send(request, timeout)
            .await
            .map_err(|e| e.with_provider(provider))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let body = IdleBody::new(body, timeout)
            .collect(MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        let mut error = to_error(parts.status, &parts.headers, &body);
        if error.kind() == ErrorKind::UpstreamRateLimited {
            keys.rest(key_index, error.retry_after().unwrap_or(DEFAULT_REST));
            if keys.any_ready() {
                error = error.without_retry_after();
            }
        }
        Err(error)
    }
}

/// The proxy's own failure, wherever hyper and the TLS layer put it among the causes.
fn find_proxy_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ProxyError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<ProxyError>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use http_body::Body;

    use super::*;

    #[test]
    fn a_cleartext_request_gets_the_host_hyper_util_would_give_it() {
        let client = UpstreamClient::new(&ClientOptions::default()).expect("a client");
        let host = |uri: &str| {
            let mut request = Request::post(uri).body(()).expect("a request");
            client.set_host(&mut request);
            request.headers().get(HOST).cloned()
        };
        // The first authority's value is kept; another authority gets its own, not that one.
        assert_eq!(
            host("http://127.0.0.1:8080/v1/chat/completions").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host("http://127.0.0.1:8080/v1/embeddings").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(host("http://Example.com:80/v1").unwrap(), "Example.com");
        assert_eq!(
            host("http://user:pw@example.com:9000/v1").unwrap(),
            "example.com:9000"
        );
        // HTTPS may be HTTP/2, where `Host` is not sent: left to hyper-util.
        assert_eq!(host("https://example.com/v1"), None);
        // A `Host` already given is kept.
        let mut request = Request::post("http://127.0.0.1:8080/")
            .header(HOST, "upstream.internal")
            .body(())
            .expect("a request");
        client.set_host(&mut request);
        assert_eq!(request.headers()[HOST], "upstream.internal");
    }

    /// An upstream on loopback that answers every request on a connection with `answer`,
    /// keeping the connection open; it counts connections and keeps each request's head.
    async fn upstream(
        answer: &'static [u8],
    ) -> (
        Uri,
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<String>>>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let (a, h) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (heads, closed_tx) = (h.clone(), closed_tx.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.parse().unwrap());
                        while buf.len() < end + 4 + length {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 4 + length);
                        heads.lock().unwrap().push(head);
                        if s.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                    let _ = closed_tx.send(());
                });
            }
        });
        (uri, accepted, heads, closed)
    }

    async fn post(client: &UpstreamClient, uri: &Uri) -> Response<UpstreamBody> {
        client
            .send(
                json_post(uri.clone(), Bytes::from_static(b"{}"), false),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_cleartext_upstream_connection_serves_one_request_after_another() {
        let (uri, accepted, heads, _) = upstream(OK).await;
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        for _ in 0..3 {
            let body = IdleBody::new(
                post(&client, &uri).await.into_body(),
                Duration::from_secs(5),
            )
            .collect(100)
            .await
            .unwrap();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
        assert_eq!(client.lanes[0].h1.idle(), 1);
        let authority = uri.authority().unwrap().as_str();
        for head in heads.lock().unwrap().iter() {
            assert!(
                head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains(&format!("host: {authority}\r\n")), "{head}");
        }
    }

    #[tokio::test]
    async fn an_open_stream_keeps_no_read_buffer_between_reads() {
        // The first event of a stream that goes on, after an interim response.
        let (uri, _, _, _) = upstream(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              6\r\ndata:1\r\n",
        )
        .await;
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        let response = post(&client, &uri).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let data = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&data[..], b"data:1");
        // Waiting for the next event, the stream holds no bytes: the block read into is
        // the data's, freed with it.
        assert!(!body.holds_a_block());
    }

    /// Reads the first piece of a response's body and drops the rest.
    async fn first_piece(client: &UpstreamClient, uri: &Uri) -> Bytes {
        let mut body = IdleBody::new(post(client, uri).await.into_body(), Duration::from_secs(5));
        std::future::poll_fn(|cx| body.poll_data(cx))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_dropped_midway_takes_its_connection_down() {
        let (uri, accepted, _, mut closed) =
            upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n").await;
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        assert_eq!(&first_piece(&client, &uri).await[..], b"ok");
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the connection is closed");
        assert_eq!(&first_piece(&client, &uri).await[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "not reused");
    }

    #[tokio::test]
    async fn a_body_dropped_when_all_of_it_has_arrived_keeps_its_connection() {
        // A stream read up to its `[DONE]`: the terminating chunk has arrived, unread.
        let (uri, accepted, _, _) =
            upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                .await;
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        for _ in 0..3 {
            assert_eq!(&first_piece(&client, &uri).await[..], b"ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for all three"
        );
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        let (uri, accepted, _, mut closed) = upstream(OK).await;
        let client = UpstreamClient::new(&ClientOptions {
            pool_idle_timeout: Duration::from_millis(200),
            ..ClientOptions::default()
        })
        .unwrap();
        let read = |response: Response<UpstreamBody>| {
            IdleBody::new(response.into_body(), Duration::from_secs(5)).collect(100)
        };
        read(post(&client, &uri).await).await.unwrap();
        read(post(&client, &uri).await).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle connection is closed");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(client.lanes[0].h1.idle(), 0);
        // And the next request opens a new one.
        read(post(&client, &uri).await).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        // Answers, then closes without saying so (no `connection: close`).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/v1/x", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let mut chunk = [0u8; 4096];
                let _ = s.read(&mut chunk).await;
                let _ = s.write_all(OK).await;
            }
        });
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        for _ in 0..3 {
            let response = post(&client, &uri).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body = IdleBody::new(response.into_body(), Duration::from_secs(5))
                .collect(100)
                .await
                .unwrap();
            assert_eq!(&body[..], b"ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_still_writing_its_last_request_is_not_waited_for() {
        // The first connection answers at once and never reads the request's body: hyper is
        // still writing it when the answer has been read. Later connections answer normally.
        let (uri, accepted, _, _) = upstream(OK).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let deaf: Uri = format!("http://{}/v1/x", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let forward = uri.authority().unwrap().clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut first, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = first.read(&mut head).await;
            first.write_all(OK).await.unwrap();
            // Later connections are passed to the normal upstream.
            while let Ok((mut s, _)) = listener.accept().await {
                let mut to = tokio::net::TcpStream::connect(forward.as_str())
                    .await
                    .unwrap();
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut to).await;
                });
            }
            drop(first);
        });
        let client = UpstreamClient::new(&ClientOptions::default()).unwrap();
        let big = Bytes::from(vec![b' '; 32 << 20]);
        let response = client
            .send(json_post(deaf.clone(), big, false), Duration::from_secs(10))
            .await
            .unwrap();
        let body = IdleBody::new(response.into_body(), Duration::from_secs(5))
            .collect(100)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        let started = std::time::Instant::now();
        let response = client
            .send(
                json_post(deaf, Bytes::from_static(b"{}"), false),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "a new connection");
    }

    #[tokio::test]
    async fn a_lane_opens_its_next_pool_only_when_every_pool_is_full() {
        let client = UpstreamClient::new(&ClientOptions::default()).expect("a client");
        let lane = &client.lanes[0];
        let mut held: Vec<InFlight> = (0..STREAMS_PER_POOL)
            .map(|_| lane.take(&*client.make, |_| ()).1)
            .collect();
        assert_eq!(
            lane.pools(),
            1,
            "{STREAMS_PER_POOL} requests fit in one pool"
        );
        held.push(lane.take(&*client.make, |_| ()).1);
        assert_eq!(lane.pools(), 2, "one more opens a second pool");
        // A request ends on the first pool: the next goes there, not to a third.
        held.swap_remove(0);
        held.push(lane.take(&*client.make, |_| ()).1);
        assert_eq!(lane.pools(), 2);
        assert_eq!(
            lane.pools.lock().unwrap_or_else(PoisonError::into_inner)[0]
                .in_flight
                .load(Ordering::Relaxed),
            STREAMS_PER_POOL
        );
        // The second pool's last request ends: the pool closes; the first stays.
        let second = held
            .iter()
            .position(|f| f.count.load(Ordering::Relaxed) == 1);
        held.swap_remove(second.expect("one request on the second pool"));
        assert_eq!(lane.pools(), 1, "an emptied burst pool closes");
        drop(held);
        let pools = lane.pools.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(pools.len(), 1, "the first pool stays");
        assert_eq!(pools[0].in_flight.load(Ordering::Relaxed), 0);
    }
}
