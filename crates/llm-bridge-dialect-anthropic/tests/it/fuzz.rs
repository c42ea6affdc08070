//! Property tests: random and malformed input in every direction. Each translator answers
//! with a value or an error, never a panic, and the event writer keeps its sequence rules.

use llm_bridge_core::ChatRequest;
use llm_bridge_dialect_anthropic::{
    ChunkTranslator, EventWriter, chat_completion, chat_request, error_from_event,
    error_from_status, messages_request, messages_response, usage_from_message,
    usage_from_message_delta, usage_from_message_start,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: &[&str] = &[
    "type",
    "id",
    "model",
    "role",
    "content",
    "text",
    "thinking",
    "signature",
    "data",
    "name",
    "input",
    "tool_use_id",
    "index",
    "delta",
    "partial_json",
    "stop_reason",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "message",
    "content_block",
    "error",
    "source",
    "media_type",
    "url",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "stream",
    "metadata",
    "user_id",
    "budget_tokens",
    "choices",
    "finish_reason",
    "tool_calls",
    "function",
    "arguments",
    "reasoning_content",
    "extra_content",
    "anthropic",
    "thinking_blocks",
    "image_url",
    "tool_call_id",
    "parameters",
    "response_format",
    "json_schema",
    "schema",
    "reasoning_effort",
    "output_config",
    "effort",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
];

const WORDS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "text",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "signature_delta",
    "end_turn",
    "tool_use",
    "refusal",
    "user",
    "assistant",
    "system",
    "tool",
    "image",
    "base64",
    "url",
    "function",
    "auto",
    "any",
    "none",
    "required",
    "enabled",
    "adaptive",
    "high",
    "json_schema",
    "llm_bridge_json_output",
    "overloaded_error",
    "data:image/png;base64,AA",
    "https://x/y",
    "{\"a\":",
    "{}",
    "",
    "é✓\u{0}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn bytes_of(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn egress_never_panics(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = chat_completion(&bytes_of(&v), "m");
        let _ = chat_completion(&raw, "m");
        let _ = error_from_status("p", 529, None, &bytes_of(&v));
        let _ = error_from_status("p", 0, None, &raw);
        let _ = error_from_event(&bytes_of(&v));
        let _ = usage_from_message(&bytes_of(&v));
        let _ = usage_from_message_start(&bytes_of(&v));
        let _ = usage_from_message_delta(&bytes_of(&v));
        if let Ok(req) = ChatRequest::from_value(json!({"model": "m", "messages": [v.clone()], "tools": v.clone()})) {
            let _ = messages_request(&req, "m", 10);
        }
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
            b.insert("model".into(), "m".into());
        }
        if let Ok(req) = ChatRequest::from_value(body) {
            let _ = messages_request(&req, "m", 10);
        }
    }

    #[test]
    fn stream_translator_never_panics(events in prop::collection::vec((prop::sample::select(WORDS), json_value()), 0..12)) {
        let mut t = ChunkTranslator::new("m");
        for (name, data) in &events {
            if t.push(name, &bytes_of(data)).is_err() {
                break;
            }
        }
        let _ = t.finish();
    }

    #[test]
    fn ingress_never_panics(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = chat_request(&bytes_of(&v));
        let _ = chat_request(&raw);
        let _ = messages_response(&bytes_of(&v), "m");
        let _ = messages_response(&raw, "m");
        let mut body = json!({"model": "m", "max_tokens": 5, "messages": [v.clone()]});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        if let Ok(t) = chat_request(&bytes_of(&body)) {
            // Whatever came in, the pivot it became translates on.
            let _ = messages_request(&t.request, "m", 10);
        }
    }

    #[test]
    fn event_writer_keeps_its_sequence(chunks in prop::collection::vec(json_value(), 0..10)) {
        let mut w = EventWriter::new("m");
        let mut out = Vec::new();
        for c in &chunks {
            let c = json!({"choices": [{"index": 0, "delta": c, "finish_reason": c.get("finish_reason")}], "usage": c.get("usage")});
            out.extend_from_slice(&w.push(&bytes_of(&c)).unwrap());
        }
        out.extend_from_slice(&w.finish());
        let text = String::from_utf8(out).unwrap();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        prop_assert!(!names.is_empty());
        let last = *names.last().unwrap();
        prop_assert!(last == "message_stop" || last == "error");
        let starts = names.iter().filter(|n| **n == "content_block_start").count();
        let stops = names.iter().filter(|n| **n == "content_block_stop").count();
        if last == "message_stop" {
            prop_assert_eq!(starts, stops);
            prop_assert_eq!(names[0], "message_start");
        }
        for l in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            prop_assert!(serde_json::from_str::<Value>(l).is_ok());
        }
    }
}
