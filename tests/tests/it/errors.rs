//! Every row of the error table (README, "What it does": Errors) that the gateway produces on
//! its own or from an upstream: real statuses with OpenAI's error body before a stream starts,
//! one error event and a clean end after it started.
//!
//! The 403 (model not allowed) and the gateway's own 429 rows need managed keys and are
//! tested with them (tests/keys.rs).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use serde_json::{Value, json};
use testkit::{
    Behavior, Client, MockUpstream, StreamEnd, TestGateway, config_with, fixture, openai_provider,
};

const ANY: &str = "      \"*\": {}\n";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn stream(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// Checks the OpenAI error shape: all four keys present.
fn assert_error_shape(body: &Value) {
    let e = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error.{key} missing in {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[openai_provider("mock", &mock.url(), ANY)])).await
}

#[tokio::test]
async fn malformed_requests_are_400_invalid_request_error() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let cases: Vec<(Bytes, &str)> = vec![
        (Bytes::from_static(b"{not json"), "not valid JSON"),
        (Bytes::from_static(b"[1,2]"), "must be a JSON object"),
        (Bytes::from(json!({"messages": []}).to_string()), "'model'"),
        (
            Bytes::from(json!({"model": "mock/m"}).to_string()),
            "'messages'",
        ),
        (
            Bytes::from(json!({"model": 42, "messages": []}).to_string()),
            "'model' must be a string",
        ),
        (
            Bytes::from(json!({"model": "mock/m", "messages": "hi"}).to_string()),
            "'messages' must be an array",
        ),
        (
            Bytes::from(
                json!({"model": "mock/m", "messages": [{"role": "user"}], "stream": "yes"})
                    .to_string(),
            ),
            "'stream' must be a boolean",
        ),
    ];
    for (body, needle) in cases {
        let request = gw
            .client
            .request(Method::POST, "/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let answer = gw.client.call(request).await;
        assert_eq!(answer.status, 400, "{body:?}");
        let json = answer.json();
        assert_error_shape(&json);
        assert_eq!(json["error"]["type"], "invalid_request_error");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    assert_eq!(
        mock.request_count(),
        0,
        "nothing malformed reaches the upstream"
    );
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    for client in [
        gw.client.with_key(None),
        gw.client.with_key(Some("sk-wrong")),
    ] {
        for answer in [
            client.chat(&chat("mock/m")).await,
            client.get("/v1/models").await,
        ] {
            assert_eq!(answer.status, 401);
            let json = answer.json();
            assert_error_shape(&json);
            assert_eq!(json["error"]["type"], "authentication_error");
            assert_eq!(json["error"]["code"], "invalid_api_key");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        }
    }
    // x-api-key works as well as Authorization.
    let request = gw
        .client
        .with_key(None)
        .request(Method::GET, "/v1/models")
        .header("x-api-key", testkit::TEST_KEY)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(gw.client.call(request).await.status, 200);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn unknown_providers_and_models_are_404_model_not_found() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "mock",
        &mock.url(),
        "      gpt-4o: {}\n",
    )]))
    .await;
    for model in ["nobody/gpt-4o", "mock/gpt-5", "gpt-5"] {
        let answer = gw.client.chat(&chat(model)).await;
        assert_eq!(answer.status, 404, "{model}");
        let json = answer.json();
        assert_error_shape(&json);
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "model_not_found");
        assert_eq!(json["error"]["param"], "model");
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_declared_or_not() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "server: {{ max_body_bytes: 1000 }}\n{}",
        config_with(&[openai_provider("mock", &mock.url(), ANY)])
    );
    let gw = TestGateway::start(&yaml).await;
    let big =
        json!({"model": "mock/m", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let answer = gw.client.chat(&big).await;
    assert_eq!(answer.status, 413);
    assert_error_shape(&answer.json());
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");

    // Without a content-length (chunked): refused once the limit is crossed.
    let chunks = futures_util::stream::iter((0..50).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b' '; 100])))
    }));
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/chat/completions", gw.url()))
        .header("authorization", format!("Bearer {}", testkit::TEST_KEY))
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn upstream_4xx_keeps_status_message_type_code_and_param() {
    let mock = MockUpstream::start().await;
    let body: Value =
        serde_json::from_str(&fixture("openai-error-400-unsupported-value.json")).unwrap();
    mock.push(Behavior::json(400, body.clone()));
    mock.push(Behavior::json(422, json!({"error": {"message": "bad schema", "type": "invalid_request_error", "code": null, "param": "tools"}})));
    let gw = gateway(&mock).await;
    let answer = gw.client.chat(&chat("mock/o1")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json(),
        body,
        "the upstream's error reaches the client as it was"
    );
    let answer = gw.client.chat(&chat("mock/o1")).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.json()["error"]["param"], "tools");
    assert_eq!(answer.json()["error"]["message"], "bad schema");
}

#[tokio::test]
async fn upstream_429_is_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json_with_headers(
        429,
        json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}),
        &[("retry-after", "7")],
    ));
    let gw = gateway(&mock).await;
    let answer = gw.client.chat(&chat("mock/m")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    let json = answer.json();
    assert_error_shape(&json);
    assert_eq!(json["error"]["code"], "rate_limit_exceeded");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit reached")
    );
}

