use super::*;
use llm_bridge_core::ErrorKind;

fn completion_json(body: Value) -> Value {
    let bytes = completion(body.to_string().as_bytes(), "gemini-2.5-flash").unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn stream(events: &[Value]) -> Result<Vec<Value>> {
    let mut t = ChunkTranslator::new("gemini-2.5-flash");
    let mut out = Vec::new();
    for e in events {
        out.extend(t.push(e.to_string().as_bytes())?);
    }
    out.extend(t.finish()?);
    Ok(out
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect())
}

#[test]
fn finish_reasons_are_never_disguised() {
    assert_eq!(finish_reason("STOP", false), "stop");
    assert_eq!(finish_reason("STOP", true), "tool_calls");
    assert_eq!(finish_reason("MAX_TOKENS", true), "length");
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
    ] {
        assert_eq!(finish_reason(r, false), "content_filter");
    }
    assert_eq!(
        finish_reason("MALFORMED_FUNCTION_CALL", false),
        "malformed_function_call"
    );
    assert_eq!(finish_reason("OTHER", false), "other");
    assert_eq!(finish_reason("SOMETHING_NEW", false), "something_new");
}

#[test]
fn usage_counts_thoughts_as_completion_and_cache_as_cached() {
    let u = usage(&UsageMetadata {
        prompt_token_count: Some(100),
        candidates_token_count: Some(10),
        thoughts_token_count: Some(30),
        cached_content_token_count: Some(64),
        tool_use_prompt_token_count: Some(5),
        total_token_count: Some(145),
    });
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 105,
            completion_tokens: 40,
            total_tokens: 145,
            cached_tokens: 64,
            reasoning_tokens: 30,
            cache_write_tokens: 0,
        }
    );
    let huge = usage(&UsageMetadata {
        prompt_token_count: Some(u64::MAX),
        candidates_token_count: Some(u64::MAX),
        ..UsageMetadata::default()
    });
    assert_eq!(huge.total_tokens, u64::MAX);
}

#[test]
fn text_thoughts_calls_and_signatures() {
    let out = completion_json(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me think.", "thought": true},
            {"text": "Calling "}, {"text": "now."},
            {"functionCall": {"name": "f", "args": {"a": [1, {"b": null}]}}, "thoughtSignature": "U0lH"},
            {"functionCall": {"id": "gemini-id-7", "name": "g"}}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 2,
                          "totalTokenCount": 10},
        "modelVersion": "gemini-2.5-pro", "responseId": "resp-1"
    }));
    assert_eq!(out["id"], "chatcmpl-resp-1");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "gemini-2.5-pro");
    assert!(out["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let m = &choice["message"];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], "Calling now.");
    assert_eq!(m["reasoning_content"], "Let me think.");
    let calls = m["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "f");
    assert_eq!(
        calls[0]["function"]["arguments"],
        "{\"a\":[1,{\"b\":null}]}"
    );
    assert_eq!(
        calls[0]["extra_content"],
        json!({"google": {"thought_signature": "U0lH"}})
    );
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert!(calls[0].get("index").is_none());
    assert_eq!(calls[1]["id"], "gemini-id-7");
    assert_eq!(calls[1]["function"]["arguments"], "{}");
    assert!(calls[1].get("extra_content").is_none());
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 2}})
    );
    // The same answer gives the same ids.
    let again = completion_json(json!({
        "candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}]}, "finishReason": "STOP"}],
        "responseId": "resp-1"
    }));
    assert_eq!(
        again["choices"][0]["message"]["tool_calls"][0]["id"],
        calls[0]["id"]
    );
}

