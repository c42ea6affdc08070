//! `adapter: gemini` behind the running gateway: OpenAI clients talk to a mock of Google's
//! native API. What the client gets (bodies, chunks, statuses) and what Gemini receives
//! (URL, key header, translated body) are both checked.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use testkit::gemini::{
    API_KEY, answer, api_key_invalid, error, event, gemini_provider, resource_exhausted, sse, usage,
};
use testkit::{Behavior, MockUpstream, TestGateway, config_with};

const MODELS: &str = "      gemini-2.5-flash: { max_tokens: 1000 }\n      gemini-3-pro-preview: {}\n      \"*\": {}\n";

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[gemini_provider(
        "gemini",
        &mock.url(),
        MODELS,
    )]))
    .await
}

fn events_json(answer: &testkit::Answer) -> (Vec<Value>, Vec<String>) {
    let events = answer.events();
    let chunks = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    (chunks, events)
}

#[tokio::test]
async fn text_answer_and_what_gemini_receives() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        answer(
            json!([{"text": "Bonjour"}, {"text": " !"}]),
            "STOP",
            usage(12, 3, 0),
        ),
    ));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(&json!({
            "model": "gemini/gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hello"}
            ],
            "temperature": 0.3, "max_tokens": 5000, "stop": ["\n\n"], "user": "someone"
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
    assert_eq!(body["id"], "chatcmpl-mock-gemini-response");
    assert_eq!(body["model"], "gemini-2.5-flash-001");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Bonjour !"},
                "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );

    let upstream = mock.last();
    assert_eq!(upstream.method, "POST");
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(upstream.header("x-goog-api-key"), Some(API_KEY));
    assert!(
        !upstream.uri.contains("key="),
        "the key never goes in the URL"
    );
    assert!(!upstream.uri.contains(API_KEY));
    assert_eq!(upstream.header("authorization"), None);
    assert_eq!(upstream.header("content-type"), Some("application/json"));
    assert_eq!(
        upstream.json(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
            "systemInstruction": {"parts": [{"text": "Answer in French."}]},
            // max_tokens lowered to the model's ceiling before translation.
            "generationConfig": {"stopSequences": ["\n\n"], "maxOutputTokens": 1000, "temperature": 0.3}
        })
    );
}

#[tokio::test]
async fn stream_with_and_without_usage() {
    let mock = MockUpstream::start().await;
    let recorded = [
        event(
            json!([{"text": "Thinking", "thought": true}]),
            None,
            Some(json!({"promptTokenCount": 9})),
        ),
        event(json!([{"text": "The answer"}]), None, None),
        event(
            json!([{"text": " is 42."}]),
            Some("STOP"),
            Some(usage(9, 4, 6)),
        ),
    ];
    mock.push(sse(&recorded));
    mock.push(sse(&recorded));
    let gw = gateway(&mock).await;
    let request = json!({"model": "gemini/gemini-2.5-flash", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "question"}]});
    let answer = gw.client.chat(&request).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (chunks, events) = events_json(&answer);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    assert_eq!(chunks.len(), 5, "{events:#?}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-mock-gemini-stream");
        assert_eq!(c["model"], "gemini-2.5-flash-001");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "reasoning_content": "Thinking"})
    );
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"content": "The answer"})
    );
    assert_eq!(
        chunks[2]["choices"][0]["delta"],
        json!({"content": " is 42."})
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 6}})
    );
    let upstream = mock.last();
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(upstream.header("accept"), Some("text/event-stream"));
    assert_eq!(upstream.header("x-goog-api-key"), Some(API_KEY));

    // A client that did not ask for usage gets no usage chunk.
    let mut request = request;
    request.as_object_mut().unwrap().remove("stream_options");
    let answer = gw.client.chat(&request).await;
    let (chunks, _) = events_json(&answer);
    assert_eq!(chunks.len(), 4);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn two_turn_tool_call_round_trip_keeps_the_thought_signature() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        answer(
            json!([
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLXBhcmlz"},
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}
            ]),
            "STOP",
            usage(30, 10, 50),
        ),
    ));
    mock.push(Behavior::json(
        200,
        answer(
            json!([{"text": "Paris 21°C, Rome 25°C."}]),
            "STOP",
            usage(80, 8, 0),
        ),
    ));
    let gw = gateway(&mock).await;
    let tools = json!([{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let user = json!({"role": "user", "content": "Weather in Paris and Rome?"});
    let first = gw
        .client
        .chat(
            &json!({"model": "gemini/gemini-3-pro-preview", "messages": [user], "tools": tools,
                      "tool_choice": "auto"}),
        )
        .await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = first.json();
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = choice["message"].clone();
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(
        calls[0]["function"],
        json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(
        calls[0]["extra_content"],
        json!({"google": {"thought_signature": "c2lnLXBhcmlz"}})
    );
    assert!(calls[1].get("extra_content").is_none());
    let sent = mock.last().json();
    assert_eq!(
        sent["tools"],
        json!([{"functionDeclarations": [{"name": "weather", "description": "Weather in a city",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}])
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );

    // Turn two: the assistant message goes back exactly as received, with both results
    // (in the opposite order).
    let second = gw
        .client
        .chat(
            &json!({"model": "gemini/gemini-3-pro-preview", "tools": tools, "messages": [
                user, message,
                {"role": "tool", "tool_call_id": calls[1]["id"], "content": "{\"temp\": 25}"},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "21 degrees"}
            ]}),
        )
        .await;
    assert_eq!(
        second.status,
        200,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        "Paris 21°C, Rome 25°C."
    );
    let upstream = mock.last();
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-3-pro-preview:generateContent"
    );
    assert_eq!(
        upstream.json()["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"thoughtSignature": "c2lnLXBhcmlz", "functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"temp": 25}}},
                {"functionResponse": {"name": "weather", "response": {"result": "21 degrees"}}}
            ]}
        ])
    );
}

