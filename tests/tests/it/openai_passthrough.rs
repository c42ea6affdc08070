//! OpenAI-compatible upstreams behind the running gateway: every field the client sends
//! reaches the upstream, every field the upstream sends reaches the client, streams are
//! forwarded chunk by chunk and end with exactly one `[DONE]`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyStream;
use serde_json::{Value, json};
use testkit::{
    Behavior, Echo, MockUpstream, StreamEnd, TestGateway, config_with, fixture, openai_provider,
};

async fn gateway(mock: &MockUpstream, models: &str) -> TestGateway {
    TestGateway::start(&config_with(&[openai_provider(
        "mock",
        &mock.url(),
        models,
    )]))
    .await
}

const ANY: &str = "      \"*\": {}\n";

#[tokio::test]
async fn json_chat_passes_every_field_both_ways() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, "      gpt-4o: { max_tokens: 4096 }\n").await;
    let request = json!({
        "model": "mock/gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "metadata": {"team": "a"},
        "some_future_field": {"nested": [1, 2, 3]},
        "max_tokens": 100
    });
    let answer = gw.client.chat(&request).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert!(
        answer
            .header("x-request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );

    let upstream = mock.last();
    assert_eq!(upstream.method, "POST");
    assert_eq!(upstream.uri, "/v1/chat/completions");
    assert_eq!(
        upstream.header("authorization"),
        Some("Bearer sk-upstream-mock")
    );
    let mut expected = request.clone();
    expected["model"] = json!("gpt-4o");
    assert_eq!(upstream.json(), expected, "only the model is rewritten");

    // Every field of the upstream's answer, byte for byte.
    let body = answer.json();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(body["service_tier"], "default");
    assert_eq!(body["system_fingerprint"], "fp_mock");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["usage"]["total_tokens"], 18);
}

