//! Egress: pivot requests → Messages requests, and recorded Anthropic answers, streams and
//! errors → the pivot, compared with what an OpenAI client must receive.

use std::time::Duration;

use llm_bridge_core::{ChatRequest, ErrorKind};
use llm_bridge_dialect_anthropic::{
    ChunkTranslator, JSON_OUTPUT_TOOL, cache_write_tokens, chat_completion, chat_request,
    error_from_status, messages_request,
};
use serde_json::{Value, json};

use crate::{fixture, fixture_json, sse_events};

fn pivot(body: Value) -> ChatRequest {
    ChatRequest::from_value(body).unwrap()
}

fn completion(body: &Value) -> Value {
    let r = chat_completion(body.to_string().as_bytes(), "claude-test").unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

/// A recorded stream through the translator; checks the chunk stream contract.
fn streamed(name: &str) -> Vec<Value> {
    let mut t = ChunkTranslator::new("claude-test");
    let mut chunks = Vec::new();
    for (event, data) in sse_events(&fixture(name)) {
        chunks.extend(t.push(&event, data.as_bytes()).unwrap());
    }
    chunks.extend(t.finish().unwrap());
    assert!(t.is_done());
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_slice(&c.data).unwrap())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["model"], "claude-test");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // Exactly one finish reason, on the chunk before the usage chunk.
    let finishes: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap())
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"].is_object());
    chunks
}

fn deltas(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

fn finish(chunks: &[Value]) -> &Value {
    &chunks[chunks.len() - 2]["choices"][0]["finish_reason"]
}

#[test]
fn recorded_tool_loop_requests_are_rebuilt_from_the_pivot() {
    // The SDK's two requests, as an OpenAI client would send the same conversation.
    let recording = fixture_json("sdk-python-recording-tool-loop.json");
    let first = pivot(json!({"model": "x", "max_tokens": 1024, "messages": [
        {"role": "user", "content": "What is the weather in SF?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": recording[0]["request"]["body"]["tools"][0]["description"],
            "parameters": recording[0]["request"]["body"]["tools"][0]["input_schema"]}}]}));
    let out = messages_request(&first, "claude-haiku-4-5", 4096).unwrap();
    let sent = &recording[0]["request"]["body"];
    assert_eq!(out["tools"], sent["tools"]);
    assert_eq!(out["max_tokens"], 1024);
    assert_eq!(
        out["messages"][0]["content"][0]["text"],
        "What is the weather in SF?"
    );

    // The recorded answer → pivot → sent back with the tool's error result.
    let answer = completion(&recording[0]["response"]["body"]);
    let msg = &answer["choices"][0]["message"];
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["tool_calls"][0]["id"], "toolu_01A9HHF5Ezy3oBrKmSgfASm9");
    assert_eq!(
        serde_json::from_str::<Value>(
            msg["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"location": "San Francisco, CA", "units": "f"})
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 656);
    assert_eq!(answer["usage"]["completion_tokens"], 74);
    let second = pivot(json!({"model": "x", "messages": [
        {"role": "user", "content": "What is the weather in SF?"},
        msg,
        {"role": "tool", "tool_call_id": "toolu_01A9HHF5Ezy3oBrKmSgfASm9",
         "content": "RuntimeError('Unexpected error, try again')"}]}));
    let out = messages_request(&second, "claude-haiku-4-5", 4096).unwrap();
    let sent = &recording[1]["request"]["body"]["messages"];
    assert_eq!(
        out["messages"][1]["content"][0]["input"],
        sent[1]["content"][0]["input"]
    );
    assert_eq!(
        out["messages"][1]["content"][0]["id"],
        sent[1]["content"][0]["id"]
    );
    assert_eq!(
        out["messages"][2]["content"][0]["tool_use_id"],
        sent[2]["content"][0]["tool_use_id"]
    );
    assert_eq!(
        out["messages"][2]["content"][0]["content"],
        sent[2]["content"][0]["content"]
    );
    assert_eq!(out["max_tokens"], 4096);
    let text = completion(&recording[1]["response"]["body"]);
    assert_eq!(text["choices"][0]["finish_reason"], "stop");
    assert!(
        text["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("I apologize")
    );
}

#[test]
fn request_parameters() {
    let req = pivot(json!({"model": "x", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
        {"role": "user", "content": "and this"},
        {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "user", "content": "next"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 100, "max_tokens": 5, "stop": ["END", " "],
        "temperature": 1.5, "top_p": 0.9, "user": "u-1", "stream": true}));
    let out = messages_request(&req, "claude-sonnet-4-5", 4096).unwrap();
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}])
    );
    let m = out["messages"].as_array().unwrap();
    assert_eq!(
        m.iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["user", "assistant", "user"]
    );
    assert_eq!(
        m[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBO"})
    );
    assert_eq!(
        m[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/a.jpg"})
    );
    assert_eq!(m[0]["content"][3]["text"], "and this");
    assert_eq!(
        m[1]["content"][1],
        json!({"type": "tool_use", "id": "c1", "name": "f", "input": {}})
    );
    assert_eq!(
        m[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "c1", "content": "done"})
    );
    assert_eq!(m[2]["content"][1]["text"], "next");
    assert_eq!(
        out["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
    );
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["temperature"], 1.0);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(out["stream"], true);
    assert!(out.get("thinking").is_none());
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget_below_max_tokens() {
    let req = |extra: Value| {
        let mut body = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        messages_request(&pivot(body), "m", 4096).unwrap()
    };
    let out = req(json!({"reasoning_effort": "medium", "max_tokens": 20000}));
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(out["max_tokens"], 20000);
    assert!(
        out.get("temperature").is_none(),
        "thinking refuses a temperature"
    );
    let out = req(json!({"reasoning_effort": "high"}));
    assert_eq!(out["thinking"]["budget_tokens"], 24576);
    assert_eq!(out["max_tokens"], 24576 + 4096);
    assert!(
        req(json!({"reasoning_effort": "none"}))
            .get("thinking")
            .is_none()
    );
    assert_eq!(
        req(json!({"reasoning_effort": "low"}))["thinking"]["budget_tokens"],
        2048
    );
    let bad = pivot(
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "huge"}),
    );
    assert_eq!(
        messages_request(&bad, "m", 1).unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
}