#[tokio::test]
async fn streamed_parallel_tool_calls_are_numbered_and_signed() {
    let mock = MockUpstream::start().await;
    mock.push(sse(&[
        event(
            json!([{"text": "Let me check.", "thought": true}]),
            None,
            None,
        ),
        event(
            json!([
                {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "b", "args": {}}}
            ]),
            Some("STOP"),
            Some(usage(5, 5, 5)),
        ),
    ]));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(&json!({"model": "gemini/gemini-2.5-flash", "stream": true,
            "messages": [{"role": "user", "content": "go"}],
            "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]}))
        .await;
    let (chunks, events) = events_json(&answer);
    assert_eq!(chunks.len(), 3, "{events:#?}");
    let calls = chunks[1]["choices"][0]["delta"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(
        calls[0]["function"],
        json!({"name": "a", "arguments": "{\"x\":1}"})
    );
    assert_eq!(
        calls[0]["extra_content"]["google"]["thought_signature"],
        "c2ln"
    );
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn images_inline_or_a_clear_400() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        answer(json!([{"text": "A red dot."}]), "STOP", usage(300, 4, 0)),
    ));
    let gw = gateway(&mock).await;
    let answer = gw
        .client
        .chat(&json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}
        ]}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        mock.last().json()["contents"][0]["parts"],
        json!([{"text": "What is this?"},
               {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgoAAAANSUhEUg=="}}])
    );

    let answer = gw
        .client
        .chat(
            &json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}]}),
        )
        .await;
    assert_eq!(answer.status, 400);
    let e = &answer.json()["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "messages[0].content[0].image_url.url");
    assert!(e["message"].as_str().unwrap().contains("data URL"));
    assert_eq!(mock.request_count(), 1, "nothing was sent upstream");
}

#[tokio::test]
async fn json_mode_and_json_schema() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        answer(json!([{"text": "{\"a\": 1}"}]), "STOP", usage(5, 5, 0)),
    ));
    mock.push(Behavior::json(
        200,
        answer(json!([{"text": "{}"}]), "STOP", usage(5, 1, 0)),
    ));
    let gw = gateway(&mock).await;
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                        "additionalProperties": false});
    let answer = gw
        .client
        .chat(&json!({"model": "gemini/gemini-2.5-flash",
            "messages": [{"role": "user", "content": "give a"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}}}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["choices"][0]["message"]["content"],
        "{\"a\": 1}"
    );
    assert_eq!(
        mock.last().json()["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );
    gw.client
        .chat(&json!({"model": "gemini/gemini-2.5-flash",
            "messages": [{"role": "user", "content": "json"}],
            "response_format": {"type": "json_object"}}))
        .await;
    assert_eq!(
        mock.last().json()["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

#[tokio::test]
async fn blocked_prompts_and_malformed_calls_are_not_a_normal_stop() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        200,
        json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}),
    ));
    mock.push(Behavior::json(
        200,
        json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "index": 0,
                               "finishMessage": "Malformed function call: weather(city=)"}]}),
    ));
    let gw = gateway(&mock).await;
    let chat =
        json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]});
    let blocked = gw.client.chat(&chat).await.json();
    assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        blocked["choices"][0]["message"]["refusal"],
        "Gemini blocked the prompt (SAFETY)"
    );
    let malformed = gw.client.chat(&chat).await.json();
    assert_eq!(
        malformed["choices"][0]["finish_reason"],
        "malformed_function_call"
    );
    assert_eq!(
        malformed["choices"][0]["finish_message"],
        "Malformed function call: weather(city=)"
    );
}

