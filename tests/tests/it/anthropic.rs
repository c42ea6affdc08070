//! `adapter: anthropic` behind the running gateway: OpenAI clients talk to a mock of
//! Anthropic's Messages API that replays recorded answers and streams. What the client gets
//! (bodies, chunks, statuses, usage records) and what Anthropic receives (URL, headers,
//! translated body) are both checked.

#![allow(clippy::unwrap_used)]

use llm_bridge_usage::{GroupBy, SqliteUsageReader, UsageQuery, UsageReader};
use serde_json::{Value, json};
use testkit::anthropic::{
    API_KEY, anthropic_provider, authentication_error, error, message, overloaded, rate_limited,
    replay, sse, usage,
};
use testkit::{Behavior, MockUpstream, TestGateway, config_with, fixture};

const MODELS: &str =
    "      claude-sonnet-4-5: { max_tokens: 2000 }\n      claude-haiku-4-5: {}\n      \"*\": {}\n";

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[anthropic_provider(
        "anthropic",
        &mock.url(),
        MODELS,
    )]))
    .await
}

fn chunks(answer: &testkit::Answer) -> Vec<Value> {
    let events = answer.events();
    assert_eq!(
        events.iter().filter(|e| *e == "[DONE]").count(),
        1,
        "{events:#?}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The concatenated `delta.content` of a stream's chunks.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The text of a Messages `content` (a string or text blocks).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        blocks => blocks
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect(),
    }
}

fn report(db: &std::path::Path) -> llm_bridge_usage::UsageReport {
    SqliteUsageReader::new(db)
        .query(&UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by: GroupBy::Model,
            key: None,
        })
        .unwrap()
}

#[tokio::test]
async fn plain_answer_and_what_anthropic_receives() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        message(
            json!([{"type": "text", "text": "Bonjour"}, {"type": "text", "text": " !"}]),
            "end_turn",
            usage(12, 3, 0, 0),
        ),
    ));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(&json!({
            "model": "anthropic/claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hello"}
            ],
            "temperature": 0.3, "stop": ["END", "\n\n"], "user": "someone"
        }))
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-msg_mock_0001");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Bonjour !"},
                "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
               "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );

    let upstream = mock.last();
    assert_eq!(upstream.method, "POST");
    assert_eq!(upstream.uri, "/v1/messages");
    assert_eq!(upstream.header("x-api-key"), Some(API_KEY));
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(upstream.header("anthropic-beta"), None);
    assert_eq!(upstream.header("authorization"), None);
    assert_eq!(upstream.header("content-type"), Some("application/json"));
    let sent = upstream.json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(
        sent["max_tokens"], 2000,
        "Anthropic requires max_tokens: the model's ceiling when the request sets none"
    );
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "Answer in French."}])
    );
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(text_of(&messages[0]["content"]), "Hello");
    assert_eq!(
        sent["stop_sequences"],
        json!(["END"]),
        "whitespace-only sequences are dropped (Anthropic refuses them)"
    );
    assert_eq!(sent["temperature"], json!(0.3));
    assert_eq!(sent["metadata"], json!({"user_id": "someone"}));
    assert!(sent.get("stream").is_none());

    // A request above the ceiling is lowered to it; a model without one gets the default.
    for (model, asked, sent_max) in [
        ("claude-sonnet-4-5", Some(5000), 2000),
        ("claude-haiku-4-5", None, 4096),
        ("claude-haiku-4-5", Some(300), 300),
    ] {
        let mut request = json!({"model": format!("anthropic/{model}"),
            "messages": [{"role": "user", "content": "hi"}]});
        if let Some(n) = asked {
            request["max_tokens"] = json!(n);
        }
        let answer = gw.client.chat(&request).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "echo: hi"
        );
        assert_eq!(mock.last().json()["max_tokens"], sent_max, "{model}");
    }
}

