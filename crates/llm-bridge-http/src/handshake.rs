//! The two proxy handshakes, over any byte stream: HTTP `CONNECT` (RFC 9110 §9.3.6) and
//! SOCKS5 (RFC 1928) with user/password authentication (RFC 1929).
//!
//! Written here rather than taken from hyper-util's `Tunnel` / `SocksV5` because those keep
//! the refusal's status code and the failing step to themselves (their error types are not
//! exported), resolve names for `socks5://` with blocking `to_socket_addrs` on the async
//! threads, and keep the SOCKS password in a plain `String` with a derived `Debug`.

use std::fmt;
use std::io;
use std::net::IpAddr;

use base64::Engine;
use llm_bridge_core::secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::Credentials;

/// Why a proxy gave no tunnel. `Display` is the cause only; the connector names the proxy.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The proxy closed the connection before the handshake finished.
    Closed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The proxy answered `CONNECT` with something else than 2xx.
    Refused { status: u16, reason: String },
    /// The proxy does not speak the protocol (or breaks it).
    Protocol(&'static str),
    /// The SOCKS5 proxy wants credentials and the URL has none.
    SocksWantsCredentials,
    /// The SOCKS5 proxy accepts none of the methods offered.
    SocksNoMethod,
    /// The SOCKS5 proxy rejected the user name or password.
    SocksAuthFailed,
    /// The SOCKS5 proxy could not connect to the upstream.
    SocksReply { code: u8, target: String },
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HandshakeError::Closed
        } else {
            HandshakeError::Io(e)
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Closed => {
                f.write_str("the proxy closed the connection during the handshake")
            }
            HandshakeError::Io(e) => write!(f, "the connection to the proxy failed: {e}"),
            HandshakeError::Refused { status, reason } => {
                write!(f, "proxy refused CONNECT ({status} {reason})")
            }
            HandshakeError::Protocol(what) => f.write_str(what),
            HandshakeError::SocksWantsCredentials => f.write_str(
                "the SOCKS5 proxy requires authentication, but the proxy URL has no user:password@",
            ),
            HandshakeError::SocksNoMethod => {
                f.write_str("the SOCKS5 proxy accepts neither no authentication nor user/password")
            }
            HandshakeError::SocksAuthFailed => {
                f.write_str("the SOCKS5 proxy rejected the user name or password")
            }
            HandshakeError::SocksReply { code, target } => write!(
                f,
                "the SOCKS5 proxy could not connect to {target}: {} (reply {code})",
                socks_reply_text(*code)
            ),
        }
    }
}

/// The longest answer head accepted from a proxy: real ones send a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Asks an HTTP proxy for a tunnel to `target` (`host:port`, IPv6 in brackets).
pub(crate) async fn http_connect<S>(
    stream: &mut S,
    target: &str,
    credentials: Option<&Credentials>,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = credentials {
        let pair = format!("{}:{}", c.user.expose_secret(), c.password.expose_secret());
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64::engine::general_purpose::STANDARD.encode(pair));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(HandshakeError::Protocol(
                "the proxy's answer to CONNECT is too long",
            ));
        }
    };
    let status = status_code(&head).ok_or(HandshakeError::Protocol(
        "the proxy did not answer CONNECT with an HTTP status line",
    ))?;
    if !(200..300).contains(&status) {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unknown status");
        return Err(HandshakeError::Refused {
            status,
            reason: reason.to_owned(),
        });
    }
    // TLS and HTTP clients speak first: bytes already here would be lost, so they mean a
    // broken proxy rather than data to keep.
    if end != head.len() {
        return Err(HandshakeError::Protocol(
            "the proxy sent data after its CONNECT answer",
        ));
    }
    Ok(())
}

/// `HTTP/1.1 407 Proxy Authentication Required` → 407.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// What a SOCKS5 proxy is asked to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocksTarget {
    /// A host name the proxy resolves (`socks5h://`).
    Domain(String),
    /// An address (`socks5://`, or a host that is an IP literal).
    Ip(IpAddr),
}

impl fmt::Display for SocksTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksTarget::Domain(d) => f.write_str(d),
            SocksTarget::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            SocksTarget::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

const SOCKS5: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

