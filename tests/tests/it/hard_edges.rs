//! What a hostile client, a failing upstream and a careless operator setting must not break:
//! truncated streams, upstreams that echo keys, made-up model names in metrics, clients that
//! stop reading, protocol-level errors, budgets under concurrency, and the shapes of small
//! answers. Each test fails on the gateway before these were handled.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use testkit::{
    ADMIN_KEY, Behavior, MockUpstream, StreamEnd, TestGateway, config_with, openai_provider,
    sse_data,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn chunk(content: &str, finish: Option<&str>) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    .to_string()
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// `(request_id, outcome)` of every usage record, after the gateway shut down.
fn outcomes(db: &std::path::Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn
        .prepare("SELECT request_id, outcome FROM usage ORDER BY id")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn one_provider(mock: &MockUpstream, server: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{server}{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    ))
    .await
}

#[tokio::test]
async fn a_stream_ended_without_finish_reason_or_done_is_truncated() {
    let mock = MockUpstream::start().await;
    let (a, b) = (chunk("Hel", None), chunk("lo", None));
    mock.push(Behavior::sse(&[&a, &b], Duration::ZERO, StreamEnd::Close));
    // A finish reason without [DONE] is a complete answer.
    let finished = chunk("", Some("stop"));
    mock.push(Behavior::sse(
        &[&a, &finished],
        Duration::ZERO,
        StreamEnd::Close,
    ));
    let gw = one_provider(&mock, "").await;

    let cut = gw.client.chat(&stream_body("up/m")).await;
    assert_eq!(cut.status, 200);
    let events = sse_data(&cut.body);
    assert_eq!(events.len(), 4, "{events:?}");
    let error: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_truncated", "{events:?}");
    assert_eq!(events[3], "[DONE]");

    let whole = gw.client.chat(&stream_body("up/m")).await;
    let events = sse_data(&whole.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        !events.iter().any(|e| e.contains("\"error\"")),
        "{events:?}"
    );

    // Metrics count a request once its record is made (here after a token estimate).
    let mut text = String::new();
    for _ in 0..100 {
        let metrics = gw.client.with_key(None).get("/metrics").await;
        text = String::from_utf8_lossy(&metrics.body).into_owned();
        if text.contains("llm_bridge_in_flight_requests 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("llm_bridge_streams_truncated_total{provider=\"up\"} 1"),
        "{text}"
    );
    let db = gw.shutdown().await;
    let outcomes: Vec<String> = outcomes(&db).into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes, ["truncated", "ok"]);
}