#[tokio::test]
async fn stream_in_openai_shape_with_cache_reads_and_writes_recorded() {
    let mock = MockUpstream::start().await;
    // The recorded stream, its prompt split as a cached conversation would be: 11 uncached,
    // 100 read from the cache, 50 written to it.
    let recorded = fixture("anthropic-sdk-python-stream-basic_response.txt").replace(
        r#""usage":{"input_tokens":11,"output_tokens":1}"#,
        r#""usage":{"input_tokens":11,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"output_tokens":1}"#,
    );
    assert!(recorded.contains("cache_creation_input_tokens"));
    mock.push(replay(&recorded));
    let models = "      claude-sonnet-4-5:\n        price: { input: 3, output: 15, cached: 0.3, cache_write: 3.75 }\n";
    let gw = TestGateway::start(&config_with(&[anthropic_provider(
        "anthropic",
        &mock.url(),
        models,
    )]))
    .await;
    let answer = gw
        .client
        .chat(&json!({
            "model": "anthropic/claude-sonnet-4-5", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Say hello there!"}]
        }))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let chunks = chunks(&answer);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK");
        assert_eq!(c["model"], "claude-sonnet-4-5");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(streamed_text(&chunks), "Hello there!");
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(contents, ["Hello", " there", "!"], "one chunk per delta");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 161, "completion_tokens": 6, "total_tokens": 167,
               "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 50},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
    let upstream = mock.last();
    assert_eq!(upstream.json()["stream"], true);
    assert_eq!(upstream.header("accept"), Some("text/event-stream"));

    let db = gw.shutdown().await;
    let report = report(&db);
    let g = report
        .data
        .iter()
        .find(|g| g.group == "anthropic/claude-sonnet-4-5")
        .unwrap();
    assert_eq!(
        (
            g.requests,
            g.prompt_tokens,
            g.completion_tokens,
            g.cached_tokens,
            g.cache_write_tokens,
            g.estimated_requests
        ),
        (1, 161, 6, 100, 50, 0)
    );
    // Each prompt token charged once: 11 at input, 100 at cached, 50 at cache_write.
    let expected = (11.0 * 3.0 + 100.0 * 0.3 + 50.0 * 3.75 + 6.0 * 15.0) / 1e6;
    assert!(
        (g.cost.unwrap() - expected).abs() < 1e-12,
        "{:?} != {expected}",
        g.cost
    );
}

#[tokio::test]
async fn tools_round_trip_on_recorded_traffic() {
    let recording: Value =
        serde_json::from_str(&fixture("anthropic-sdk-python-recording-tool-loop.json")).unwrap();
    let (first, second) = (&recording[0], &recording[1]);
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(200, first["response"]["body"].clone()));
    mock.push(Behavior::json(200, second["response"]["body"].clone()));
    let gw = gateway(&mock).await;

    let tool = &first["request"]["body"]["tools"][0];
    let tools = json!([{"type": "function", "function": {
        "name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}}]);
    let question = json!({"role": "user", "content": "What is the weather in SF?"});
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 1024,
            "tools": tools, "messages": [question]}),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let assistant = body["choices"][0]["message"].clone();
    assert_eq!(assistant["content"], Value::Null);
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A9HHF5Ezy3oBrKmSgfASm9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "San Francisco, CA", "units": "f"})
    );
    assert_eq!(body["usage"]["prompt_tokens"], 656);
    assert_eq!(body["usage"]["completion_tokens"], 74);
    // The tool reached Anthropic exactly as the SDK sent it.
    let sent = mock.last().json();
    assert_eq!(sent["tools"], first["request"]["body"]["tools"]);
    assert_eq!(sent["max_tokens"], 1024);

    // Second turn: the assistant's call and the tool's result go back.
    let result = "RuntimeError('Unexpected error, try again')";
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-haiku-4-5", "max_tokens": 1024,
            "tools": tools, "messages": [question, assistant,
                {"role": "tool", "tool_call_id": call["id"], "content": result}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        second["response"]["body"]["content"][0]["text"]
    );
    let sent = mock.last().json();
    let recorded = &second["request"]["body"]["messages"];
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["role"], "assistant");
    let tool_use = &messages[1]["content"][0];
    let recorded_use = &recorded[1]["content"][0];
    for k in ["type", "id", "name", "input"] {
        assert_eq!(tool_use[k], recorded_use[k], "{k}");
    }
    assert_eq!(messages[2]["role"], "user");
    let tool_result = &messages[2]["content"][0];
    assert_eq!(tool_result["type"], "tool_result");
    assert_eq!(
        tool_result["tool_use_id"],
        recorded[2]["content"][0]["tool_use_id"]
    );
    assert_eq!(text_of(&tool_result["content"]), result);
}

