//! Anthropic's Messages API in front (`/v1/messages`), translated to an OpenAI-compatible
//! upstream: answers, streams, errors in Anthropic's shape, token counts, and what a real
//! Claude Code request becomes.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use testkit::{
    Answer, Client, Echo, MockUpstream, TestGateway, config_with, openai_provider, sse_events,
};

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&format!(
        "default_provider: up\n{}",
        config_with(&[openai_provider(
            "up",
            &mock.url(),
            "      m: {}\n      claude-sonnet-4-5: {}\n",
        )])
    ))
    .await
}

/// POSTs to `/v1/messages` with the key in `x-api-key`, as the Anthropic SDKs send it.
async fn messages(client: &Client, key: Option<&str>, path: &str, body: &Value) -> Answer {
    let mut request = client
        .with_key(None)
        .request(http::Method::POST, path)
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    client
        .call(
            request
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
}

fn hello(stream: bool) -> Value {
    json!({"model": "up/m", "max_tokens": 100, "stream": stream,
           "system": "be brief", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_messages_request_is_served_by_an_openai_upstream() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let answer = messages(
        &gw.client,
        Some(testkit::TEST_KEY),
        "/v1/messages",
        &hello(false),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "up/m");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["content"][0]["text"], "echo: hi");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 7);
    // The upstream got a chat completion: the system prompt first, max_tokens kept.
    let sent = mock.last().json();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][0]["content"], "be brief");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["model"], "m");
    let db = gw.shutdown().await;
    use llm_bridge_usage::UsageReader as _;
    let report = llm_bridge_usage::SqliteUsageReader::new(&db)
        .query(&llm_bridge_usage::UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by: llm_bridge_usage::GroupBy::None,
            key: None,
        })
        .unwrap();
    assert_eq!(report.total.requests, 1);
    assert_eq!(report.total.prompt_tokens, 11);
}

#[tokio::test]
async fn a_streamed_messages_request_gets_anthropics_event_sequence() {
    let mock = MockUpstream::start().await;
    mock.set_default(testkit::Behavior::Echo(Echo {
        chunks: 3,
        ..Echo::default()
    }));
    let gw = gateway(&mock).await;
    let answer = messages(
        &gw.client,
        Some(testkit::TEST_KEY),
        "/v1/messages",
        &hello(true),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&answer.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_start"));
    assert!(names.contains(&"content_block_stop"));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "echo: hi");
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta.1["usage"]["output_tokens"], 7);
    // The gateway asked the upstream for usage on its own.
    assert_eq!(mock.last().json()["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn errors_on_the_messages_path_have_anthropics_shape() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let c = &gw.client;
    for (key, body, status, kind) in [
        (None, hello(false), 401, "authentication_error"),
        (Some("sk-wrong"), hello(false), 401, "authentication_error"),
        (
            Some(testkit::TEST_KEY),
            json!({"model": "up/nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (
            Some(testkit::TEST_KEY),
            json!({"model": "up/m", "messages": "not a list"}),
            400,
            "invalid_request_error",
        ),
    ] {
        let answer = messages(c, key, "/v1/messages", &body).await;
        assert_eq!(answer.status, status, "{body}");
        let json = answer.json();
        assert_eq!(json["type"], "error", "{json}");
        assert_eq!(json["error"]["type"], kind, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Bearer works too.
    let bearer = c
        .call(
            c.request(http::Method::POST, "/v1/messages")
                .body(Full::new(Bytes::from(hello(false).to_string())))
                .unwrap(),
        )
        .await;
    assert_eq!(bearer.status, 200);
}

#[tokio::test]
async fn count_tokens_is_estimated_by_the_gateway() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let answer = messages(
        &gw.client,
        Some(testkit::TEST_KEY),
        "/v1/messages/count_tokens",
        &json!({"model": "up/m", "messages": [{"role": "user", "content": "hello there, how are you today?"}]}),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("x-llm-bridge-estimated"), Some("true"));
    let n = answer.json()["input_tokens"].as_u64().unwrap();
    assert!((5..40).contains(&n), "{n}");
    assert_eq!(mock.request_count(), 0, "counting asks no upstream");
}

#[tokio::test]
async fn claude_codes_first_turn_reaches_a_chat_upstream_without_anthropic_only_fields() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/llm-bridge-dialect-anthropic/tests/fixtures/claude-code-2.1.328.first-turn.json"
    )).unwrap())
    .unwrap();
    let mut body = recorded["body"].clone();
    body["stream"] = json!(false);
    let answer = messages(
        &gw.client,
        Some(testkit::TEST_KEY),
        "/v1/messages?beta=true",
        &body,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["type"], "message");
    let sent = mock.last();
    let text = String::from_utf8_lossy(&sent.body);
    assert!(!text.contains("cache_control"), "{text}");
    assert!(!text.contains("context_management"), "{text}");
    let sent = sent.json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["tools"].as_array().unwrap().len(), 12);
    assert_eq!(sent["messages"][0]["role"], "system");
}

async fn pass_through_gateway(anthropic: &MockUpstream, chat: &MockUpstream) -> TestGateway {
    TestGateway::start(&format!(
        "routes:\n  smart: {{ strategy: fallback, targets: [claude/claude-sonnet-4-5, up/m] }}\n{}",
        config_with(&[
            testkit::anthropic::anthropic_provider(
                "claude",
                &anthropic.url(),
                "      claude-sonnet-4-5: {}\n",
            ),
            openai_provider("up", &chat.url(), "      m: {}\n"),
        ])
    ))
    .await
}