#[tokio::test]
async fn recorded_completion_is_returned_untouched() {
    let mock = MockUpstream::start().await;
    let recorded = fixture("openai-completion-length.json");
    mock.push(Behavior::raw(200, "application/json", recorded.clone()));
    let gw = gateway(&mock, ANY).await;
    let answer = gw
        .client
        .chat(&json!({"model": "mock/gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        recorded.as_bytes(),
        "bytes are forwarded as received"
    );
}

#[tokio::test]
async fn model_settings_rewrite_the_request() {
    let mock = MockUpstream::start().await;
    let models = "      o3-mini<high>:\n        max_tokens: 100\n        param_config:\n          update_params: { reasoning_effort: high }\n          add_params: { top_p: 0.5, temperature: 1 }\n          rename_params: { max_tokens: max_completion_tokens }\n          delete_params: [presence_penalty]\n";
    let gw = gateway(&mock, models).await;
    let answer = gw
        .client
        .chat(&json!({
            "model": "mock/o3-mini<high>",
            "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "low", "temperature": 0.1, "max_tokens": 5000, "presence_penalty": 1
        }))
        .await;
    assert_eq!(answer.status, 200);
    let sent = mock.last().json();
    assert_eq!(
        sent["model"], "o3-mini",
        "the <high> tag names a variant, not an upstream model"
    );
    assert_eq!(sent["reasoning_effort"], "high");
    assert_eq!(sent["temperature"], 0.1, "add_params never overwrites");
    assert_eq!(sent["top_p"], 0.5);
    assert_eq!(
        sent["max_completion_tokens"], 100,
        "lowered to the ceiling, then renamed"
    );
    assert!(sent.get("max_tokens").is_none());
    assert!(sent.get("presence_penalty").is_none());
}

#[tokio::test]
async fn bare_model_names_resolve_to_the_provider_that_lists_them() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, "      deepseek-chat: {}\n").await;
    let answer = gw
        .client
        .chat(&json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(mock.last().json()["model"], "deepseek-chat");
}

#[tokio::test]
async fn recorded_stream_is_replayed_chunk_for_chunk_without_the_unasked_usage_chunk() {
    let mock = MockUpstream::start().await;
    let recorded = fixture("openai-stream-parallel-tools.sse");
    mock.push(Behavior::replay(&recorded, Duration::ZERO));
    let gw = gateway(&mock, ANY).await;
    let answer = gw
        .client
        .chat(&json!({"model": "mock/gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        mock.last().json()["stream_options"],
        json!({"include_usage": true}),
        "the gateway asks for usage itself"
    );

    let upstream: Vec<String> = testkit::sse_data(recorded.as_bytes());
    let got = answer.events();
    assert_eq!(got.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(got.iter().filter(|e| *e == "[DONE]").count(), 1);
    // The client did not ask for usage: the final usage chunk (choices: []) is held back,
    // every other chunk arrives byte for byte.
    let expected: Vec<&String> = upstream
        .iter()
        .filter(|e| !e.contains("\"choices\":[]"))
        .collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    // Both parallel tool calls, with their own indexes.
    assert!(got.iter().any(|e| e.contains("\"index\":1,\"id\":\"call_")));
}

#[tokio::test]
async fn usage_chunk_reaches_a_client_that_asked_for_it() {
    let mock = MockUpstream::start().await;
    let recorded = fixture("openai-stream-text.sse");
    mock.push(Behavior::replay(&recorded, Duration::ZERO));
    let gw = gateway(&mock, ANY).await;
    let answer = gw
        .client
        .chat(&json!({
            "model": "mock/gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "x"}]
        }))
        .await;
    let events = answer.events();
    assert_eq!(
        events,
        testkit::sse_data(recorded.as_bytes()),
        "the whole recording, usage chunk included"
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn deepseek_reasoning_and_unknown_fields_pass_through_streams() {
    let mock = MockUpstream::start().await;
    // Shaped like Deepseek's reasoner stream (reasoning_content deltas) plus OpenAI's
    // newer `obfuscation` field, and usage on the last content chunk, as Deepseek sends it.
    let chunks = [
        r#"{"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Let me think"},"finish_reason":null}],"obfuscation":"x1"}"#,
        r#"{"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"Hi","reasoning_content":null},"finish_reason":null}],"obfuscation":"x2"}"#,
        r#"{"id":"d1","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":9,"completion_tokens_details":{"reasoning_tokens":8}}}"#,
        "[DONE]",
    ];
    mock.push(Behavior::sse(&chunks, Duration::ZERO, StreamEnd::Close));
    let gw = gateway(&mock, ANY).await;
    let answer = gw
        .client
        .chat(&json!({"model": "mock/deepseek-reasoner", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let events = answer.events();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0], chunks[0]);
    assert_eq!(events[1], chunks[1]);
    // Usage rides on a content chunk: the chunk is kept, only its usage is removed.
    let last: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none());
    assert_eq!(events[3], "[DONE]");
}

#[tokio::test]
async fn chunks_are_forwarded_as_they_arrive() {
    let mock = MockUpstream::start().await;
    // Two chunks, then the upstream goes quiet without ending the stream: a gateway that
    // buffered would deliver nothing.
    mock.push(Behavior::sse(
        &[
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"b"}}]}"#,
        ],
        Duration::ZERO,
        StreamEnd::Hang,
    ));
    let gw = gateway(&mock, "      m: { timeout: 30 }\n").await;
    let request = gw
        .client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "mock/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )))
        .unwrap();
    let response = gw.client.send(request).await;
    assert_eq!(response.status(), 200);
    let mut body = BodyStream::new(response.into_body());
    let mut seen = String::new();
    while !seen.contains("\"b\"") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("chunks arrive while the upstream stream is still open")
            .expect("body continues")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("\"a\""));
    assert!(!seen.contains("[DONE]"));
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 200,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let gw = gateway(&mock, ANY).await;
    let request = gw
        .client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "mock/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )))
        .unwrap();
    let response = gw.client.send(request).await;
    let mut body = BodyStream::new(response.into_body());
    let _first = body.next().await.expect("a first chunk");
    drop(body);
    mock.wait_cancelled(1).await;
    assert_eq!(
        mock.finished(),
        0,
        "the upstream stream was not read to its end"
    );
}

#[tokio::test]
async fn the_upstream_gets_the_clients_bytes_with_only_the_gateways_edits() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, ANY).await;
    let send = |body: &'static str| {
        let request = gw
            .client
            .request(http::Method::POST, "/v1/chat/completions")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap();
        gw.client.call(request)
    };
    // Spacing, number forms, escapes and field order as the client wrote them.
    let answer = send(
        r#"{ "model" : "mock/m", "temperature":1.0, "top_p":1e0, "messages":[{"role":"user","content":"caf\u00e9"}] }"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        std::str::from_utf8(&mock.last().body).unwrap(),
        r#"{ "model" : "m", "temperature":1.0, "top_p":1e0, "messages":[{"role":"user","content":"caf\u00e9"}] }"#
    );
    // A stream also asks for the usage chunk, keeping the client's other stream options.
    let answer = send(
        r#"{"model":"mock/m","stream":true,"stream_options":{"future":1},"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        std::str::from_utf8(&mock.last().body).unwrap(),
        r#"{"model":"m","stream":true,"stream_options":{"future":1,"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#
    );
    assert_eq!(answer.events().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn stream_usage_switch_off_leaves_stream_options_alone() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  mock:\n    adapter: openai\n    base_url: \"{}\"\n    api_key: k\n    stream_usage: false\n    models:\n      \"*\": {{}}\n",
        mock.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let answer = gw
        .client
        .chat(&json!({"model": "mock/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        mock.last().json().get("stream_options").is_none(),
        "stream_usage: false leaves the request as the client sent it"
    );
    assert_eq!(answer.events().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, ANY).await;
    let request = gw
        .client
        .request(http::Method::GET, "/v1/models")
        .header("x-request-id", "client-trace-42")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = gw.client.call(request).await;
    assert_eq!(answer.header("x-request-id"), Some("client-trace-42"));
    let a = gw.client.get("/healthz").await;
    let b = gw.client.get("/healthz").await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests_and_streams() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, ANY).await;
    for i in 0..6 {
        let answer = gw
            .client
            .chat(&json!({"model": "mock/m", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "x"}]}))
            .await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(mock.request_count(), 6);
    assert_eq!(
        mock.connections(),
        1,
        "one pooled upstream connection served every request"
    );
}