#[tokio::test]
async fn upstream_messages_never_carry_a_provider_key() {
    let mock = MockUpstream::start().await;
    let gemini = MockUpstream::start().await;
    let yaml = config_with(&[
        openai_provider("up", &mock.url(), "      m: {}\n"),
        testkit::gemini::gemini_provider("gem", &gemini.url(), "      flash: {}\n"),
    ]);
    let gw = TestGateway::start(&yaml).await;
    let key = "sk-upstream-up";
    mock.push(Behavior::json(
        400,
        json!({"error": {"message": format!("bad header 'Authorization: Bearer {key}' and key {key}"), "type": "invalid_request_error"}}),
    ));
    mock.push(Behavior::json(
        403,
        json!({"error": {"message": format!("key {key} may not use m")}}),
    ));
    let mid_stream =
        json!({"error": {"message": format!("stream broke for Bearer {key}")}}).to_string();
    let first = chunk("a", None);
    mock.push(Behavior::sse(
        &[&first, &mid_stream],
        Duration::ZERO,
        StreamEnd::Close,
    ));
    gemini.push(Behavior::json(
        400,
        json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                         "message": format!("API key {} is malformed", testkit::gemini::API_KEY)}}),
    ));
    let body = json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]});
    let rejected = gw.client.chat(&body).await;
    assert_eq!(rejected.status, 400);
    let forbidden = gw.client.chat(&body).await;
    assert_eq!(forbidden.status, 502);
    let streamed = gw.client.chat(&stream_body("up/m")).await;
    let from_gemini = gw
        .client
        .chat(&json!({"model": "gem/flash", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(from_gemini.status, 400);
    for (what, answer) in [
        ("400", &rejected),
        ("403", &forbidden),
        ("stream", &streamed),
        ("gemini", &from_gemini),
    ] {
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains(key), "{what}: {text}");
        assert!(!text.contains(testkit::gemini::API_KEY), "{what}: {text}");
        assert!(text.contains("[redacted]"), "{what}: {text}");
    }
}

#[tokio::test]
async fn made_up_model_names_make_no_metrics_series() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n      \"*\": {}\n",
    )]))
    .await;
    for i in 0..200 {
        let body =
            json!({"model": format!("bogus-{i}"), "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(gw.client.chat(&body).await.status, 404);
    }
    // Through the "*" entry: served, but counted under the provider's wildcard.
    for i in 0..5 {
        let body = json!({"model": format!("up/anything-{i}"), "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(gw.client.chat(&body).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text =
        String::from_utf8_lossy(&gw.client.with_key(None).get("/metrics").await.body).into_owned();
    assert!(!text.contains("bogus"), "client strings became labels");
    assert!(!text.contains("anything-"), "client strings became labels");
    assert!(
        text.contains(r#"llm_bridge_requests_total{provider="",model="unknown",status="404",transport="http"} 200"#),
        "{text}"
    );
    assert!(text.contains(r#"model="up/*""#), "{text}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let mock = MockUpstream::start().await;
    let piece = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(16 * 1024)}}]})
    );
    mock.push(Behavior::Stream {
        status: 200,
        pieces: vec![Bytes::from(piece); 4000],
        delay: Duration::ZERO,
        end: StreamEnd::Close,
    });
    let gw = one_provider(&mock, "server: { write_timeout: 1 }\n").await;
    let mut socket = tokio::net::TcpStream::connect(gw.app.addr).await.unwrap();
    let body = stream_body("up/m").to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        testkit::TEST_KEY,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // Never read: the gateway gives up within the write timeout (plus socket buffers' worth
    // of time), and the upstream request is cancelled.
    tokio::time::timeout(Duration::from_secs(20), mock.wait_cancelled(1))
        .await
        .expect("upstream cancelled after server.write_timeout");
    assert_eq!(mock.finished(), 0);
    drop(socket);
    let db = gw.shutdown().await;
    assert_eq!(outcomes(&db)[0].1, "cancelled");
}

/// Sends raw bytes, returns what the gateway answered before closing.
async fn raw(gw: &TestGateway, bytes: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(gw.app.addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn protocol_errors_answer_with_openai_error_bodies() {
    let mock = MockUpstream::start().await;
    let gw = one_provider(&mock, "").await;
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    for (what, request, status) in [
        ("431", huge.as_bytes(), "431"),
        (
            "malformed",
            &b"GARBAGE \x01\x02 nonsense\r\n\r\n"[..],
            "400",
        ),
    ] {
        let answer = raw(&gw, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {answer}"));
        assert_eq!(json["error"]["type"], "invalid_request_error", "{what}");
    }
}

#[tokio::test]
async fn small_answers_have_the_right_shapes() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "retry: {{ attempts: 2, base_delay: 0.01 }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    ))
    .await;
    // A key that is not an admin key is told so, in so many words.
    let denied = gw.client.get("/admin/keys").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"]["code"], "admin_key_required");
    // No page of another origin may read the operators' endpoints.
    for path in ["/metrics", "/admin/keys"] {
        let answer = gw.client.with_key(Some(ADMIN_KEY)).get(path).await;
        assert_eq!(answer.header("access-control-allow-origin"), None, "{path}");
    }
    assert_eq!(
        gw.client
            .get("/v1/models")
            .await
            .header("access-control-allow-origin"),
        Some("*")
    );
    // Half a surrogate pair, as JavaScript strings may hold: accepted as U+FFFD.
    let request = gw
        .client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"up/m","messages":[{"role":"user","content":"a\ud800b"}]}"#,
        )))
        .unwrap();
    let answer = gw.client.call(request).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(mock.last().json()["messages"][0]["content"], "a\u{fffd}b");
    // A 200 that is not JSON is the upstream's fault: retried, never handed on.
    mock.push(Behavior::raw(200, "text/html", "<html>oops</html>"));
    let before = mock.request_count();
    let answer = gw
        .client
        .chat(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(mock.request_count() - before, 2);
    // Each metrics format with its own content type.
    let classic = gw.client.with_key(None).get("/metrics").await;
    assert!(
        classic
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8_lossy(&classic.body).into_owned();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE llm_bridge_requests_total counter"),
        "{text}"
    );
    let request = gw
        .client
        .with_key(None)
        .request(http::Method::GET, "/metrics")
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let open = gw.client.call(request).await;
    assert!(
        open.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8_lossy(&open.body).into_owned();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE llm_bridge_requests counter"));
}

#[tokio::test]
async fn concurrent_streams_cannot_overspend_a_token_budget() {
    let mock = MockUpstream::start().await;
    // 510 chunks of one token each, then the usage: 10 + 510 tokens per answer.
    let mut pieces: Vec<Bytes> = (0..510)
        .map(|_| Bytes::from(format!("data: {}\n\n", chunk("tok ", None))))
        .collect();
    pieces.push(Bytes::from(format!(
        "data: {}\n\n",
        chunk("", Some("stop"))
    )));
    pieces.push(Bytes::from(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 510, "total_tokens": 520}})
    )));
    mock.set_default(Behavior::Stream {
        status: 200,
        pieces,
        delay: Duration::from_millis(1),
        end: StreamEnd::Close,
    });
    let gw = one_provider(&mock, "").await;
    let created = gw
        .client
        .with_key(Some(ADMIN_KEY))
        .post(
            "/admin/keys",
            &json!({"name": "thrifty", "budget_tokens": {"total": 100}}),
        )
        .await;
    assert_eq!(created.status, 201);
    let key = created.json()["key"].as_str().unwrap().to_owned();
    let client = gw.client.with_key(Some(&key));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.chat(&stream_body("up/m")).await
        }));
    }
    let (mut refused, mut cut) = (0, 0);
    for t in tasks {
        let answer = t.await.unwrap();
        if answer.status == 429 {
            refused += 1;
            assert_eq!(answer.error_code(), "insufficient_quota");
            continue;
        }
        assert_eq!(answer.status, 200);
        let events = sse_data(&answer.body);
        if events.iter().any(|e| e.contains("insufficient_quota")) {
            cut += 1;
        }
        assert_eq!(events.last().unwrap(), "[DONE]");
    }
    let admitted = 50 - refused;
    assert!(cut >= 1, "a stream that outgrew the budget was stopped");
    let db = gw.shutdown().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let spent: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE key_name = 'thrifty'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // The documented bound: a stream stops at its reservation, give or take a chunk and
    // the estimate of its prompt (at most ~10 tokens here), per admitted request.
    let bound = 100 + 12 * admitted as i64;
    assert!(
        spent <= bound,
        "spent {spent} tokens of a 100-token budget with {admitted} admitted (bound {bound})"
    );
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_read_timeout_whatever_their_protocol() {
    let mock = MockUpstream::start().await;
    let gw = one_provider(&mock, "server: { header_read_timeout: 1 }\n").await;
    for (what, opening) in [
        ("nothing at all", &b""[..]),
        ("an h2c preface", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
        (
            "half a request head",
            &b"GET /healthz HTTP/1.1\r\nhost:"[..],
        ),
    ] {
        let started = std::time::Instant::now();
        let mut socket = tokio::net::TcpStream::connect(gw.app.addr).await.unwrap();
        socket.write_all(opening).await.unwrap();
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "{what}: still open after 10 s");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{what}: closed too early"
        );
    }
    // A keep-alive connection is closed the same way after its last request.
    let mut socket = tokio::net::TcpStream::connect(gw.app.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink))
        .await
        .expect("closed after the idle timeout")
        .unwrap();
    assert!(String::from_utf8_lossy(&sink).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn one_model_is_answered_as_openai_does() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n      other: {}\n",
    )]))
    .await;
    for path in ["/v1/models/up/m", "/v1/models/up%2Fm"] {
        let answer = gw.client.get(path).await;
        assert_eq!(answer.status, 200, "{path}");
        let model = answer.json();
        assert_eq!(model["id"], "up/m");
        assert_eq!(model["object"], "model");
        assert_eq!(model["owned_by"], "up");
        assert!(model["created"].is_u64());
    }
    let missing = gw.client.get("/v1/models/up/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
    // A key that may not use a model does not learn that it exists.
    let created = gw
        .client
        .with_key(Some(ADMIN_KEY))
        .post(
            "/admin/keys",
            &json!({"name": "narrow", "models": ["up/m"]}),
        )
        .await;
    let key = created.json()["key"].as_str().unwrap().to_owned();
    let narrow = gw.client.with_key(Some(&key));
    assert_eq!(narrow.get("/v1/models/up/m").await.status, 200);
    assert_eq!(narrow.get("/v1/models/up/other").await.status, 404);
    assert_eq!(
        gw.client.with_key(None).get("/v1/models/up/m").await.status,
        401
    );
}
