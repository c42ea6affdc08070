//! `/v1/ws` with a real WebSocket client (tokio-tungstenite) against the gateway and a mock
//! upstream (README, quick start "WebSocket, in the browser").

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::{
    Behavior, Echo, MockUpstream, StreamEnd, TEST_KEY, TestGateway, config_with, openai_provider,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(gw: &TestGateway, header_key: Option<&str>) -> Ws {
    let mut request = format!("{}/v1/ws", gw.url().replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    if let Some(k) = header_key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON frame (protocol pings and pongs skipped).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("valid frame");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames of one request until its `done`, `completion` or `error` frame.
async fn collect(ws: &mut Ws) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next(ws).await;
        let end = matches!(f["type"].as_str(), Some("done" | "completion" | "error"));
        frames.push(f);
        if end {
            return frames;
        }
    }
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .filter_map(|f| f["data"]["choices"][0]["delta"]["content"].as_str())
        .collect()
}

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n",
    )]))
    .await
}

fn chat(id: Option<&str>, text: &str) -> Value {
    let mut v = json!({"type": "chat", "api_key": TEST_KEY,
        "payload": {"model": "up/m", "messages": [{"role": "user", "content": text}]}});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

#[tokio::test]
async fn the_seed_form_streams_by_default() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(None, "hi there")).await;
    let frames = collect(&mut ws).await;
    assert_eq!(text_of(&frames), "echo: hi there");
    let id = frames[0]["id"].as_str().unwrap().to_owned();
    assert!(
        frames.iter().all(|f| f["id"] == id.as_str()),
        "every frame names the request"
    );
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["usage"]["prompt_tokens"], 11);
    assert!(
        frames.iter().all(|f| f["data"]["choices"] != json!([])),
        "no usage chunk unless asked"
    );
    assert_eq!(mock.last().json()["stream"], true);
}

#[tokio::test]
async fn stream_false_gives_one_completion_frame() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    let mut frame = chat(Some("c1"), "whole");
    frame["payload"]["stream"] = json!(false);
    send(&mut ws, frame).await;
    let f = next(&mut ws).await;
    assert_eq!(f["type"], "completion");
    assert_eq!(f["id"], "c1");
    assert_eq!(f["data"]["choices"][0]["message"]["content"], "echo: whole");
    assert_eq!(f["data"]["usage"]["total_tokens"], 18);
}

#[tokio::test]
async fn two_streams_interleave_and_each_keeps_its_order() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 8,
        delay: Duration::from_millis(15),
        ..Echo::default()
    }));
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(Some("a"), "first request")).await;
    send(&mut ws, chat(Some("b"), "second request")).await;
    let mut frames: Vec<Value> = Vec::new();
    let mut done = 0;
    while done < 2 {
        let f = next(&mut ws).await;
        if f["type"] == "done" {
            done += 1;
        }
        frames.push(f);
    }
    let of = |id: &str| {
        frames
            .iter()
            .filter(|f| f["id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(text_of(&of("a")), "echo: first request");
    assert_eq!(text_of(&of("b")), "echo: second request");
    assert_eq!(of("a").last().unwrap()["type"], "done");
    let order: Vec<&str> = frames.iter().map(|f| f["id"].as_str().unwrap()).collect();
    let first_b = order.iter().position(|i| *i == "b").unwrap();
    let last_a = order.iter().rposition(|i| *i == "a").unwrap();
    assert!(
        first_b < last_a,
        "the streams ran at the same time: {order:?}"
    );
}

#[tokio::test]
async fn cancel_stops_the_upstream_request() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 200,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(Some("long"), "go on")).await;
    assert_eq!(next(&mut ws).await["type"], "chunk");
    send(&mut ws, json!({"type": "cancel", "id": "long"})).await;
    let mut f = next(&mut ws).await;
    while f["type"] == "chunk" {
        f = next(&mut ws).await;
    }
    assert_eq!(f["type"], "error");
    assert_eq!(f["id"], "long");
    assert_eq!(f["error"]["code"], "cancelled");
    mock.wait_cancelled(1).await;
    // The connection goes on.
    send(&mut ws, json!({"type": "ping"})).await;
    let mut f = next(&mut ws).await;
    while f["type"] == "chunk" {
        f = next(&mut ws).await;
    }
    assert_eq!(f["type"], "pong");
    send(&mut ws, json!({"type": "cancel", "id": "nothing"})).await;
    assert_eq!(next(&mut ws).await["type"], "error");
}

