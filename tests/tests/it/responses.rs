//! OpenAI's Responses API in front (`/v1/responses`): translated to a chat-completions
//! upstream, and passed through to an upstream that speaks Responses itself.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use testkit::{
    Answer, Behavior, MockUpstream, TestGateway, config_with, openai_provider, sse_events,
};

async fn gateway(chat: &MockUpstream, native: &MockUpstream) -> TestGateway {
    let native_provider = format!(
        "  native:\n    adapter: openai\n    base_url: \"{}/v1\"\n    api_key: sk-upstream-native\n    responses: native\n    models:\n      gpt-5: {{}}\n",
        native.url()
    );
    TestGateway::start(&config_with(&[
        openai_provider("up", &chat.url(), "      m: {}\n"),
        native_provider,
    ]))
    .await
}

async fn post(gw: &TestGateway, body: &str) -> Answer {
    let request = gw
        .client
        .request(http::Method::POST, "/v1/responses")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    gw.client.call(request).await
}

#[tokio::test]
async fn a_responses_request_is_served_by_a_chat_upstream() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let answer = post(
        &gw,
        r#"{"model": "up/m", "instructions": "be brief", "input": "hi", "store": false}"#,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    let message = body["output"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["text"], "echo: hi");
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 7);
    let sent = chat.last().json();
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][0]["content"], "be brief");
    assert_eq!(sent["messages"][1]["content"], "hi");
    assert_eq!(native.request_count(), 0);
}

#[tokio::test]
async fn a_streamed_responses_request_gets_the_typed_event_sequence() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let answer = post(&gw, r#"{"model": "up/m", "input": "hi", "stream": true}"#).await;
    assert_eq!(answer.status, 200);
    let events = sse_events(&answer.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..2],
        ["response.created", "response.in_progress"],
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    assert!(names.contains(&"response.output_text.delta"));
    assert!(names.contains(&"response.output_text.done"));
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "echo: hi");
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn a_native_responses_upstream_gets_the_body_but_the_model_unaltered() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let recorded = json!({"id": "resp_upstream", "object": "response", "status": "completed",
        "model": "gpt-5-2025-08-07", "output": [],
        "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 12},
                  "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 39}});
    native.push(Behavior::json(200, recorded.clone()));
    let gw = gateway(&chat, &native).await;
    // Spaces inside values, an escape, a built-in tool: all must arrive as sent.
    let body = r#"{"model":"native/gpt-5","input":[{"type": "message", "role": "user", "content": "caf\u00e9"}],"store":false,"include":["reasoning.encrypted_content"],"tools":[{"type": "web_search"}],"prompt_cache_key":"session-1"}"#;
    let answer = post(&gw, body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json(), recorded, "the answer comes back unaltered");
    let sent = native.last();
    assert!(sent.uri.ends_with("/v1/responses"), "{}", sent.uri);
    assert_eq!(
        String::from_utf8_lossy(&sent.body),
        body.replace("native/gpt-5", "gpt-5")
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-upstream-native")
    );
    assert_eq!(chat.request_count(), 0);
    let db = gw.shutdown().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let row: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row, (30, 9, 12, 4));
}

#[tokio::test]
async fn codexs_first_turn_reaches_a_chat_upstream_without_built_in_tools() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/llm-bridge-dialect-responses/tests/fixtures/codex-0.169.0.first-turn.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut body = recorded["body"].clone();
    body["model"] = json!("up/m");
    let answer = post(&gw, &body.to_string()).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let names: Vec<String> = sse_events(&answer.body)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("response.completed"));
    let sent = chat.last().json();
    let tools: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"exec_command"), "{tools:?}");
    assert!(!sent.to_string().contains("web_search"));
    assert_eq!(
        sent["prompt_cache_key"],
        recorded["body"]["prompt_cache_key"]
    );
}

