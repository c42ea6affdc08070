//! Lanes: each serving thread (`server.workers`) serves the connections handed to it with
//! its own pool of connections to providers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use testkit::MockUpstream;
use testkit::process::Spawned;

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

/// One keep-alive `POST /v1/chat/completions` on `stream`; the status and the body.
fn complete(stream: &mut BufReader<TcpStream>) -> (u16, serde_json::Value) {
    let body = json!({"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    write!(
        stream.get_mut(),
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-lanes\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut answer = vec![0; length];
    stream.read_exact(&mut answer).unwrap();
    (status, serde_json::from_slice(&answer).unwrap())
}

/// Two client connections, open together, go to the two lanes; requests taking turns on
/// them use two connections to the provider, each kept by its lane. One pool for the whole
/// process would have lent the one idle connection to both.
#[tokio::test]
async fn each_lane_keeps_its_own_connections_to_the_provider() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    crate::shutdown_and_fds::write_config(dir.path(), &mock, "{ workers: 2 }");
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("ACCESS_API_KEYS", "sk-lanes")],
    );
    let addr = gw.url().trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut a = BufReader::new(TcpStream::connect(&addr).unwrap());
        let mut b = BufReader::new(TcpStream::connect(&addr).unwrap());
        for _ in 0..3 {
            for client in [&mut a, &mut b] {
                let (status, answer) = complete(client);
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["object"], "chat.completion", "{answer}");
                // Time for the provider connection to go back to its pool.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(mock.request_count(), 6);
    assert_eq!(
        mock.connections(),
        2,
        "one connection to the provider per lane, reused by each lane's requests"
    );
    let (status, output) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
}