#[tokio::test]
async fn streamed_tool_call_on_a_recorded_stream() {
    let mock = MockUpstream::start().await;
    mock.push(replay(&fixture(
        "anthropic-sdk-python-stream-tool_use_response.txt",
    )));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-sonnet-4-5", "stream": true,
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let chunks = chunks(&answer);
    assert_eq!(
        streamed_text(&chunks),
        "I'll check the current weather in Paris for you."
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["id"], "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "Paris"})
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage only for clients that asked"
    );
}

#[tokio::test]
async fn thinking_signature_is_sent_back_byte_for_byte() {
    let recorded: Value =
        serde_json::from_str(&fixture("anthropic-vercel-clear-thinking.json")).unwrap();
    let block = recorded["content"][0].clone();
    assert_eq!(block["type"], "thinking");
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(200, recorded.clone()));
    let gw = gateway(&mock).await;
    let question = json!({"role": "user", "content": "What is 925 divided by 5?"});
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-sonnet-4-5", "reasoning_effort": "low",
            "messages": [question]}),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let sent = mock.last().json();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert!(
        sent["max_tokens"].as_u64().unwrap() > 2048,
        "thinking never eats the answer's room"
    );
    let assistant = answer.json()["choices"][0]["message"].clone();
    assert_eq!(assistant["content"], "925 ÷ 5 = 185");
    assert_eq!(assistant["reasoning_content"], block["thinking"]);
    assert_eq!(
        assistant["extra_content"]["anthropic"]["thinking_blocks"][0]["signature"],
        block["signature"]
    );

    // The client sends the message back as it got it (the OpenAI SDKs keep unknown fields).
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-sonnet-4-5", "reasoning_effort": "low",
            "messages": [question, assistant, {"role": "user", "content": "And times 2?"}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let second = mock.last();
    let sent = second.json();
    assert_eq!(sent["messages"][1]["role"], "assistant");
    assert_eq!(sent["messages"][1]["content"][0], block);
    // Byte for byte: the block as Anthropic wrote it is in the body as it is.
    let original = serde_json::to_string(&block).unwrap();
    let raw = String::from_utf8_lossy(&second.body);
    assert!(raw.contains(&original), "{original} not in {raw}");
}

