//! In-process outbound proxies on `127.0.0.1:0`: an HTTP `CONNECT` proxy (plain or over
//! TLS) and a SOCKS5 proxy. Both count the connections they accept, record what they were
//! asked to connect to, and can require a user name and password.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// What a proxy was asked to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name (SOCKS5 with a domain, or any `CONNECT`): resolved by the proxy.
    Domain(String, u16),
    /// An address the client had already resolved.
    Address(SocketAddr),
}

#[derive(Default)]
struct State {
    credentials: Option<(String, String)>,
    connections: AtomicUsize,
    tunnels: AtomicUsize,
    targets: Mutex<Vec<Target>>,
}

/// What both proxies share: the listener's address, the counters, the serving task.
pub struct TestProxy {
    addr: SocketAddr,
    state: Arc<State>,
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    /// An HTTP `CONNECT` proxy; with `credentials`, others get 407.
    pub async fn http(credentials: Option<(&str, &str)>) -> TestProxy {
        Self::start("http", credentials, None).await
    }

    /// An HTTP `CONNECT` proxy reached over TLS (an `https://` proxy).
    pub async fn https(
        tls: Arc<rustls::ServerConfig>,
        credentials: Option<(&str, &str)>,
    ) -> TestProxy {
        Self::start("https", credentials, Some(TlsAcceptor::from(tls))).await
    }

    /// A SOCKS5 proxy; with `credentials`, it accepts only user/password authentication.
    pub async fn socks5(credentials: Option<(&str, &str)>) -> TestProxy {
        Self::start("socks5", credentials, None).await
    }

    async fn start(
        scheme: &'static str,
        credentials: Option<(&str, &str)>,
        tls: Option<TlsAcceptor>,
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..State::default()
        });
        let task = tokio::spawn(accept(listener, state.clone(), scheme, tls));
        TestProxy {
            addr,
            state,
            scheme,
            task,
        }
    }

    /// The proxy URL without credentials, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL with another scheme (`socks5h`) and optional `user:password@`.
    pub fn url_as(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("{scheme}://{u}:{p}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Tunnels established (after authentication).
    pub fn tunnels(&self) -> usize {
        self.state.tunnels.load(Ordering::SeqCst)
    }

    /// What the proxy was asked to connect to, in order (authenticated requests only).
    pub fn targets(&self) -> Vec<Target> {
        self.state.targets.lock().expect("lock").clone()
    }
}

async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    scheme: &'static str,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = match (scheme, tls) {
                ("socks5", _) => socks5_session(stream, &state).await,
                (_, Some(tls)) => match tls.accept(stream).await {
                    Ok(stream) => connect_session(stream, &state).await,
                    Err(e) => Err(e),
                },
                _ => connect_session(stream, &state).await,
            };
        });
    }
}

async fn connect_session<S>(mut client: S, state: &State) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = client.read_u8().await?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        return client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    if let Some((user, password)) = &state.credentials {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let given = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_owned())
        });
        if given.as_deref() != Some(expected.as_str()) {
            return client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      proxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
    }
    let Some((host, port)) = target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
    else {
        return client
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    state
        .targets
        .lock()
        .expect("lock")
        .push(Target::Domain(host.clone(), port));
    let Some(mut upstream) = dial(&host, port).await else {
        return client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    state.tunnels.fetch_add(1, Ordering::SeqCst);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn socks5_session(mut client: TcpStream, state: &State) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    match &state.credentials {
        Some((user, password)) => {
            if !methods.contains(&2) {
                return client.write_all(&[5, 0xff]).await;
            }
            client.write_all(&[5, 2]).await?;
            let mut header = [0u8; 2];
            client.read_exact(&mut header).await?;
            let mut given_user = vec![0u8; usize::from(header[1])];
            client.read_exact(&mut given_user).await?;
            let mut given_password = vec![0u8; usize::from(client.read_u8().await?)];
            client.read_exact(&mut given_password).await?;
            if given_user != user.as_bytes() || given_password != password.as_bytes() {
                return client.write_all(&[1, 1]).await;
            }
            client.write_all(&[1, 0]).await?;
        }
        None => {
            if !methods.contains(&0) {
                return client.write_all(&[5, 0xff]).await;
            }
            client.write_all(&[5, 0]).await?;
        }
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let target = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            let port = client.read_u16().await?;
            Target::Address(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            let port = client.read_u16().await?;
            Target::Address(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => {
            let mut name = vec![0u8; usize::from(client.read_u8().await?)];
            client.read_exact(&mut name).await?;
            let port = client.read_u16().await?;
            Target::Domain(String::from_utf8_lossy(&name).into_owned(), port)
        }
    };
    state.targets.lock().expect("lock").push(target.clone());
    let upstream = match &target {
        Target::Domain(host, port) => dial(host, *port).await,
        Target::Address(addr) => TcpStream::connect(addr).await.ok(),
    };
    let Some(mut upstream) = upstream else {
        return client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    state.tunnels.fetch_add(1, Ordering::SeqCst);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Connects to the first address of `host` that answers (`localhost` may be `::1` or
/// `127.0.0.1`, whichever the mock listens on).
async fn dial(host: &str, port: u16) -> Option<TcpStream> {
    for addr in tokio::net::lookup_host((host, port)).await.ok()? {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}
