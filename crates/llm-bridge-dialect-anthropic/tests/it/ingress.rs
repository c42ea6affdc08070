//! Ingress: Messages requests (a real Claude Code turn) → pivot, pivot answers and real
//! OpenAI chunk streams → Messages answers and event sequences.

use llm_bridge_core::{Error, ErrorKind};
use llm_bridge_dialect_anthropic::{
    ChunkTranslator, EventWriter, chat_request, error_response, messages_response,
    usage_from_message, usage_from_message_delta, usage_from_message_start,
};
use serde_json::{Value, json};

use crate::{fixture, fixture_json, sse_events};

#[test]
fn claude_code_first_turn_becomes_a_pivot_request() {
    let capture = fixture_json("claude-code-2.1.328.first-turn.json");
    let body = capture["body"].to_string();
    let t = chat_request(body.as_bytes()).unwrap();
    let r = t.request.body();
    assert_eq!(t.request.model(), "claude-sonnet-4-5");
    assert!(t.request.stream());
    assert_eq!(r["max_tokens"], 32000);
    assert_eq!(r["reasoning_effort"], "high", "budget 31999");
    assert_eq!(r["user"], capture["body"]["metadata"]["user_id"]);
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 12);
    assert_eq!(tools[1]["type"], "function");
    assert_eq!(tools[1]["function"]["name"], "Bash");
    assert_eq!(
        tools[1]["function"]["parameters"],
        capture["body"]["tools"][1]["input_schema"]
    );
    let messages = t.request.messages();
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("x-anthropic-billing-header"));
    assert!(system.contains("You are a Claude agent, built on Anthropic's Claude Agent SDK."));
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(messages[1]["content"].as_array().unwrap().len(), 9);
    assert!(
        !t.request
            .to_bytes()
            .windows(13)
            .any(|w| w == b"cache_control")
    );
    for d in [
        "cache_control",
        "context_management",
        "thinking.display",
        "tools[].defer_loading",
    ] {
        assert!(
            t.dropped.iter().any(|x| x == d),
            "{d} not in {:?}",
            t.dropped
        );
    }
}

#[test]
fn message_blocks_tools_and_choices() {
    let body = json!({
        "model": "gpt-4o", "max_tokens": 50, "stop_sequences": ["X"], "temperature": 0.5,
        "top_p": 0.9, "top_k": 5, "service_tier": "auto",
        "system": "sys",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://e.com/i.png"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVB"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
                    {"type": "text", "text": "failed"},
                    {"type": "image", "source": {"type": "url", "url": "https://e.com/s.png"}}]},
                {"type": "text", "text": "go on"}]}],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "output_config": {"effort": "low"},
    });
    let t = chat_request(body.to_string().as_bytes()).unwrap();
    let r = t.request.body();
    let m = t.request.messages();
    assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
    assert_eq!(
        m[1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAA"
    );
    assert_eq!(
        m[1]["content"][2]["image_url"]["url"],
        "https://e.com/i.png"
    );
    assert_eq!(
        m[1]["content"][3]["file"]["file_data"],
        "data:application/pdf;base64,JVB"
    );
    assert_eq!(m[2]["content"], "calling");
    assert_eq!(m[2]["reasoning_content"], "hmm");
    assert_eq!(
        m[2]["tool_calls"][0]["function"],
        json!({"name": "f", "arguments": "{\"a\":1}"})
    );
    assert_eq!(
        m[2]["extra_content"]["anthropic"]["thinking_blocks"][1]["data"],
        "opaque"
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "failed"})
    );
    assert_eq!(m[4]["role"], "user");
    assert_eq!(
        m[4]["content"][0]["image_url"]["url"],
        "https://e.com/s.png"
    );
    assert_eq!(m[4]["content"][1]["text"], "go on");
    assert_eq!(r["tools"].as_array().unwrap().len(), 1);
    assert_eq!(r["tool_choice"], "required");
    assert_eq!(r["parallel_tool_calls"], false);
    assert_eq!(r["stop"], json!(["X"]));
    assert_eq!(r["reasoning_effort"], "low");
    for d in [
        "top_k",
        "service_tier",
        "tools[1] (web_search_20250305)",
        "messages[1].content[4] (server_tool_use)",
    ] {
        assert!(
            t.dropped.iter().any(|x| x == d),
            "{d} not in {:?}",
            t.dropped
        );
    }
    assert!(chat_request(b"{").is_err());
    assert_eq!(
        chat_request(br#"{"model":"m","messages":[]}"#)
            .unwrap_err()
            .status(),
        400
    );
    assert_eq!(
        chat_request(br#"{"model":"m","messages":[{"content":"x"}]}"#)
            .unwrap_err()
            .status(),
        400
    );
}

/// Parses written events and checks Anthropic's sequence rules; returns (name, data).
fn check_sequence(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"));
    let events: Vec<(String, Value)> = sse_events(text)
        .into_iter()
        .map(|(n, d)| (n, serde_json::from_str::<Value>(&d).unwrap()))
        .collect();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(events.first().unwrap().0, "message_start");
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (name, data) in &events {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "one block at a time");
                assert_eq!(data["index"], next);
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            _ => {}
        }
    }
    let last = events.last().unwrap();
    if last.0 != "error" {
        assert_eq!(open, None, "every block closed");
        assert_eq!(last.0, "message_stop");
        assert_eq!(events[events.len() - 2].0, "message_delta");
    }
    events
}