#[tokio::test]
async fn overloaded_529_is_retried_then_served() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "retry: {{ attempts: 2, base_delay: 0.01 }}\n{}",
        config_with(&[anthropic_provider("anthropic", &mock.url(), MODELS)])
    );
    let gw = TestGateway::start(&yaml).await;

    mock.push(overloaded());
    let answer = gw
        .client
        .chat(&json!({"model": "anthropic/claude-haiku-4-5",
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "echo: hi"
    );
    assert_eq!(mock.request_count(), 2);

    // Overloaded as the first event of a stream (after message_start): nothing reached the
    // client yet, so it is retried too.
    let start = json!({"type": "message_start", "message": message(json!([]), "end_turn", usage(3, 1, 0, 0))});
    mock.push(sse(&[
        start,
        json!({"type": "ping"}),
        error("overloaded_error", "Overloaded"),
    ]));
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-haiku-4-5", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let chunks = chunks(&answer);
    assert_eq!(streamed_text(&chunks), "echo: hi");
    assert!(chunks.iter().all(|c| c.get("error").is_none()));
    assert_eq!(mock.request_count(), 4);

    // Overloaded every time: a 502 naming it.
    mock.push(overloaded());
    mock.push(overloaded());
    let answer = gw
        .client
        .chat(&json!({"model": "anthropic/claude-haiku-4-5",
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.status, 502);
    let text = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("overloaded_error"), "{text}");
}

#[tokio::test]
async fn a_throttled_key_rests_and_another_key_serves() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "retry: {{ attempts: 2, base_delay: 0.01 }}\nproviders:\n  anthropic:\n    adapter: anthropic\n    base_url: \"{}/v1/\"\n    api_key: \"sk-ant-one, sk-ant-two\"\n    anthropic_version: \"2024-10-22\"\n    anthropic_beta: [prompt-caching-2024-07-31, output-128k-2025-02-19]\n    models:\n      \"*\": {{}}\n",
        mock.url()
    );
    let gw = TestGateway::start(&yaml).await;
    mock.push(rate_limited(30));
    for _ in 0..4 {
        let answer = gw
            .client
            .chat(&json!({"model": "anthropic/claude-haiku-4-5",
                "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let requests = mock.requests();
    let keys: Vec<&str> = requests
        .iter()
        .map(|r| r.header("x-api-key").unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "sk-ant-one",
            "sk-ant-two",
            "sk-ant-two",
            "sk-ant-two",
            "sk-ant-two"
        ],
        "the first key rests after its 429"
    );
    for r in &requests {
        assert_eq!(r.uri, "/v1/messages");
        assert_eq!(r.header("anthropic-version"), Some("2024-10-22"));
        assert_eq!(
            r.header("anthropic-beta"),
            Some("prompt-caching-2024-07-31,output-128k-2025-02-19")
        );
    }
}

#[tokio::test]
async fn anthropic_errors_become_the_gateways_statuses() {
    let mock = MockUpstream::start().await;
    mock.push(authentication_error());
    mock.push(Behavior::raw(
        400,
        "application/json",
        fixture("anthropic-error-400-invalid_request_error.json"),
    ));
    mock.push(rate_limited(7));
    mock.push(Behavior::json(
        500,
        error("api_error", "Internal server error"),
    ));
    let gw = gateway(&mock).await;
    let chat = json!({"model": "anthropic/claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}]});

    let answer = gw.client.chat(&chat).await;
    assert_eq!(
        answer.status, 502,
        "a refused provider key is the gateway's"
    );
    let e = answer.json()["error"].clone();
    assert_eq!(e["code"], "upstream_error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("authentication_error"),
        "{e}"
    );
    assert!(
        !answer.body.windows(6).any(|w| w == b"sk-ant"),
        "no key fragment: {}",
        String::from_utf8_lossy(&answer.body)
    );

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 400);
    let e = answer.json()["error"].clone();
    assert_eq!(
        e["message"],
        "This model does not support effort level 'xhigh'. Supported levels: high, low, max, medium."
    );
    assert_eq!(e["type"], "invalid_request_error");

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Internal server error")
    );
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_ends_with_an_error() {
    let mock = MockUpstream::start().await;
    let start = json!({"type": "message_start", "message": message(json!([]), "end_turn", usage(3, 1, 0, 0))});
    // The body ends cleanly, but before message_delta and message_stop.
    mock.push(sse(&[
        start,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Once upon"}}),
    ]));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-sonnet-4-5", "stream": true,
            "messages": [{"role": "user", "content": "story"}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let chunks = chunks(&answer);
    assert_eq!(streamed_text(&chunks), "Once upon");
    let last = chunks.last().unwrap();
    let text = last["error"]["message"].as_str().unwrap();
    assert!(text.contains("message_stop"), "{text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()),
        "no finish reason: the answer was cut"
    );
}

#[tokio::test]
async fn streamed_thinking_arrives_as_reasoning_and_one_signed_block() {
    let mock = MockUpstream::start().await;
    let start = json!({"type": "message_start", "message": message(json!([]), "end_turn", usage(9, 1, 0, 0))});
    let signature = "RXJvQkNrWUlDeGdDS2tD+/=";
    mock.push(sse(&[
        start,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two plus "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "two."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": signature}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "4"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}}),
        json!({"type": "message_stop"}),
    ]));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(
            &json!({"model": "anthropic/claude-sonnet-4-5", "stream": true,
            "reasoning_effort": "medium", "messages": [{"role": "user", "content": "2+2?"}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let chunks = chunks(&answer);
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, "Two plus two.");
    assert_eq!(streamed_text(&chunks), "4");
    let blocks: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["extra_content"]["anthropic"]["thinking_blocks"].as_array()
        })
        .flatten()
        .collect();
    assert_eq!(
        blocks,
        [
            &json!({"type": "thinking", "thinking": "Two plus two.", "signature": signature, "index": 0})
        ]
    );
    assert_eq!(
        mock.last().json()["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
}