#[tokio::test]
async fn gemini_errors_become_the_gateways_statuses() {
    let mock = MockUpstream::start().await;
    mock.push(api_key_invalid());
    mock.push(Behavior::json(
        403,
        error(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 1 before or it is disabled.",
            json!([]),
        ),
    ));
    mock.push(resource_exhausted("26s"));
    mock.push(Behavior::json(
        404,
        error(
            404,
            "NOT_FOUND",
            "models/gemini-9-ultra is not found for API version v1beta, or is not supported for generateContent.",
            json!([]),
        ),
    ));
    mock.push(Behavior::json(
        500,
        error(
            500,
            "INTERNAL",
            "An internal error has occurred.",
            json!([]),
        ),
    ));
    let gw = gateway(&mock).await;
    let chat =
        json!({"model": "gemini/gemini-9-ultra", "messages": [{"role": "user", "content": "hi"}]});

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 502, "API_KEY_INVALID is the gateway's key");
    let e = answer.json()["error"].clone();
    assert_eq!(e["code"], "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("API_KEY_INVALID"));
    assert!(
        !answer.body.windows(6).any(|w| w == b"AIzaSy"),
        "no key fragment"
    );

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has not been used")
    );

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("26"));
    assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("You exceeded your current quota")
    );

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("models/gemini-9-ultra is not found")
    );

    let answer = gw.client.chat(&chat).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("An internal error has occurred")
    );
}

#[tokio::test]
async fn stream_errors_before_and_after_the_first_chunk() {
    let mock = MockUpstream::start().await;
    // Mid-stream: a chunk went out, then Gemini reports an error.
    mock.push(sse(&[
        event(json!([{"text": "Once upon"}]), None, None),
        error(503, "UNAVAILABLE", "The model is overloaded.", json!([])),
    ]));
    // In the first event: nothing went out yet, so a real status.
    mock.push(sse(&[error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded.",
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]),
    )]));
    // A stream request refused with an HTTP status.
    mock.push(resource_exhausted("2s"));
    let gw = gateway(&mock).await;
    let request = json!({"model": "gemini/gemini-2.5-flash", "stream": true,
        "messages": [{"role": "user", "content": "story"}]});

    let answer = gw.client.chat(&request).await;
    assert_eq!(answer.status, 200);
    let events = answer.events();
    assert_eq!(events.len(), 3, "{events:#?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": "Once upon"})
    );
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The model is overloaded.")
    );
    assert_eq!(error["error"]["code"], "upstream_error");
    assert_eq!(events[2], "[DONE]");

    let answer = gw.client.chat(&request).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("3"));
    assert_eq!(answer.header("content-type"), Some("application/json"));

    let answer = gw.client.chat(&request).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("2"));
}

#[tokio::test]
async fn keys_rotate_in_the_header_and_a_missing_key_is_named() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "providers:\n  gemini:\n    adapter: gemini\n    base_url: \"{}/v1beta/\"\n    api_key: \"AIza-one, AIza-two\"\n    models:\n      \"*\": {{}}\n  nokey:\n    adapter: gemini\n    base_url: {}\n    models:\n      \"*\": {{}}\n",
        mock.url(),
        mock.url()
    );
    let gw = TestGateway::start(&yaml).await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..2 {
        let answer = gw.client.chat(&chat("gemini/gemini-2.5-flash")).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer.json()["choices"][0]["message"]["content"],
            "echo: hi"
        );
    }
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("x-goog-api-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["AIza-one", "AIza-two"]);
    assert!(mock.requests().iter().all(|r| !r.uri.contains("AIza")));
    assert_eq!(
        mock.last().uri,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );

    let answer = gw.client.chat(&chat("nokey/gemini-2.5-flash")).await;
    assert_eq!(answer.status, 502);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("NOKEY_API_KEY"), "{message}");
    assert_eq!(mock.request_count(), 2);

    // A model name that would escape the URL path is refused before anything is sent.
    let answer = gw.client.chat(&chat("gemini/../files?key=x")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["error"]["param"], "model");
    assert_eq!(mock.request_count(), 2);
}