/// Asks a SOCKS5 proxy for a TCP connection to `target:port`.
pub(crate) async fn socks5<S>(
    stream: &mut S,
    target: &SocksTarget,
    port: u16,
    credentials: Option<&Credentials>,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Offer no authentication too: a proxy that needs none then simply ignores the
    // credentials, as curl lets it.
    let greeting: &[u8] = if credentials.is_some() {
        &[SOCKS5, 2, NO_AUTH, USER_PASS]
    } else {
        &[SOCKS5, 1, NO_AUTH]
    };
    stream.write_all(greeting).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice[0] != SOCKS5 {
        return Err(HandshakeError::Protocol("the proxy does not speak SOCKS5"));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some(c)) => authenticate(stream, c).await?,
        (NO_ACCEPTABLE, None) => return Err(HandshakeError::SocksWantsCredentials),
        (NO_ACCEPTABLE, Some(_)) => return Err(HandshakeError::SocksNoMethod),
        _ => {
            return Err(HandshakeError::Protocol(
                "the SOCKS5 proxy chose an authentication method that was not offered",
            ));
        }
    }

    let mut request = vec![SOCKS5, 1 /* CONNECT */, 0];
    match target {
        SocksTarget::Ip(IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        SocksTarget::Ip(IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        SocksTarget::Domain(name) => {
            let len = u8::try_from(name.len()).map_err(|_| {
                HandshakeError::Protocol("the host name is too long for SOCKS5 (255 bytes)")
            })?;
            request.push(3);
            request.push(len);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;

    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != SOCKS5 {
        return Err(HandshakeError::Protocol("the proxy does not speak SOCKS5"));
    }
    if reply[1] != 0 {
        return Err(HandshakeError::SocksReply {
            code: reply[1],
            target: format!("{target}:{port}"),
        });
    }
    // The address the proxy bound for us is of no use, but it must be read off the stream.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(stream.read_u8().await?) + 2,
        _ => {
            return Err(HandshakeError::Protocol(
                "the SOCKS5 proxy answered with an unknown address type",
            ));
        }
    };
    let mut bound = [0u8; 255 + 2];
    stream.read_exact(&mut bound[..rest]).await?;
    Ok(())
}

async fn authenticate<S>(stream: &mut S, credentials: &Credentials) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let user = credentials.user.expose_secret().as_bytes();
    let password = credentials.password.expose_secret().as_bytes();
    // Lengths were checked when the URL was parsed.
    let (Ok(user_len), Ok(password_len)) = (u8::try_from(user.len()), u8::try_from(password.len()))
    else {
        return Err(HandshakeError::Protocol(
            "SOCKS5 credentials are limited to 255 bytes each",
        ));
    };
    let mut message = Vec::with_capacity(3 + user.len() + password.len());
    message.extend_from_slice(&[1, user_len]);
    message.extend_from_slice(user);
    message.push(password_len);
    message.extend_from_slice(password);
    stream.write_all(&message).await?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await?;
    if status[1] != 0 {
        return Err(HandshakeError::SocksAuthFailed);
    }
    Ok(())
}

fn socks_reply_text(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_bridge_core::secrecy::SecretString;
    use std::net::Ipv4Addr;
    use tokio::io::duplex;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: SecretString::from(user.to_owned()),
            password: SecretString::from(password.to_owned()),
        }
    }

    /// Runs `client` against a scripted proxy that has already sent `answer` and then
    /// closed its side; returns the client's result and what the proxy received.
    async fn scripted<F, Fut>(
        answer: &'static [u8],
        client: F,
    ) -> (Result<(), HandshakeError>, Vec<u8>)
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut,
        Fut: std::future::Future<Output = Result<(), HandshakeError>>,
    {
        let (a, mut b) = duplex(4096);
        b.write_all(answer).await.unwrap();
        b.shutdown().await.unwrap();
        let result = client(a).await;
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        (result, got)
    }

    #[tokio::test]
    async fn connect_sends_credentials_and_accepts_2xx() {
        let expected = "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n";
        let (result, got) = scripted(
            b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n",
            |mut s| async move {
                http_connect(
                    &mut s,
                    "api.example.com:443",
                    Some(&creds("alice", "s3cret")),
                )
                .await
            },
        )
        .await;
        result.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[tokio::test]
    async fn connect_refusals_name_the_status() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 407 Nope\r\nProxy-Authenticate: Basic\r\n\r\n"[..],
                "proxy refused CONNECT (407 Proxy Authentication Required)",
            ),
            (
                &b"HTTP/1.0 403 Forbidden\r\n\r\n"[..],
                "proxy refused CONNECT (403 Forbidden)",
            ),
            (
                &b"HTTP/1.1 502 Bad Gateway\r\n\r\n"[..],
                "proxy refused CONNECT (502 Bad Gateway)",
            ),
            (
                &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
                "did not answer CONNECT with an HTTP status line",
            ),
            (
                &b"HTTP/1.1 200 OK\r\n\r\nearly"[..],
                "sent data after its CONNECT answer",
            ),
            (&b"HTTP/1.1 200 OK\r\n"[..], "closed the connection"),
        ] {
            let (result, _) = scripted(answer, |mut s| async move {
                http_connect(&mut s, "h:443", None).await
            })
            .await;
            let e = result.unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[tokio::test]
    async fn socks5_with_credentials_and_a_domain() {
        let (result, got) = scripted(
            &[5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90],
            |mut s| async move {
                socks5(
                    &mut s,
                    &SocksTarget::Domain("localhost".into()),
                    443,
                    Some(&creds("alice", "s3cret")),
                )
                .await
            },
        )
        .await;
        result.unwrap();
        let mut expected = vec![5, 2, 0, 2, 1, 5];
        expected.extend_from_slice(b"alice");
        expected.push(6);
        expected.extend_from_slice(b"s3cret");
        expected.extend_from_slice(&[5, 1, 0, 3, 9]);
        expected.extend_from_slice(b"localhost");
        expected.extend_from_slice(&[1, 187]);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn socks5_with_an_address_and_no_credentials() {
        let (result, got) = scripted(
            &[5, 0, 5, 0, 0, 3, 4, b'h', b'o', b's', b't', 0, 80],
            |mut s| async move {
                socks5(
                    &mut s,
                    &SocksTarget::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    8080,
                    None,
                )
                .await
            },
        )
        .await;
        result.unwrap();
        assert_eq!(got, [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);
    }

    #[tokio::test]
    async fn socks5_failures() {
        let target = SocksTarget::Domain("upstream".into());
        for (answer, with_creds, expected) in [
            (
                &[5u8, 0xff][..],
                false,
                "requires authentication, but the proxy URL has no user:password@",
            ),
            (&[5, 0xff][..], true, "accepts neither"),
            (
                &[5, 2, 1, 1][..],
                true,
                "rejected the user name or password",
            ),
            (
                &[5, 0, 5, 5, 0, 1][..],
                false,
                "could not connect to upstream:443: connection refused (reply 5)",
            ),
            (&[4, 0][..], false, "does not speak SOCKS5"),
            (&[5][..], false, "closed the connection"),
        ] {
            let target = target.clone();
            let (result, _) = scripted(answer, move |mut s| async move {
                let c = creds("u", "p");
                socks5(&mut s, &target, 443, with_creds.then_some(&c)).await
            })
            .await;
            let e = result.unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }
}
