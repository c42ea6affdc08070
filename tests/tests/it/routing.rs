//! Routes on the running gateway: one model name that keeps answering while upstreams die
//! or throttle, and never a retry once bytes reached the client.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Behavior, MockUpstream, StreamEnd, TestGateway, config_with, openai_provider};

fn route_config(mocks: &[&MockUpstream], strategy: &str) -> String {
    let providers: Vec<String> = mocks
        .iter()
        .enumerate()
        .map(|(i, m)| openai_provider(&format!("p{i}"), &m.url(), "      m: {}\n"))
        .collect();
    let targets: Vec<String> = (0..mocks.len()).map(|i| format!("p{i}/m")).collect();
    format!(
        "retry: {{ attempts: 2, base_delay: 0.01, max_delay: 0.05 }}\ncooldown: {{ failures: 2, duration: 60 }}\n\
         routes:\n  smart: {{ strategy: {strategy}, targets: [{}] }}\n{}",
        targets.join(", "),
        config_with(&providers)
    )
}

fn text_of(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn every_request_succeeds_while_one_upstream_dies_and_another_throttles() {
    let (a, b, c) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    b.set_default(Behavior::json_with_headers(
        429,
        json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
        &[("retry-after", "0")],
    ));
    let gw = TestGateway::start(&route_config(&[&a, &b, &c], "round_robin")).await;
    let mut targets = Vec::new();
    for i in 0..30 {
        if i == 10 {
            a.kill();
        }
        let stream = i % 2 == 0;
        let content = format!("request {i}");
        let answer = gw
            .client
            .chat(&json!({"model": "smart", "stream": stream, "messages": [{"role": "user", "content": content}]}))
            .await;
        assert_eq!(
            answer.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        if stream {
            let events = answer.events();
            assert_eq!(events.last().unwrap(), "[DONE]");
            assert!(
                !events.iter().any(|e| e.contains("\"error\"")),
                "request {i}: {events:?}"
            );
            assert_eq!(text_of(&events), format!("echo: {content}"));
        } else {
            assert_eq!(
                answer.json()["choices"][0]["message"]["content"],
                format!("echo: {content}")
            );
        }
        targets.push(answer.header("x-llm-bridge-target").unwrap().to_owned());
    }
    assert!(
        targets[..10].iter().any(|t| t == "p0/m"),
        "a served before it died: {targets:?}"
    );
    assert!(
        targets[10..].iter().all(|t| t == "p2/m"),
        "after a died only c served: {targets:?}"
    );
    assert!(
        !targets.iter().any(|t| t == "p1/m"),
        "b only ever throttled"
    );
    // b rests once it failed twice in a row: it was not asked thirty times.
    assert!(b.request_count() < 10, "{}", b.request_count());
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_chunk_is_not_retried() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(Behavior::sse(
        &[r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"half"}}]}"#],
        Duration::from_millis(30),
        StreamEnd::Drop,
    ));
    let gw = TestGateway::start(&route_config(&[&a, &b], "fallback")).await;
    let answer = gw
        .client
        .chat(&json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let events = answer.events();
    assert_eq!(text_of(&events), "half");
    assert!(events[1].contains("\"error\""), "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(
        b.request_count(),
        0,
        "bytes had reached the client: no other target was tried"
    );
    assert_eq!(answer.header("x-llm-bridge-target"), Some("p0/m"));
}

#[tokio::test]
async fn a_failure_before_the_first_chunk_is_retried_and_aliases_are_listed() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    a.push(Behavior::sse(
        &[r#"{"error":{"message":"overloaded","type":"server_error"}}"#],
        Duration::ZERO,
        StreamEnd::Close,
    ));
    a.push(Behavior::json(503, json!({"error": {"message": "down"}})));
    let gw = TestGateway::start(&route_config(&[&a, &b], "fallback")).await;
    let answer = gw
        .client
        .chat(&json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "y"}]}))
        .await;
    assert_eq!(text_of(&answer.events()), "echo: y");
    assert_eq!(answer.header("x-llm-bridge-target"), Some("p1/m"));
    assert_eq!((a.request_count(), b.request_count()), (2, 1));
    let ids: Vec<String> = gw.client.get("/v1/models").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["smart", "p0/m", "p1/m"]);
}

#[tokio::test]
async fn a_provider_with_several_keys_rests_the_one_that_got_429() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json_with_headers(
        429,
        json!({"error": {"message": "quota for this key", "code": "rate_limit_exceeded"}}),
        &[("retry-after", "1")],
    ));
    let yaml = format!(
        "retry: {{ attempts: 2, base_delay: 0.01 }}\nproviders:\n  p:\n    adapter: openai\n    base_url: \"{}/v1\"\n    api_key: \"sk-key-a, sk-key-b\"\n    models:\n      m: {{}}\n",
        mock.url()
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..5 {
        let answer = gw
            .client
            .chat(&json!({"model": "p/m", "messages": [{"role": "user", "content": "x"}]}))
            .await;
        assert_eq!(answer.status, 200);
    }
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(keys[0], "Bearer sk-key-a");
    assert!(
        keys[1..].iter().all(|k| k == "Bearer sk-key-b"),
        "key a rests after its 429: {keys:?}"
    );
    // Rested only as long as asked: then both keys take turns again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..4 {
        gw.client
            .chat(&json!({"model": "p/m", "messages": [{"role": "user", "content": "x"}]}))
            .await;
    }
    let later: Vec<String> = mock.requests()[6..]
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert!(
        later.iter().any(|k| k == "Bearer sk-key-a")
            && later.iter().any(|k| k == "Bearer sk-key-b"),
        "{later:?}"
    );
}