#[tokio::test]
async fn upstream_failures_are_502_upstream_error() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        503,
        json!({"error": {"message": "The engine is currently overloaded"}}),
    ));
    mock.push(Behavior::json(
        500,
        json!({"error": {"message": "The server had an error"}}),
    ));
    mock.push(Behavior::json(401, json!({"error": {"message": "Incorrect API key provided: sk-ups***ock", "code": "invalid_api_key"}})));
    mock.push(Behavior::raw(200, "application/json", "{\"id\": \"broken"));
    let gw = gateway(&mock).await;
    for expect in [
        "overloaded",
        "server had an error",
        "rejected the gateway's API key",
        "invalid JSON",
    ] {
        let answer = gw.client.chat(&chat("mock/m")).await;
        assert_eq!(answer.status, 502, "{expect}");
        let json = answer.json();
        assert_error_shape(&json);
        assert_eq!(json["error"]["type"], "upstream_error");
        assert_eq!(json["error"]["code"], "upstream_error");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expect),
            "{message:?} should mention {expect:?}"
        );
        assert!(!message.contains("sk-"), "no key fragments: {message}");
    }
}

#[tokio::test]
async fn unreachable_upstreams_and_missing_provider_keys_are_502() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let yaml = format!(
        "{}\n  nokey:\n    adapter: openai\n    base_url: http://127.0.0.1:9\n    models:\n      m: {{}}\n",
        config_with(&[openai_provider("dead", &dead, ANY)])
    );
    let gw = TestGateway::start(&yaml).await;
    let answer = gw.client.chat(&chat("dead/m")).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect")
    );
    let answer = gw.client.chat(&chat("nokey/m")).await;
    assert_eq!(answer.status, 502);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("no API key configured") && message.contains("NOKEY_API_KEY"),
        "{message}"
    );
}

#[tokio::test]
async fn upstream_timeouts_are_504_and_a_stalled_stream_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    mock.push(Behavior::sse(
        &[r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#],
        Duration::ZERO,
        StreamEnd::Hang,
    ));
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "mock",
        &mock.url(),
        "      slow: { timeout: 0.3 }\n",
    )]))
    .await;
    let answer = gw.client.chat(&chat("mock/slow")).await;
    assert_eq!(answer.status, 504);
    let json = answer.json();
    assert_error_shape(&json);
    assert_eq!(json["error"]["code"], "upstream_timeout");

    let answer = gw.client.chat(&stream("mock/slow")).await;
    assert_eq!(answer.status, 200, "the stream had started");
    let events = answer.events();
    assert_eq!(events.len(), 3, "{events:?}");
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn errors_after_the_stream_started_are_one_event_then_a_clean_end() {
    let mock = MockUpstream::start().await;
    let chunk = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"par"}}]}"#;
    // Dropped connection mid-stream (after the chunk has gone out).
    mock.push(Behavior::sse(
        &[chunk],
        Duration::from_millis(50),
        StreamEnd::Drop,
    ));
    // An error event from the upstream.
    mock.push(Behavior::sse(
        &[
            chunk,
            r#"{"error":{"message":"overloaded mid-stream","type":"server_error"}}"#,
        ],
        Duration::ZERO,
        StreamEnd::Close,
    ));
    // A chunk that is not JSON.
    mock.push(Behavior::sse(
        &[chunk, "{oops"],
        Duration::ZERO,
        StreamEnd::Close,
    ));
    let gw = gateway(&mock).await;
    for expect in ["connection", "overloaded mid-stream", "not valid JSON"] {
        let answer = gw.client.chat(&stream("mock/m")).await;
        assert_eq!(answer.status, 200);
        let events = answer.events();
        assert_eq!(events.len(), 3, "{expect}: {events:?}");
        assert_eq!(events[0], chunk);
        let error: Value = serde_json::from_str(&events[1]).unwrap();
        assert_error_shape(&error);
        assert!(
            error["error"]["message"].as_str().unwrap().contains(expect),
            "{error}"
        );
        assert_eq!(events[2], "[DONE]");
    }
}

#[tokio::test]
async fn errors_before_the_stream_started_are_real_statuses() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        400,
        json!({"error": {"message": "bad stream request", "type": "invalid_request_error"}}),
    ));
    mock.push(Behavior::json_with_headers(
        429,
        json!({"error": {"message": "slow down"}}),
        &[("retry-after", "2")],
    ));
    let gw = gateway(&mock).await;
    let answer = gw.client.chat(&stream("mock/m")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let answer = gw.client.chat(&stream("mock/m")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let answer = gw.client.get("/v1/nothing").await;
    assert_eq!(answer.status, 404);
    assert_error_shape(&answer.json());
    let answer = gw.client.get("/v1/chat/completions").await;
    assert_eq!(answer.status, 405);
    assert_error_shape(&answer.json());
    let _ = Client::new(&gw.url(), None);
}

#[tokio::test]
async fn upstream_429_is_retried_and_still_429_when_it_persists() {
    let mock = MockUpstream::start().await;
    for _ in 0..2 {
        mock.push(Behavior::json_with_headers(
            429,
            json!({"error": {"message": "slow down"}}),
            &[("retry-after", "0")],
        ));
    }
    let yaml = format!(
        "retry: {{ attempts: 2, base_delay: 0.01 }}\n{}",
        config_with(&[openai_provider("mock", &mock.url(), ANY)])
    );
    let gw = TestGateway::start(&yaml).await;
    let answer = gw.client.chat(&chat("mock/m")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(mock.request_count(), 2, "retried once, then answered 429");
    // A 429 that clears is invisible to the client.
    mock.push(Behavior::json_with_headers(
        429,
        json!({"error": {"message": "slow down"}}),
        &[("retry-after", "0")],
    ));
    assert_eq!(gw.client.chat(&chat("mock/m")).await.status, 200);
}
