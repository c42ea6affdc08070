//! Real Gemini recordings (tests/fixtures/, see SOURCES.md) translated to OpenAI's format and
//! compared field by field with what an OpenAI client must receive.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use llm_bridge_core::{ChatRequest, Error, ErrorKind};
use llm_bridge_http::SseDecoder;
use llm_bridge_provider_gemini::{ChunkTranslator, completion, error_from_status, request_body};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unary(name: &str) -> Value {
    let bytes = completion(fixture(name).as_bytes(), "gemini-test").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The events of a recorded stream, decoded as the provider decodes them.
fn events(text: &str) -> Vec<Bytes> {
    let mut decoder = SseDecoder::default();
    decoder.push(text.as_bytes());
    let mut out = Vec::new();
    while let Some(event) = decoder.next_event().unwrap() {
        out.push(event.data);
    }
    out.extend(decoder.finish().map(|e| e.data));
    out
}

fn streamed(name: &str) -> Vec<Value> {
    let mut t = ChunkTranslator::new("gemini-test");
    let mut chunks = Vec::new();
    for data in events(&fixture(name)) {
        chunks.extend(t.push(&data).unwrap());
    }
    chunks.extend(t.finish().unwrap());
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_slice(c).unwrap())
        .collect();
    // The stream contract: one id, created and model; a role first; every chunk a chunk.
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["created"], chunks[0]["created"]);
        assert_eq!(c["model"], chunks[0]["model"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    chunks
}

fn delta_text(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().clone())
        .filter_map(|choice| choice["delta"][field].as_str().map(str::to_owned))
        .collect()
}

fn usage(prompt: u64, completion: u64, total: u64, cached: u64, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    })
}

#[test]
fn basic_reply() {
    let out = unary("googleai-unary-success-basic-reply-short.json");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "gemini-2.0-flash");
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(out["choices"].as_array().unwrap().len(), 1);
    let choice = &out["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "Google's headquarters, also known as the Googleplex, is located in **Mountain View, California**.\n"})
    );
    assert_eq!(out["usage"], usage(7, 22, 29, 0, 0));
}

#[test]
fn thinking_reply_has_reasoning_content_and_reasoning_tokens() {
    let out = unary("googleai-unary-success-thinking-reply-thought-summary.json");
    assert_eq!(out["id"], "chatcmpl-2pmHaJqQEoqC-8YP6eStyAY");
    assert_eq!(out["model"], "gemini-2.5-flash");
    let m = &out["choices"][0]["message"];
    assert_eq!(m["content"], "Mountain View");
    assert!(
        m["reasoning_content"]
            .as_str()
            .unwrap()
            .starts_with("**Thinking About Google's Headquarters**")
    );
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["usage"], usage(14, 26, 40, 0, 24));
}

#[test]
fn thinking_function_call_carries_its_signature() {
    let raw: Value = serde_json::from_str(&fixture(
        "googleai-unary-success-thinking-function-call-thought-summary-signature.json",
    ))
    .unwrap();
    let signature = raw["candidates"][0]["content"]["parts"][1]["thoughtSignature"].clone();
    let out = unary("googleai-unary-success-thinking-function-call-thought-summary-signature.json");
    assert_eq!(out["model"], "gemini-2.5-pro");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let m = &choice["message"];
    assert_eq!(m["content"], Value::Null);
    assert!(
        m["reasoning_content"]
            .as_str()
            .unwrap()
            .starts_with("**Thinking Through the New Year's Eve Calculation**")
    );
    let calls = m["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(
        calls[0]["function"],
        json!({"name": "now", "arguments": "{}"})
    );
    assert_eq!(
        calls[0]["extra_content"],
        json!({"google": {"thought_signature": signature}})
    );
    assert_eq!(out["usage"], usage(38, 509, 547, 0, 501));
}