fn write(chunks: &[String]) -> Vec<(String, Value)> {
    let mut w = EventWriter::new("claude-client");
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&w.push(c.as_bytes()).unwrap());
    }
    out.extend_from_slice(&w.finish());
    assert!(w.is_done());
    check_sequence(&out)
}

fn openai_stream(name: &str) -> Vec<String> {
    sse_events(&fixture(name))
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d != "[DONE]")
        .collect()
}

fn joined(events: &[(String, Value)], delta_type: &str, field: &str) -> String {
    events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == delta_type)
        .filter_map(|(_, d)| d["delta"][field].as_str())
        .collect()
}

#[test]
fn openai_text_stream_as_events() {
    let events = write(&openai_stream("openai-stream-text.sse"));
    assert_eq!(events[0].1["message"]["model"], "claude-client");
    assert!(
        events[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    assert!(
        joined(&events, "text_delta", "text")
            .starts_with("I'm unable to provide real-time weather")
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(delta["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn openai_parallel_tool_calls_as_tool_use_blocks() {
    let events = write(&openai_stream("openai-stream-multiple-tools.sse"));
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["type"], "tool_use");
    assert_eq!(starts[0]["id"], "call_JMW1whyEaYG438VE1OIflxA2");
    assert_eq!(starts[0]["name"], "GetWeatherArgs");
    assert_eq!(starts[1]["name"], "get_stock_price");
    let first: String = events
        .iter()
        .filter(|(_, d)| d["index"] == 0 && d["delta"]["type"] == "input_json_delta")
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap()["city"],
        "Edinburgh"
    );
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 149, "output_tokens": 60, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
}

#[test]
fn openai_refusal_stream() {
    let events = write(&openai_stream("openai-stream-refusal.sse"));
    assert_eq!(
        joined(&events, "text_delta", "text"),
        "I'm sorry, I can't assist with that request."
    );
}

#[test]
fn anthropic_stream_through_the_pivot_and_back() {
    // Anthropic events → pivot chunks → Anthropic events: the blocks, signatures and usage survive.
    let mut t = ChunkTranslator::new("m");
    let mut chunks = Vec::new();
    for (event, data) in sse_events(&fixture("vercel-clear-thinking.chunks.txt")) {
        chunks.extend(t.push(&event, data.as_bytes()).unwrap());
    }
    let chunks: Vec<String> = chunks
        .iter()
        .map(|c| String::from_utf8(c.data.to_vec()).unwrap())
        .collect();
    let events = write(&chunks);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"]["type"])
        .collect();
    assert_eq!(starts, ["thinking", "text"]);
    assert_eq!(
        joined(&events, "thinking_delta", "thinking"),
        "The previous result was 925. Now I need to divide that by 5.\n\n925 ÷ 5 = 185"
    );
    assert!(joined(&events, "signature_delta", "signature").starts_with("EvQBCkYICxgCKkAxhD4N"));
    assert_eq!(joined(&events, "text_delta", "text"), "925 ÷ 5 = 185");
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 53);
    assert_eq!(events[events.len() - 2].1["usage"]["input_tokens"], 69);
}

#[test]
fn writer_ends_cut_streams_and_errors_with_an_error_event() {
    let mut w = EventWriter::new("m");
    let mut out = w
        .push(br#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"hi"}}]}"#)
        .unwrap()
        .to_vec();
    out.extend_from_slice(&w.finish());
    let events = check_sequence(&out);
    assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");
    assert!(w.finish().is_empty());

    let mut w = EventWriter::new("m");
    let mut out = w
        .push(br#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#)
        .unwrap()
        .to_vec();
    out.extend_from_slice(&w.error_event(&Error::new(ErrorKind::UpstreamRateLimited, "slow")));
    let events = check_sequence(&out);
    assert_eq!(
        events.last().unwrap().1,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    );

    // Finish reason without a usage chunk: closed at the end of the upstream stream.
    let mut w = EventWriter::new("m");
    let mut out = w
        .push(br#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]}"#)
        .unwrap()
        .to_vec();
    out.extend_from_slice(&w.finish());
    let events = check_sequence(&out);
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "max_tokens"
    );
}

#[test]
fn completion_as_messages_answer() {
    let body = fixture("openai-multiple-tools.json");
    let out: Value =
        serde_json::from_slice(&messages_response(body.as_bytes(), "claude-client").unwrap())
            .unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["role"], "assistant");
    assert_eq!(out["id"], "msg_ABfvyvfNWKcl7Ohqos4UFrmMs1v4C");
    assert_eq!(out["model"], "claude-client");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["content"][0],
        json!({"type": "tool_use", "id": "call_fdNz3vOBKYgOIpMdWotB9MjY",
        "name": "GetWeatherArgs", "input": {"city": "Edinburgh", "country": "GB", "units": "c"}})
    );
    assert_eq!(
        out["content"][1]["input"],
        json!({"ticker": "AAPL", "exchange": "NASDAQ"})
    );
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 149, "output_tokens": 60, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    let body = json!({"id": "chatcmpl-9", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "42", "reasoning_content": "think"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}}});
    let out: Value =
        serde_json::from_slice(&messages_response(body.to_string().as_bytes(), "m").unwrap())
            .unwrap();
    assert_eq!(
        out["content"],
        json!([{"type": "thinking", "thinking": "think", "signature": ""}, {"type": "text", "text": "42"}])
    );
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["usage"]["input_tokens"], 40);
    assert_eq!(out["usage"]["cache_read_input_tokens"], 60);
    assert!(messages_response(b"nope", "m").is_err());
}

#[test]
fn errors_in_anthropic_shape() {
    let (status, body) = error_response(&Error::new(ErrorKind::RateLimited, "key over its limit"));
    assert_eq!(status, 429);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "key over its limit"}})
    );
}

#[test]
fn pass_through_metering_reads_native_events() {
    let events = sse_events(&fixture("sdk-python-stream-tool_use_response.txt"));
    let mut usage = usage_from_message_start(events[0].1.as_bytes()).unwrap();
    for (_, data) in &events[1..] {
        if let Some(u) = usage_from_message_delta(data.as_bytes()) {
            usage.merge(&u);
        }
    }
    let u = usage.to_usage();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (377, 65));
    let mut recorded = fixture_json("vercel-clear-thinking.json");
    recorded["usage"]["cache_read_input_tokens"] = json!(10);
    recorded["usage"]["cache_creation_input_tokens"] = json!(3);
    let u = usage_from_message(recorded.to_string().as_bytes()).unwrap();
    assert_eq!(
        (u.cache_read_input_tokens, u.cache_write_tokens()),
        (Some(10), 3)
    );
    assert_eq!(u.to_usage().prompt_tokens, 82);
}