#[test]
fn response_format_is_a_forced_tool_and_comes_back_as_text() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let req = pivot(
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "high",
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
    );
    let out = messages_request(&req, "m", 4096).unwrap();
    assert_eq!(out["tools"][0]["name"], JSON_OUTPUT_TOOL);
    assert_eq!(out["tools"][0]["input_schema"], schema);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": JSON_OUTPUT_TOOL})
    );
    assert!(
        out.get("thinking").is_none(),
        "forced tools and thinking exclude each other"
    );

    // The stream of such an answer: the tool's JSON arrives as content.
    let mut t = ChunkTranslator::new("m");
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":5,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"llm_bridge_json_output","input":{}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":" \"Paris\"}"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let chunks: Vec<Value> = events
        .iter()
        .flat_map(|e| t.push("", e.as_bytes()).unwrap())
        .map(|c| serde_json::from_slice(&c.data).unwrap())
        .collect();
    assert_eq!(deltas(&chunks, "content"), r#"{"city": "Paris"}"#);
    assert_eq!(*finish(&chunks), "stop");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none())
    );
}

#[test]
fn unsupported_requests_are_400() {
    for extra in [
        json!({"n": 2}),
        json!({"logprobs": true}),
        json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
        json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
    ] {
        let mut body = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let e = messages_request(&pivot(body), "m", 10).unwrap_err();
        assert_eq!(e.status(), 400, "{extra}");
    }
}