#[test]
fn thinking_function_call_stream() {
    let chunks =
        streamed("googleai-streaming-success-thinking-function-call-thought-summary-signature.txt");
    assert_eq!(chunks.len(), 5, "{chunks:#?}");
    assert_eq!(chunks[0]["id"], "chatcmpl-48SHaPHpHKbG-8YPtZCawAk");
    assert_eq!(chunks[0]["model"], "gemini-2.5-flash");
    assert!(
        chunks[0]["choices"][0]["delta"]["reasoning_content"]
            .as_str()
            .unwrap()
            .starts_with("**Calculating the Days**")
    );
    assert!(
        chunks[1]["choices"][0]["delta"]["reasoning_content"]
            .as_str()
            .unwrap()
            .starts_with("**Determining the Approach**")
    );
    assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
    let call = &chunks[2]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"], json!({"name": "now", "arguments": "{}"}));
    assert!(
        call["extra_content"]["google"]["thought_signature"]
            .as_str()
            .unwrap()
            .starts_with("CiIBVKhc7vB+")
    );
    assert_eq!(delta_text(&chunks, "content"), "");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"], usage(38, 174, 212, 0, 168));
}

#[test]
fn basic_stream() {
    let chunks = streamed("googleai-streaming-success-basic-reply-short.txt");
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[0]["model"], "gemini-2.0-flash");
    assert_eq!(
        delta_text(&chunks, "content"),
        "The capital of Wyoming is **Cheyenne**.\n"
    );
    for c in &chunks[..3] {
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(
        chunks[3]["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(chunks[4]["usage"], usage(7, 10, 17, 0, 0));
}

#[test]
fn parallel_calls_get_distinct_ids() {
    let out = unary("vertexai-unary-success-function-call-parallel-calls.json");
    let calls = out["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    let args: Vec<&str> = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [r#"{"y":1,"x":2}"#, r#"{"y":3,"x":4}"#, r#"{"y":5,"x":6}"#]
    );
    assert!(calls.iter().all(|c| c["function"]["name"] == "sum"));
    let mut ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert!(out.get("usage").is_none(), "no usageMetadata, no usage");
}

#[test]
fn streamed_function_call() {
    let chunks = streamed("vertexai-streaming-success-function-call-short.txt");
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(
        call["function"],
        json!({"name": "getTemperature", "arguments": "{\"city\":\"San Jose\"}"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn implicit_caching_reports_cached_and_reasoning_tokens() {
    let out = unary("vertexai-unary-success-implicit-caching.json");
    assert_eq!(out["usage"], usage(12013, 88, 12101, 11243, 73));
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "Red Riding Hood is looking for **directions** in the forest."
    );
}

#[test]
fn code_execution_is_shown_and_tool_prompt_tokens_counted() {
    let out = unary("googleai-unary-success-code-execution.json");
    let content = out["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("```python\nprime_numbers = [2, 3, 5, 7, 11]"));
    assert!(content.contains("```\nsum_of_primes=28\n\n```"));
    assert!(content.ends_with("2 + 3 + 5 + 7 + 11 = 28"));
    assert_eq!(out["usage"], usage(181, 182, 363, 0, 86));
}

#[test]
fn unknown_finish_reasons_are_surfaced_not_stop() {
    let out = unary("vertexai-unary-failure-unknown-enum-finish-reason.json");
    assert_eq!(out["choices"][0]["finish_reason"], "fake_new_finish_reason");
    assert_eq!(out["choices"][0]["message"]["content"], "Some text");
}

#[test]
fn safety_stops_are_content_filter() {
    let out = unary("googleai-unary-failure-finish-reason-safety.json");
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "Safety error incoming in 5, 4, 3, 2..."
    );
    assert_eq!(out["usage"], usage(7, 20, 27, 0, 0));

    let chunks = streamed("vertexai-streaming-failure-recitation-no-content.txt");
    assert_eq!(
        delta_text(&chunks, "content"),
        "Copyrighted text goes hereMore copyrighted text"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "content_filter"
    );
}

#[test]
fn blocked_prompts_are_content_filter_answers() {
    let out = unary("vertexai-unary-failure-prompt-blocked-safety.json");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["refusal"],
        "Gemini blocked the prompt (SAFETY)"
    );

    let chunks = streamed("googleai-streaming-failure-prompt-blocked-safety.txt");
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "refusal": "Gemini blocked the prompt (SAFETY)"})
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn malformed_content_is_an_upstream_error() {
    let e = completion(
        fixture("vertexai-unary-failure-malformed-content.json").as_bytes(),
        "m",
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UpstreamBadResponse);
    assert_eq!(e.status(), 502);
}

fn error(status: u16, name: &str) -> Error {
    error_from_status(
        "gemini",
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        fixture(name).as_bytes(),
    )
}

#[test]
fn recorded_errors() {
    let e = error(400, "googleai-unary-failure-api-key.json");
    assert_eq!((e.kind(), e.status()), (ErrorKind::UpstreamAuth, 502));
    assert!(!e.message().contains("key1234"));

    let e = error(
        403,
        "googleai-unary-failure-generativelanguage-api-not-enabled.json",
    );
    assert_eq!((e.kind(), e.status()), (ErrorKind::UpstreamAuth, 502));
    assert!(
        e.message()
            .contains("Generative Language API has not been used")
    );

    let e = error(404, "googleai-unary-failure-unknown-model.json");
    assert_eq!(e.status(), 404);
    assert!(
        e.message()
            .starts_with("models/gemini-5.0-flash is not found")
    );
    assert_eq!(e.code(), Some("NOT_FOUND"));

    let e = error(429, "errors-429-resource-exhausted.json");
    assert_eq!(e.status(), 429);
    assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(26)));
    assert!(e.message().starts_with("You exceeded your current quota"));

    let e = error(429, "vertexai-unary-failure-quota-exceeded.json");
    assert_eq!(e.kind(), ErrorKind::UpstreamRateLimited);
    assert_eq!(e.retry_after(), None);
}

/// Lower-cases Gemini's OpenAPI type names (`OBJECT`) into JSON Schema's (`object`).
fn json_schema(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "type" {
                    if let Some(t) = child.as_str() {
                        *child = Value::from(t.to_ascii_lowercase());
                    }
                } else {
                    *child = json_schema(child.take());
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = json_schema(item.take());
            }
        }
        _ => {}
    }
    v
}

/// The cookbook's multi-turn function-calling request, written the OpenAI way, translates to
/// the request Google's own notebook sends (function results now go in `user` turns, which
/// the current API prefers to the notebook's `function` role), and its recorded answer is a
/// tool call.
#[test]
fn cookbook_function_calling_round_trip() {
    let pair: Value =
        serde_json::from_str(&fixture("cookbook-Function_calling_REST.cell17.json")).unwrap();
    let recorded = &pair["request"];
    let declarations = recorded["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap();
    let tools: Vec<Value> = declarations
        .iter()
        .map(|d| {
            json!({"type": "function", "function": {
                "name": d["name"], "description": d["description"],
                "parameters": json_schema(d["parameters"].clone())}})
        })
        .collect();
    let turns = recorded["contents"].as_array().unwrap();
    let call = &turns[1]["parts"][0]["functionCall"];
    let result = &turns[2]["parts"][0]["functionResponse"];
    let openai = json!({
        "model": "gemini/gemini-2.5-flash",
        "messages": [
            {"role": "user", "content": turns[0]["parts"][0]["text"]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": call["name"], "arguments": call["args"].to_string()}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": result["response"].to_string()},
            {"role": "assistant", "content": turns[3]["parts"][0]["text"]},
            {"role": "user", "content": turns[4]["parts"][0]["text"]}
        ],
        "tools": tools
    });
    let request = ChatRequest::from_value(openai).unwrap();
    let sent: Value =
        serde_json::from_slice(&request_body(&request, "gemini-2.5-flash").unwrap()).unwrap();
    let sent_turns = sent["contents"].as_array().unwrap();
    assert_eq!(sent_turns.len(), turns.len());
    for (i, (ours, theirs)) in sent_turns.iter().zip(turns).enumerate() {
        let role = theirs["role"].as_str().unwrap();
        let expected_role = if role == "function" { "user" } else { role };
        assert_eq!(ours["role"], expected_role, "turn {i}");
        assert_eq!(ours["parts"], theirs["parts"], "turn {i}");
    }
    for (ours, theirs) in sent["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(declarations)
    {
        assert_eq!(ours["name"], theirs["name"]);
        assert_eq!(ours["description"], theirs["description"]);
        assert_eq!(
            ours["parametersJsonSchema"],
            json_schema(theirs["parameters"].clone())
        );
    }

    let answer = completion(pair["response"].to_string().as_bytes(), "gemini-2.5-flash").unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let calls = &answer["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "find_movies");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "Mountain View, CA", "description": "comedy"})
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(answer["model"], "gemini-2.5-flash");
}