#[test]
fn a_text_answers_signature_rides_on_the_message() {
    let out = completion_json(json!({"candidates": [{"content": {"parts": [
        {"text": "Hi", "thoughtSignature": "VFNJRw=="}]}, "finishReason": "STOP"}]}));
    let m = &out["choices"][0]["message"];
    assert_eq!(
        m["extra_content"],
        json!({"google": {"thought_signature": "VFNJRw=="}})
    );
    assert!(m.get("tool_calls").is_none());
    assert!(out.get("usage").is_none());
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[test]
fn blocked_prompts_and_odd_endings() {
    let out = completion_json(json!({"promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}));
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert!(
        choice["message"]["refusal"]
            .as_str()
            .unwrap()
            .contains("SAFETY")
    );
    assert_eq!(out["usage"]["prompt_tokens"], 8);

    let out = completion_json(
        json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL",
        "finishMessage": "Malformed function call: print(x"}]}),
    );
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "malformed_function_call");
    assert_eq!(choice["finish_message"], "Malformed function call: print(x");
    assert_eq!(choice["message"]["content"], Value::Null);

    for body in [
        json!({}),
        json!({"candidates": [{"content": {"parts": []}}]}),
        json!([1, 2]),
    ] {
        let e = completion(body.to_string().as_bytes(), "m").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UpstreamBadResponse, "{body}");
    }
    let e = completion(br#"{"error": {"code": 500, "message": "boom"}}"#, "m").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
}

#[test]
fn several_candidates_are_several_choices() {
    let out = completion_json(json!({"candidates": [
        {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}
    ]}));
    assert_eq!(out["choices"][1]["index"], 1);
    assert_eq!(out["choices"][1]["message"]["content"], "b");
    assert_eq!(out["choices"][1]["finish_reason"], "length");
}

#[test]
fn stream_chunks_role_first_calls_numbered_finish_then_usage() {
    let chunks = stream(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Plan", "thought": true}]}}],
               "usageMetadata": {"promptTokenCount": 4}, "responseId": "r9", "modelVersion": "gemini-2.5-flash-001"}),
        json!({"candidates": [{"content": {"parts": [{"text": "Sure"}]}, "finishReason": "STOP"}]}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "b", "args": {}}}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "c"}}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "thoughtsTokenCount": 3,
                                 "cachedContentTokenCount": 2}}),
    ])
    .unwrap();
    assert_eq!(chunks.len(), 6);
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-r9");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gemini-2.5-flash-001");
        assert_eq!(c["created"], chunks[0]["created"]);
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Plan"},
                "logprobs": null, "finish_reason": null}])
    );
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "Sure"}));
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], Value::Null);
    let calls = chunks[2]["choices"][0]["delta"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1);
    assert_eq!(
        calls[0]["function"],
        json!({"name": "a", "arguments": "{\"x\":1}"})
    );
    assert_eq!(
        calls[0]["extra_content"]["google"]["thought_signature"],
        "c2ln"
    );
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    let last = &chunks[3]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(last["index"], 2);
    assert_eq!(last["type"], "function");
    assert_eq!(
        chunks[4]["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}])
    );
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13,
               "prompt_tokens_details": {"cached_tokens": 2},
               "completion_tokens_details": {"reasoning_tokens": 3}})
    );
}

#[test]
fn stream_blocked_prompt_is_a_refusal_with_content_filter() {
    let chunks =
        stream(&[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})]).unwrap();
    assert_eq!(chunks.len(), 2, "no usage was reported");
    let delta = &chunks[0]["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant");
    assert!(
        delta["refusal"]
            .as_str()
            .unwrap()
            .contains("PROHIBITED_CONTENT")
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn stream_errors_end_it() {
    let mut t = ChunkTranslator::new("m");
    assert_eq!(
        t.push(br#"{"candidates": [{"content": {"parts": [{"text": "a"}]}}]}"#)
            .unwrap()
            .len(),
        1
    );
    let e = t
        .push(br#"{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}"#)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UpstreamUnavailable);
    assert!(e.message().contains("overloaded"));

    // Content, then a clean end without a reason (older models): a complete answer.
    let chunks =
        stream(&[json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]})]).unwrap();
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    // Neither content nor a reason.
    let e = stream(&[json!({"candidates": [{"content": {}}]})]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UpstreamBadResponse);
    // Nothing at all.
    assert!(ChunkTranslator::new("m").finish().is_err());
    // Not JSON.
    assert!(ChunkTranslator::new("m").push(b"{oops").is_err());
}

#[test]
fn stream_choice_without_content_still_gets_a_role() {
    let chunks =
        stream(&[json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]})]).unwrap();
    assert_eq!(
        chunks[0]["choices"][0],
        json!({"index": 0, "delta": {"role": "assistant"}, "logprobs": null,
               "finish_reason": "content_filter"})
    );
}
