//! The proxy connectors through [`UpstreamClient`], against scripted proxies on loopback
//! sockets: what each failure looks like to the caller, and that none of them hangs.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use llm_bridge_core::{Error, ErrorKind};
use llm_bridge_http::{ClientOptions, Proxy, UpstreamClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy that runs `script` on every connection it accepts, counting them.
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream));
        }
    });
    (addr, count)
}

/// Reads an HTTP head (up to the blank line).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn client(proxy: &str, connect_timeout: Duration) -> UpstreamClient {
    UpstreamClient::new(&ClientOptions {
        proxy: Some(Proxy::parse(proxy).unwrap()),
        connect_timeout,
        ..ClientOptions::default()
    })
    .unwrap()
}

async fn get(client: &UpstreamClient, url: &str) -> Result<(u16, Bytes), Error> {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let response = client.send(request, Duration::from_secs(20)).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body))
}

#[tokio::test]
async fn an_http_upstream_goes_through_a_connect_tunnel() {
    // The "proxy" opens the tunnel and then plays the upstream itself.
    let (addr, count) = scripted(|mut s| async move {
        let head = read_head(&mut s).await;
        assert!(
            head.starts_with("CONNECT upstream.test:8080 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
        s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let request = read_head(&mut s).await;
        assert!(
            request.starts_with("GET /v1/models HTTP/1.1\r\n"),
            "{request}"
        );
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let c = client(&format!("http://u:p@{addr}"), Duration::from_secs(5));
    // The name never resolves here: only the proxy sees it.
    let (status, body) = get(&c, "http://upstream.test:8080/v1/models")
        .await
        .unwrap();
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

fn unavailable(result: Result<(u16, Bytes), Error>) -> String {
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable, "{}", e.message());
    assert_eq!(e.status(), 502);
    e.message().to_owned()
}

#[tokio::test]
async fn connect_refusals_name_the_proxy_and_the_status() {
    for (answer, expected) in [
        (
            "HTTP/1.1 403 Forbidden\r\n\r\n",
            "proxy refused CONNECT (403 Forbidden)",
        ),
        (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            "proxy refused CONNECT (503 Service Unavailable)",
        ),
        (
            "HTTP/1.1 200 Connection",
            "the proxy closed the connection during the handshake",
        ),
    ] {
        let (addr, _) = scripted(move |mut s| async move {
            read_head(&mut s).await;
            s.write_all(answer.as_bytes()).await.unwrap();
        })
        .await;
        let c = client(
            &format!("http://user:s3cret@{addr}"),
            Duration::from_secs(5),
        );
        let message = unavailable(get(&c, "https://upstream.test/v1").await);
        assert_eq!(
            message,
            format!("could not connect through proxy http://{addr}: {expected}")
        );
    }
}

#[tokio::test]
async fn a_silent_proxy_is_bounded_by_the_connect_timeout() {
    let (addr, _) = scripted(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    for scheme in ["http", "socks5h"] {
        let c = client(&format!("{scheme}://{addr}"), Duration::from_millis(300));
        let started = Instant::now();
        let message = unavailable(get(&c, "https://upstream.test/v1").await);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            message,
            format!(
                "could not connect through proxy {scheme}://{addr}: no tunnel within the connect timeout of 0.300 s"
            )
        );
    }
}

#[tokio::test]
async fn socks5_failures_name_the_proxy() {
    for (answer, with_credentials, expected) in [
        (
            &[5u8, 0xff][..],
            false,
            "the SOCKS5 proxy requires authentication, but the proxy URL has no user:password@",
        ),
        (
            &[5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0][..],
            false,
            "the SOCKS5 proxy could not connect to upstream.test:443: not allowed by the proxy's rules (reply 2)",
        ),
        (
            &[5, 2][..],
            true,
            "the proxy closed the connection during the handshake",
        ),
    ] {
        let (addr, _) = scripted(move |mut s| async move {
            let mut greeting = [0u8; 3];
            let _ = s.read_exact(&mut greeting).await;
            let _ = s.write_all(answer).await;
            // Read what else comes, so that closing sends a FIN, not a reset.
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(200), s.read_to_end(&mut rest)).await;
        })
        .await;
        let url = if with_credentials {
            format!("socks5h://alice:s3cret@{addr}")
        } else {
            format!("socks5h://{addr}")
        };
        let c = client(&url, Duration::from_secs(5));
        let message = unavailable(get(&c, "https://upstream.test/v1").await);
        assert_eq!(
            message,
            format!("could not connect through proxy socks5h://{addr}: {expected}")
        );
    }
}

#[tokio::test]
async fn socks5_resolves_locally_and_sends_an_address() {
    let (addr, _) = scripted(|mut s| async move {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(greeting, [5, 1, 0]);
        s.write_all(&[5, 0]).await.unwrap();
        let mut request = [0u8; 4];
        s.read_exact(&mut request).await.unwrap();
        // An address, not a name: the gateway resolved `localhost` itself.
        assert!(request[3] == 1 || request[3] == 4, "{request:?}");
        let mut rest = vec![0u8; if request[3] == 1 { 6 } else { 18 }];
        s.read_exact(&mut rest).await.unwrap();
        s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        let _ = s.read_u8().await;
    })
    .await;
    let c = client(&format!("socks5://{addr}"), Duration::from_secs(5));
    let (status, _) = get(&c, "http://localhost:9/").await.unwrap();
    assert_eq!(status, 204);
}