#[test]
fn thinking_answer_keeps_its_signature_for_the_next_turn() {
    let recorded = fixture_json("vercel-clear-thinking.json");
    let answer = completion(&recorded);
    let msg = &answer["choices"][0]["message"];
    assert_eq!(msg["content"], "925 ÷ 5 = 185");
    assert_eq!(msg["reasoning_content"], "925 divided by 5 = 185");
    assert_eq!(
        msg["extra_content"]["anthropic"]["thinking_blocks"][0],
        recorded["content"][0]
    );
    assert_eq!(answer["id"], "chatcmpl-msg_01XrsJCi8CQoLcnnWdY8RsJz");
    // The client sends the message back as it got it: the block returns byte for byte.
    let next = pivot(json!({"model": "x", "messages": [
        {"role": "user", "content": "divide by 5"}, msg, {"role": "user", "content": "thanks"}]}));
    let out = messages_request(&next, "m", 4096).unwrap();
    assert_eq!(out["messages"][1]["content"][0], recorded["content"][0]);
    assert_eq!(out["messages"][1]["content"][1], recorded["content"][1]);
}

#[test]
fn cache_reads_and_writes_are_counted_apart() {
    let mut recorded = fixture_json("vercel-clear-thinking.json");
    recorded["usage"]["cache_read_input_tokens"] = json!(1000);
    recorded["usage"]["cache_creation_input_tokens"] = json!(200);
    let body = chat_completion(recorded.to_string().as_bytes(), "m")
        .unwrap()
        .body;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], 69 + 1000 + 200);
    assert_eq!(answer["usage"]["completion_tokens"], 33);
    assert_eq!(answer["usage"]["total_tokens"], 69 + 1000 + 200 + 33);
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cached_tokens"],
        1000
    );
    assert_eq!(cache_write_tokens(&body), Some(200));
    let usage = llm_bridge_core::completion_usage(&body).unwrap().unwrap();
    assert_eq!((usage.prompt_tokens, usage.cached_tokens), (1269, 1000));
}

#[test]
fn stream_with_text_and_a_tool_call() {
    let chunks = streamed("sdk-python-stream-tool_use_response.txt");
    assert_eq!(chunks[0]["id"], "chatcmpl-msg_019Q1hrJbZG26Fb9BQhrkHEr");
    assert_eq!(
        deltas(&chunks, "content"),
        "I'll check the current weather in Paris for you."
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["id"], "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"location": "Paris"}"#);
    assert_eq!(*finish(&chunks), "tool_calls");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(377), Some(65))
    );
}

#[test]
fn stream_with_thinking_sends_the_signed_block_when_it_ends() {
    let chunks = streamed("vercel-clear-thinking.chunks.txt");
    assert_eq!(
        deltas(&chunks, "reasoning_content"),
        "The previous result was 925. Now I need to divide that by 5.\n\n925 ÷ 5 = 185"
    );
    assert_eq!(deltas(&chunks, "content"), "925 ÷ 5 = 185");
    let blocks: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["extra_content"]["anthropic"]["thinking_blocks"].get(0)
        })
        .collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0]["index"], 0);
    assert!(
        blocks[0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("EvQBCkYICxgCKkAxhD4N")
    );
    assert_eq!(blocks[0]["thinking"], deltas(&chunks, "reasoning_content"));
    assert_eq!(*finish(&chunks), "stop");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 53);
}

#[test]
fn refusals_server_tools_and_empty_tool_input() {
    let chunks = streamed("sdk-python-stream-refusal_response.txt");
    assert_eq!(*finish(&chunks), "content_filter");
    let chunks = streamed("sdk-ts-stream-a-refusal.sse");
    assert_eq!(*finish(&chunks), "content_filter");
    assert!(!deltas(&chunks, "reasoning_content").is_empty());
    // A web search ran at Anthropic: no tool call reaches the client, the text does.
    let chunks = streamed("sdk-ts-stream-a-toolrefusal.sse");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none())
    );
    assert!(deltas(&chunks, "content").starts_with("Here's a summary"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 67);
    let chunks = streamed("vercel-tool-no-args.chunks.txt");
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .unwrap();
    assert_eq!(call["function"]["name"], "updateIssueList");
    assert_eq!(*finish(&chunks), "tool_calls");
}