#[tokio::test]
async fn a_wrong_key_is_an_error_frame_and_the_connection_stays() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    let mut frame = chat(Some("k"), "x");
    frame["api_key"] = json!("sk-wrong");
    send(&mut ws, frame).await;
    let f = next(&mut ws).await;
    assert_eq!(f["type"], "error");
    assert_eq!(f["id"], "k");
    assert_eq!(f["error"]["status"], 401);
    assert_eq!(f["error"]["code"], "invalid_api_key");
    let mut frame = chat(Some("none"), "x");
    frame.as_object_mut().unwrap().remove("api_key");
    send(&mut ws, frame).await;
    assert_eq!(next(&mut ws).await["error"]["status"], 401);
    send(&mut ws, chat(Some("ok"), "x")).await;
    assert_eq!(collect(&mut ws).await.last().unwrap()["type"], "done");
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn every_bad_frame_gets_an_error_frame_and_the_connection_stays() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "server: {{ max_body_bytes: 4096 }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ws = connect(&gw, None).await;
    let bad: Vec<(Message, u64, &str)> = vec![
        (Message::text("{not json"), 400, "not valid JSON"),
        (Message::text(json!({"type": "dance"}).to_string()), 400, "unknown frame type"),
        (Message::text(json!({"id": 1}).to_string()), 400, "needs a 'type'"),
        (Message::text(json!({"type": "chat", "api_key": TEST_KEY}).to_string()), 400, "payload"),
        (Message::text(json!({"type": "chat", "api_key": TEST_KEY, "payload": {"model": "up/m"}}).to_string()), 400, "messages"),
        (Message::text(json!({"type": "chat", "api_key": TEST_KEY, "payload": {"model": "up/zz", "messages": [{"role": "user"}]}}).to_string()), 404, "not served"),
        (Message::Binary(Bytes::from_static(b"\x00\x01")), 400, "binary frames"),
        (Message::text("x".repeat(10_000)), 413, "larger than the limit"),
    ];
    for (frame, status, needle) in bad {
        ws.send(frame).await.unwrap();
        let f = next(&mut ws).await;
        assert_eq!(f["type"], "error", "{needle}");
        assert_eq!(f["error"]["status"], status, "{needle}: {f}");
        assert!(
            f["error"]["message"].as_str().unwrap().contains(needle),
            "{needle}: {f}"
        );
    }
    send(&mut ws, json!({"type": "ping", "id": 7})).await;
    assert_eq!(next(&mut ws).await, json!({"type": "pong", "id": "7"}));
    send(&mut ws, chat(Some("fine"), "still here")).await;
    assert_eq!(text_of(&collect(&mut ws).await), "echo: still here");
}

#[tokio::test]
async fn the_upgrade_may_carry_the_key() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, Some(TEST_KEY)).await;
    send(&mut ws, json!({"type": "chat", "id": "h", "payload": {"model": "up/m", "messages": [{"role": "user", "content": "header"}]}})).await;
    assert_eq!(text_of(&collect(&mut ws).await), "echo: header");
    // A wrong key on the upgrade is refused before the connection opens.
    let mut request = format!("{}/v1/ws", gw.url().replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer sk-wrong".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    // A plain GET is told to upgrade.
    assert_eq!(gw.client.get("/v1/ws").await.status, 426);
}

#[tokio::test]
async fn too_many_requests_on_one_connection_are_refused() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 20,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let yaml = format!(
        "server: {{ ws_max_concurrent_requests: 2 }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ws = connect(&gw, None).await;
    for id in ["1", "2", "3"] {
        send(&mut ws, chat(Some(id), "x")).await;
    }
    let mut refused = None;
    let mut done = 0;
    while done < 2 {
        let f = next(&mut ws).await;
        if f["type"] == "error" {
            refused = Some(f.clone());
        }
        if f["type"] == "done" {
            done += 1;
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused["id"], "3");
    assert_eq!(refused["error"]["status"], 429);
}

#[tokio::test]
async fn a_client_that_stops_reading_slows_the_upstream_down() {
    let mock = MockUpstream::start().await;
    // 2,000 chunks of 16 KiB: far more than socket buffers hold.
    let piece = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(16 * 1024)}}]})
    );
    // The last one finishes the answer (a stream that ends without would be truncated).
    let mut pieces = vec![Bytes::from(piece); 1999];
    pieces.push(Bytes::from(format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )));
    mock.push(Behavior::Stream {
        status: 200,
        pieces,
        delay: Duration::ZERO,
        end: StreamEnd::Close,
    });
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(Some("big"), "x")).await;
    assert_eq!(next(&mut ws).await["type"], "chunk");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mock.finished(),
        0,
        "the upstream is held back while the client does not read"
    );
    let mut chunks = 1;
    loop {
        let f = next(&mut ws).await;
        if f["type"] == "done" {
            break;
        }
        chunks += 1;
    }
    assert_eq!(chunks, 2000);
    assert_eq!(mock.finished(), 1);
}

#[tokio::test]
async fn a_client_that_never_reads_again_is_closed_and_its_upstream_dropped() {
    let mock = MockUpstream::start().await;
    let piece = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(16 * 1024)}}]})
    );
    mock.push(Behavior::Stream {
        status: 200,
        pieces: vec![Bytes::from(piece); 2000],
        delay: Duration::ZERO,
        end: StreamEnd::Close,
    });
    let yaml = format!(
        "server: {{ ws_ping_interval: 0.2 }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(Some("big"), "x")).await;
    assert_eq!(next(&mut ws).await["type"], "chunk");
    // The client keeps its socket open and never reads again (so it answers no ping): the
    // gateway gives up on it within a few ping intervals and drops the upstream request,
    // though the outbox to the client is full.
    mock.wait_cancelled(1).await;
    assert_eq!(mock.finished(), 0);
    drop(ws);
}

#[tokio::test]
async fn idle_connections_are_pinged_and_dead_ones_closed() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "server: {{ ws_ping_interval: 0.2 }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ws = connect(&gw, None).await;
    // Not reading means not answering pings: after two intervals the server gives up.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut saw_ping = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => saw_ping = true,
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => panic!("closed without a close frame"),
        }
    }
    assert!(saw_ping);
}

#[tokio::test]
async fn shutdown_lets_requests_finish_then_closes_with_1001() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 10,
        delay: Duration::from_millis(30),
        ..Echo::default()
    }));
    let gw = gateway(&mock).await;
    let mut ws = connect(&gw, None).await;
    send(&mut ws, chat(Some("s"), "finish me")).await;
    assert_eq!(next(&mut ws).await["type"], "chunk");
    let shutdown = tokio::spawn(gw.shutdown());
    let mut frames = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str::<Value>(t.as_str()).unwrap())
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1001);
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        frames.last().unwrap()["type"],
        "done",
        "the request finished before the close"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}