#[tokio::test]
async fn kept_answers_are_read_continued_and_deleted() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let first = post(&gw, r#"{"model": "up/m", "input": "hi"}"#)
        .await
        .json();
    let id = first["id"].as_str().unwrap().to_owned();

    let read = gw.client.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), first);
    let items = gw
        .client
        .get(&format!("/v1/responses/{id}/input_items"))
        .await;
    assert_eq!(items.status, 200);
    assert_eq!(items.json()["object"], "list");
    assert_eq!(items.json()["data"][0]["content"], "hi");

    // The next turn continues it: the upstream gets the whole conversation.
    let second = post(
        &gw,
        &json!({"model": "up/m", "previous_response_id": id, "input": "again"}).to_string(),
    )
    .await;
    assert_eq!(
        second.status,
        200,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    let sent = chat.last().json();
    let turns: Vec<(String, String)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        [
            ("user".to_owned(), "hi".to_owned()),
            ("assistant".to_owned(), "echo: hi".to_owned()),
            ("user".to_owned(), "again".to_owned())
        ]
    );
    // And a third continues the second (the chain is kept whole).
    let second_id = second.json()["id"].as_str().unwrap().to_owned();
    post(
        &gw,
        &json!({"model": "up/m", "previous_response_id": second_id, "input": "third", "stream": true}).to_string(),
    )
    .await;
    assert_eq!(chat.last().json()["messages"].as_array().unwrap().len(), 5);

    // Another key does not see it; a deleted one is gone.
    let other = gw
        .client
        .with_key(Some(testkit::ADMIN_KEY))
        .post("/admin/keys", &json!({"name": "other"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.client
            .with_key(Some(&other))
            .get(&format!("/v1/responses/{id}"))
            .await
            .status,
        404
    );
    let request = gw
        .client
        .request(http::Method::DELETE, &format!("/v1/responses/{id}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let deleted = gw.client.call(request).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["deleted"], true);
    let gone = gw.client.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn streamed_answers_are_kept_and_store_false_keeps_nothing() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let streamed = post(&gw, r#"{"model": "up/m", "input": "hi", "stream": true}"#).await;
    let events = sse_events(&streamed.body);
    let done = &events.last().unwrap().1["response"];
    let id = done["id"].as_str().unwrap();
    let read = gw.client.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["output"], done["output"]);

    let unkept = post(&gw, r#"{"model": "up/m", "input": "hi", "store": false}"#)
        .await
        .json();
    let id = unkept["id"].as_str().unwrap();
    assert_eq!(
        gw.client.get(&format!("/v1/responses/{id}")).await.status,
        404
    );
    // Continuing an answer nobody kept is the client's mistake.
    let missing = post(
        &gw,
        r#"{"model": "up/m", "input": "x", "previous_response_id": "resp_nobody"}"#,
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"]["param"], "previous_response_id");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket on `/v1/responses` as Codex opens it.
async fn socket(
    gw: &TestGateway,
    key: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/v1/responses", gw.url().replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    headers.insert(
        "openai-beta",
        "responses_websockets=2026-02-06".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Sends one frame and reads the events of its turn, up to its last (or an error frame).
async fn turn(ws: &mut Socket, frame: Value) -> Vec<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
            .expect("the connection stays open")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        let kind = event["type"].as_str().unwrap().to_owned();
        events.push(event);
        if matches!(
            kind.as_str(),
            "error" | "response.completed" | "response.failed" | "response.incomplete"
        ) {
            return events;
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn codexs_websocket_turns_are_served_and_continued_on_the_connection() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    let mut ws = socket(&gw, testkit::TEST_KEY).await.unwrap();
    let base = json!({"type": "response.create", "model": "up/m", "instructions": "be brief",
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": true, "store": false,
        "stream": true, "include": ["reasoning.encrypted_content"]});
    let with = |extra: Value| {
        let mut frame = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        frame
    };

    // Codex prepares the connection with `generate: false`: answered at once, no upstream.
    let first_input = json!([{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}]);
    let prepared = turn(
        &mut ws,
        with(json!({"input": first_input, "generate": false})),
    )
    .await;
    assert_eq!(
        kinds(&prepared),
        [
            "response.created",
            "response.in_progress",
            "response.completed"
        ]
    );
    assert_eq!(chat.request_count(), 0);
    let warm_id = prepared[2]["response"]["id"].as_str().unwrap().to_owned();

    // Then the same request continued with nothing new: the upstream gets the whole input.
    let events = turn(
        &mut ws,
        with(json!({"input": [], "previous_response_id": warm_id})),
    )
    .await;
    let names = kinds(&events);
    assert_eq!(
        &names[..2],
        ["response.created", "response.in_progress"],
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, "echo: hi");
    let sent = chat.last().json();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0]["content"], "be brief");
    assert_eq!(sent["messages"][1]["content"], "hi");
    let answer_id = events.last().unwrap()["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The next turn sends only what is new: the upstream gets the earlier turn and answer too.
    let events = turn(
        &mut ws,
        with(
            json!({"previous_response_id": answer_id, "input": [{"type": "message",
            "role": "user", "content": [{"type": "input_text", "text": "again"}]}]}),
        ),
    )
    .await;
    assert_eq!(kinds(&events).last(), Some(&"response.completed"));
    let sent = chat.last().json();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["be brief", "hi", "echo: hi", "again"], "{sent}");

    // A turn the gateway refuses is one error frame; the connection stays.
    let refused = turn(&mut ws, with(json!({"model": "up/nothing", "input": "x"}))).await;
    assert_eq!(kinds(&refused), ["error"]);
    assert_eq!(refused[0]["status"], 404);
    assert_eq!(refused[0]["error"]["type"], "invalid_request_error");
    let bad = turn(&mut ws, json!({"type": "response.cancel"})).await;
    assert_eq!(bad[0]["status"], 400);
    assert_eq!(bad[0]["error"]["param"], "type");
    // An id the connection does not know, with nothing kept: 400 naming it.
    let unknown = turn(
        &mut ws,
        with(json!({"previous_response_id": "resp_unknown", "input": "x"})),
    )
    .await;
    assert_eq!(unknown[0]["status"], 400);
    assert_eq!(unknown[0]["error"]["param"], "previous_response_id");
    drop(ws);

    // Every turn leaves a usage record, made over a WebSocket: the prepared one (no tokens,
    // no upstream), the two generated ones, and the three refused ones.
    let db = gw.shutdown().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, u16, String, i64, Option<String>)> = conn
        .prepare(
            "SELECT transport, status, outcome, completion_tokens, provider FROM usage \
             ORDER BY ts, id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |status: u16, outcome: &str, tokens: i64, provider: Option<&str>| {
        (
            "ws".to_owned(),
            status,
            outcome.to_owned(),
            tokens,
            provider.map(str::to_owned),
        )
    };
    assert_eq!(
        rows,
        [
            row(200, "ok", 0, None),
            row(200, "ok", 7, Some("up")),
            row(200, "ok", 7, Some("up")),
            row(404, "error", 0, None),
            row(400, "error", 0, None),
            row(400, "error", 0, None),
        ]
    );
}

#[tokio::test]
async fn websocket_turns_pass_through_to_a_native_upstream_and_keys_are_checked() {
    let (chat, native) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = gateway(&chat, &native).await;
    // A wrong key is refused before the upgrade, in OpenAI's shape.
    match socket(&gw, "sk-wrong").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    let events = [
        json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_native", "object": "response", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "delta": "native"}),
        json!({"type": "response.completed", "sequence_number": 2,
            "response": {"id": "resp_native", "object": "response", "status": "completed",
                "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": "native"}]}],
                "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}}}),
    ];
    let mut stream = String::new();
    for e in &events {
        stream.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    native.set_default(Behavior::Stream {
        status: 200,
        pieces: vec![Bytes::from(stream)],
        delay: std::time::Duration::ZERO,
        end: testkit::StreamEnd::Close,
    });
    let mut ws = socket(&gw, testkit::TEST_KEY).await.unwrap();
    let got = turn(
        &mut ws,
        json!({"type": "response.create", "model": "native/gpt-5", "input": "hi", "store": false}),
    )
    .await;
    assert_eq!(
        got, events,
        "the upstream's events, one frame each, unaltered"
    );
    let sent = native.last();
    assert!(sent.uri.ends_with("/v1/responses"), "{}", sent.uri);
    let body = sent.json();
    assert_eq!(body["model"], "gpt-5");
    assert_eq!(body["stream"], true);
    assert!(body.get("type").is_none(), "{body}");
    // The upgrade's beta header is about the socket, not for the upstream's HTTP.
    assert_eq!(sent.header("openai-beta"), None);

    // Messages has no WebSocket mode: 426 tells a client to use HTTP at once.
    let request = gw
        .client
        .request(http::Method::GET, "/v1/messages")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = gw.client.call(request).await;
    assert_eq!(answer.status, 426);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn gemini_thought_signatures_survive_a_stateless_round_trip_sealed() {
    use testkit::gemini::{event, gemini_provider, sse, usage};
    let gemini = MockUpstream::start().await;
    gemini.push(sse(&[event(
        json!([{"functionCall": {"name": "exec_command", "args": {"cmd": "echo hi"}},
                "thoughtSignature": "c2lnbmF0dXJlLWZyb20tZ2VtaW5p"}]),
        Some("STOP"),
        Some(usage(20, 6, 4)),
    )]));
    let gw = TestGateway::start(&config_with(&[gemini_provider(
        "gem",
        &gemini.url(),
        "      gemini-3-pro-preview: {}\n",
    )]))
    .await;
    let tool = json!({"type": "function", "name": "exec_command", "parameters":
        {"type": "object", "properties": {"cmd": {"type": "string"}}}});
    // As Codex asks: nothing kept on the gateway, the state sealed into the answer.
    let first = post(
        &gw,
        &json!({"model": "gem/gemini-3-pro-preview", "stream": true, "store": false,
                "include": ["reasoning.encrypted_content"], "tools": [tool],
                "input": [{"type": "message", "role": "user", "content": "run it"}]})
        .to_string(),
    )
    .await;
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let text = String::from_utf8_lossy(&first.body).into_owned();
    assert!(
        !text.contains("c2lnbmF0dXJlLWZyb20tZ2VtaW5p"),
        "sealed, not shown"
    );
    let done = sse_events(&first.body).last().unwrap().1["response"]["output"].clone();
    let reasoning = done
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "reasoning")
        .unwrap_or_else(|| panic!("no reasoning item: {done}"))
        .clone();
    let sealed = reasoning["encrypted_content"].as_str().unwrap().to_owned();
    assert!(sealed.starts_with("llmb1."), "{sealed}");
    let call = done
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();

    // The next turn sends the items back: Gemini gets its own signature, not a stand-in.
    gemini.push(Behavior::json(
        200,
        testkit::gemini::answer(json!([{"text": "done"}]), "STOP", usage(30, 2, 0)),
    ));
    let input = json!([
        {"type": "message", "role": "user", "content": "run it"},
        reasoning,
        {"type": "function_call", "call_id": call["call_id"], "name": "exec_command", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "hi"}
    ]);
    let second = post(
        &gw,
        &json!({"model": "gem/gemini-3-pro-preview", "store": false, "tools": [tool],
                "include": ["reasoning.encrypted_content"], "input": input})
        .to_string(),
    )
    .await;
    assert_eq!(
        second.status,
        200,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    let sent = gemini.last().json();
    let part = &sent["contents"][1]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "exec_command", "{sent}");
    assert_eq!(
        part["thoughtSignature"], "c2lnbmF0dXJlLWZyb20tZ2VtaW5p",
        "{sent}"
    );

    // An altered blob is refused.
    let mut forged = input.clone();
    let mut blob = sealed.clone();
    blob.replace_range(8..10, if &blob[8..10] == "AA" { "BB" } else { "AA" });
    forged[1]["encrypted_content"] = json!(blob);
    let refused = post(
        &gw,
        &json!({"model": "gem/gemini-3-pro-preview", "store": false, "input": forged}).to_string(),
    )
    .await;
    assert_eq!(refused.status, 400);
}