#[test]
fn stream_errors_and_cut_streams() {
    let mut t = ChunkTranslator::new("m");
    t.push(
        "message_start",
        br#"{"type":"message_start","message":{"id":"msg_1"}}"#,
    )
    .unwrap();
    let e = t
        .push(
            "error",
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    assert!(e.kind().is_retryable());
    assert!(t.push("ping", br#"{"type":"ping"}"#).unwrap().is_empty());
    let mut t = ChunkTranslator::new("m");
    t.push(
        "message_start",
        br#"{"type":"message_start","message":{"id":"msg_1"}}"#,
    )
    .unwrap();
    // Cut before a stop reason: a truncated answer, not a complete one.
    assert_eq!(t.finish().unwrap_err().kind(), ErrorKind::UpstreamTruncated);
}

#[test]
fn recorded_errors() {
    let e = error_from_status(
        "claude",
        400,
        None,
        fixture("errors-400-invalid_request_error.json").as_bytes(),
    );
    assert_eq!(e.kind(), ErrorKind::UpstreamRejected(400));
    assert_eq!(e.error_type(), "invalid_request_error");
    assert!(
        e.message()
            .starts_with("This model does not support effort level")
    );
    let e = error_from_status(
        "claude",
        404,
        None,
        fixture("errors-404-not_found_error.json").as_bytes(),
    );
    assert_eq!(e.status(), 404);
    assert_eq!(e.message(), "model: claude-does-not-exist");
    let body = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-123"}}"#;
    let e = error_from_status("claude", 401, None, body);
    assert_eq!(e.kind(), ErrorKind::UpstreamAuth);
    assert!(!e.message().contains("sk-ant"));
    assert_eq!(e.provider(), Some("claude"));
    let e = error_from_status(
        "claude",
        403,
        None,
        br#"{"type":"error","error":{"type":"permission_error","message":"no"}}"#,
    );
    assert_eq!(e.status(), 502);
    let e = error_from_status(
        "claude",
        413,
        None,
        br#"{"type":"error","error":{"type":"request_too_large","message":"big"}}"#,
    );
    assert_eq!(e.status(), 413);
    let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let e = error_from_status("claude", 429, Some(Duration::from_secs(7)), body);
    assert_eq!(
        (e.kind(), e.retry_after()),
        (ErrorKind::UpstreamRateLimited, Some(Duration::from_secs(7)))
    );
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let e = error_from_status("claude", 529, Some(Duration::from_secs(2)), body);
    assert_eq!(e.status(), 502);
    assert!(e.kind().is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    let e = error_from_status(
        "claude",
        500,
        None,
        br#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#,
    );
    assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
    assert!(e.message().contains("Internal"));
}

#[test]
fn ingress_then_egress_keeps_thinking_signatures_byte_equal() {
    // Claude Code's second turn: signed thinking echoed back with the tool call.
    let raw = fixture("litellm-frontier-turn2-tool-loop.request.json");
    let original: Value = serde_json::from_str(&raw).unwrap();
    let translated = chat_request(raw.as_bytes()).unwrap();
    let out = messages_request(&translated.request, "claude-x", 4096).unwrap();
    let sent_back = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    let before = original["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(
        sent_back["content"][0].to_string(),
        before["content"][0].to_string()
    );
    assert_eq!(sent_back["content"][1], before["content"][1]);
    assert!(raw.contains(r#""signature": "sig_probe_1""#));
    // The tool result follows in a user turn.
    let results: Vec<&Value> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results[0]["tool_use_id"], "toolu_read_1");
    assert_eq!(results[0]["content"], "1\tPROBE\n2\t");
}
