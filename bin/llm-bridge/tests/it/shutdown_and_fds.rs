//! The binary under pressure: silent connections beyond its file-descriptor limit, a stream
//! still running when the drain timeout ends, and SIGTERM right after a burst of requests.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::process::Spawned;
use testkit::{Client, MockUpstream};

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

/// Writes `configs/config.yaml`: one OpenAI provider `m` (model `x`) at `mock`, and `server`.
pub(crate) fn write_config(dir: &std::path::Path, mock: &MockUpstream, server: &str) {
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::write(
        dir.join("configs/config.yaml"),
        format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: {}\n    api_key: k\n    models:\n      x: {{}}\nserver: {server}\n",
            mock.url()
        ),
    )
    .unwrap();
}

fn usage_json(dir: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(BINARY)
        .args(["usage", "--since", "1h", "--by", "model", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /healthz` over a fresh connection, within `timeout`.
fn healthz(addr: std::net::SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test]
async fn silent_connections_beyond_the_fd_limit_do_not_starve_healthz() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &mock, "{ header_read_timeout: 60 }");
    // `ulimit -n 256`, then the gateway: twice as many silent connections as it has fds.
    let gw = Spawned::start(
        "/bin/sh".as_ref(),
        dir.path(),
        &[
            "-c",
            "ulimit -n 256 && exec \"$0\" \"$@\"",
            BINARY,
            "--port",
            "0",
        ],
        &[("ACCESS_API_KEYS", "sk-fd")],
    );
    let addr = gw.addr;
    let held = tokio::task::spawn_blocking(move || {
        (0..512)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(held.len() >= 400, "only {} connections made", held.len());
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || healthz(addr, Duration::from_secs(5)))
        .await
        .unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("/healthz: {e}\n{}", gw.output()));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A real request is served too.
    let chat = Client::new(&gw.url(), Some("sk-fd"))
        .chat(&json!({"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(chat.status, 200);
    drop(held);
    let output = gw.output();
    assert!(
        output.matches("accept failed").count() <= 3,
        "accept errors are not logged in a hot loop:\n{output}"
    );
}

#[tokio::test]
async fn a_stream_cut_by_the_drain_timeout_ends_with_an_error_event_and_is_recorded() {
    let mock = MockUpstream::start().await;
    mock.set_default(testkit::Behavior::Echo(testkit::Echo {
        chunks: 200,
        delay: Duration::from_millis(50),
        ..testkit::Echo::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &mock, "{ drain_timeout: 1 }");
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("ACCESS_API_KEYS", "sk-drain")],
    );
    let client = Client::new(&gw.url(), Some("sk-drain"));
    let long = "word ".repeat(400);
    let request = client
        .request(http::Method::POST, "/v1/chat/completions")
        .header("x-request-id", "req-cut-by-drain")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "m/x", "stream": true, "messages": [{"role": "user", "content": long}]})
                .to_string(),
        )))
        .unwrap();
    let response = client.send(request).await;
    assert_eq!(response.status(), 200);
    let body = tokio::spawn(http_body_util::BodyExt::collect(response.into_body()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, output) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    let body = body
        .await
        .unwrap()
        .expect("the body ends cleanly")
        .to_bytes();
    let events = testkit::sse_data(&body);
    assert!(events.len() > 3, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events[events.len() - 2].contains("shutting down"),
        "{events:?}"
    );
    let access = output
        .lines()
        .find(|l| l.contains("req-cut-by-drain") && l.contains("request finished"))
        .unwrap_or_else(|| panic!("no access event:\n{output}"));
    assert!(access.contains("cancelled"), "{access}");
    let report = usage_json(dir.path());
    assert_eq!(report["total"]["requests"], 1, "{report}");
}

#[tokio::test]
async fn sigterm_right_after_a_burst_loses_no_record() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &mock, "{ drain_timeout: 10 }");
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("ACCESS_API_KEYS", "sk-burst")],
    );
    let client = Client::new(&gw.url(), Some("sk-burst"));
    // 200 requests at 50 per second, half of them streamed.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 20)).await;
            let body = json!({"model": "m/x", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "burst"}]});
            client.chat(&body).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (status, output) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    let report = usage_json(dir.path());
    assert_eq!(report["total"]["requests"], 200, "{report}");
}