#[tokio::test]
async fn an_anthropic_target_gets_the_body_byte_for_byte_but_the_model() {
    let anthropic = MockUpstream::start().await;
    let chat = MockUpstream::start().await;
    let answer_json = testkit::anthropic::message(
        json!([{"type": "thinking", "thinking": "hmm", "signature": "EqQBCgYIAR=="},
               {"type": "text", "text": "native hi"}]),
        "end_turn",
        testkit::anthropic::usage(12, 9, 30, 5),
    );
    anthropic.push(testkit::Behavior::json(200, answer_json.clone()));
    let gw = pass_through_gateway(&anthropic, &chat).await;
    // Odd spacing, an escape and cache_control: all must arrive as sent.
    let body = r#"{"model": "claude/claude-sonnet-4-5", "max_tokens": 64,
        "system": [{"type": "text", "text": "caf\u00e9", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}], "context_management": {"edits": []}}"#;
    let request = gw
        .client
        .with_key(None)
        .request(http::Method::POST, "/v1/messages")
        .header("x-api-key", testkit::TEST_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "context-management-2025-06-27")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = gw.client.call(request).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.json(),
        answer_json,
        "the answer comes back unaltered"
    );
    let sent = anthropic.last();
    let expected = body.replacen("\"model\": \"claude/claude-sonnet-4-5\", ", "", 1);
    let sent_text = String::from_utf8_lossy(&sent.body).into_owned();
    assert!(
        sent_text.starts_with(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"system":[{"type": "text", "text": "caf\u00e9", "cache_control": {"type": "ephemeral"}}]"#),
        "{sent_text}"
    );
    assert!(
        sent_text.contains(r#""context_management":{"edits": []}"#),
        "{sent_text}\n{expected}"
    );
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("context-management-2025-06-27")
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("x-api-key"), Some(testkit::anthropic::API_KEY));
    assert_eq!(chat.request_count(), 0);
    // Usage read from the native answer, cache reads and writes included.
    let db = gw.shutdown().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let row: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row, (47, 9, 30, 5));
}

#[tokio::test]
async fn a_native_stream_is_forwarded_event_by_event_and_metered() {
    let anthropic = MockUpstream::start().await;
    let chat = MockUpstream::start().await;
    let recorded = testkit::fixture("anthropic-sdk-python-stream-tool_use_response.txt");
    anthropic.push(testkit::anthropic::replay(&recorded));
    let gw = pass_through_gateway(&anthropic, &chat).await;
    let mut body = hello(true);
    body["model"] = json!("claude/claude-sonnet-4-5");
    let answer = messages(&gw.client, Some(testkit::TEST_KEY), "/v1/messages", &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        recorded.replace("\r\n", "\n").trim_end().to_owned() + "\n\n",
        "every event unaltered"
    );
    let db = gw.shutdown().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (outcome, prompt): (String, i64) = conn
        .query_row("SELECT outcome, prompt_tokens FROM usage", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(outcome, "ok");
    assert!(prompt > 0);
}

#[tokio::test]
async fn a_route_falls_back_from_an_anthropic_target_to_a_translated_one() {
    let anthropic = MockUpstream::start().await;
    let chat = MockUpstream::start().await;
    anthropic.push(testkit::anthropic::overloaded());
    let gw = pass_through_gateway(&anthropic, &chat).await;
    let mut body = hello(false);
    body["model"] = json!("smart");
    let answer = messages(&gw.client, Some(testkit::TEST_KEY), "/v1/messages", &body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["content"][0]["text"], "echo: hi");
    assert_eq!(answer.header("x-llm-bridge-target"), Some("up/m"));
    assert_eq!(anthropic.request_count(), 1);
}

#[tokio::test]
async fn count_tokens_goes_to_an_anthropic_target() {
    let anthropic = MockUpstream::start().await;
    let chat = MockUpstream::start().await;
    anthropic.push(testkit::Behavior::json(200, json!({"input_tokens": 4242})));
    let gw = pass_through_gateway(&anthropic, &chat).await;
    let answer = messages(
        &gw.client,
        Some(testkit::TEST_KEY),
        "/v1/messages/count_tokens",
        &json!({"model": "claude/claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["input_tokens"], 4242);
    assert_eq!(answer.header("x-llm-bridge-estimated"), None);
    assert!(anthropic.last().uri.ends_with("/v1/messages/count_tokens"));
}

#[tokio::test]
async fn a_messages_stream_is_translated_to_gemini_with_thinking_and_a_tool_call() {
    use testkit::gemini::{event, gemini_provider, sse, usage};
    let mock = MockUpstream::start().await;
    mock.push(sse(&[
        event(
            json!([{"text": "Planning the call.", "thought": true}]),
            None,
            None,
        ),
        event(
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnLWdlbWluaQ=="}]),
            Some("STOP"),
            Some(usage(20, 6, 4)),
        ),
    ]));
    let gw = TestGateway::start(&config_with(&[gemini_provider(
        "gem",
        &mock.url(),
        "      gemini-2.5-flash: {}\n",
    )]))
    .await;
    let body = json!({"model": "gem/gemini-2.5-flash", "max_tokens": 256, "stream": true,
        "tools": [{"name": "get_weather", "description": "weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let answer = messages(&gw.client, Some(testkit::TEST_KEY), "/v1/messages", &body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let events = sse_events(&answer.body);
    let blocks: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .filter_map(|(_, d)| d["content_block"]["type"].as_str())
        .collect();
    assert_eq!(blocks, ["thinking", "tool_use"], "{events:?}");
    let input: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "Paris"})
    );
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events.last().unwrap().0, "message_stop");
    // Gemini got its own request, translated twice (Messages → pivot → Gemini).
    let sent = mock.last().json();
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "weather in Paris?");
}
