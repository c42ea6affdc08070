//! Property tests: random and malformed input in every direction. Each translator answers
//! with a value or an error, never a panic; every stream the writer produces is a valid
//! sequence ([`crate::validate`]); the meter never panics on any bytes in any pieces.

use llm_bridge_core::{Error, ErrorKind, NativeMeter};
use llm_bridge_dialect_responses::{
    Echo, EventWriter, ResponsesMeter, chat_request, prepend_items, responses_response,
    usage_from_response,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::validate;

const KEYS: &[&str] = &[
    "type",
    "id",
    "model",
    "role",
    "content",
    "text",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "name",
    "arguments",
    "call_id",
    "output",
    "summary",
    "encrypted_content",
    "image_url",
    "file_data",
    "detail",
    "parameters",
    "strict",
    "description",
    "format",
    "schema",
    "reasoning",
    "effort",
    "text",
    "max_output_tokens",
    "stream",
    "store",
    "include",
    "metadata",
    "previous_response_id",
    "prompt_cache_key",
    "user",
    "mode",
    "choices",
    "index",
    "delta",
    "message",
    "finish_reason",
    "tool_calls",
    "function",
    "reasoning_content",
    "refusal",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "completion_tokens_details",
    "reasoning_tokens",
    "extra_content",
    "llm_bridge",
    "encrypted_reasoning",
    "created",
    "response",
    "input_tokens",
    "output_tokens",
    "sequence_number",
];

const WORDS: &[&str] = &[
    "message",
    "reasoning",
    "function_call",
    "function_call_output",
    "web_search",
    "web_search_call",
    "input_text",
    "output_text",
    "input_image",
    "input_file",
    "refusal",
    "summary_text",
    "reasoning_text",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "auto",
    "none",
    "required",
    "allowed_tools",
    "json_schema",
    "json_object",
    "stop",
    "length",
    "content_filter",
    "tool_calls",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "response.output_text.delta",
    "high",
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

/// A delta that looks like a chat delta more often than random JSON would.
fn delta() -> impl Strategy<Value = Value> {
    let fragment = prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        any::<String>()
    ];
    prop_oneof![
        json_value(),
        fragment.clone().prop_map(|t| json!({"content": t})),
        fragment.clone().prop_map(|t| json!({"reasoning_content": t})),
        fragment.clone().prop_map(|t| json!({"refusal": t})),
        (0u64..3, fragment.clone(), prop::option::of("call_[a-z]{1,3}"))
            .prop_map(|(i, t, id)| json!({"tool_calls": [{"index": i, "id": id, "function": {"name": "f", "arguments": t}}]})),
        Just(json!({"extra_content": {"llm_bridge": {"encrypted_reasoning": "x"}}})),
    ]
}

fn chunk() -> impl Strategy<Value = Value> {
    (
        delta(),
        prop::option::of(prop::sample::select(&["stop", "length", "tool_calls", "content_filter", ""][..])),
        prop::option::weighted(0.2, json_value()),
    )
        .prop_map(|(d, finish, usage)| {
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": d, "finish_reason": finish}], "usage": usage})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_never_panic(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = chat_request(&bytes_of(&v));
        let _ = chat_request(&raw);
        let mut body = json!({"model": "m", "input": [v.clone()], "tools": [v.clone()]});
        let _ = chat_request(&bytes_of(&body));
        if let (Some(b), Some(extra)) = (body.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
            b.insert("model".into(), "m".into());
            let _ = chat_request(&bytes_of(&Value::Object(b.clone())));
            let _ = Echo::from_request(b);
            prepend_items(b, vec![v.clone()], vec![v.clone()]);
            let _ = chat_request(&bytes_of(&Value::Object(b.clone())));
        }
        let _ = Echo::from_slice(&raw);
    }

    #[test]
    fn answers_never_panic(v in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let echo = Echo::from_slice(&bytes_of(&v));
        let _ = responses_response(&bytes_of(&v), "m", &echo);
        let _ = responses_response(&raw, "m", &echo);
        let wrapped = json!({"choices": [{"message": v.clone(), "finish_reason": v.get("finish_reason")}], "usage": v.get("usage")});
        let r = responses_response(&bytes_of(&wrapped), "m", &echo).unwrap();
        prop_assert!(serde_json::from_slice::<Value>(&r).is_ok());
        let _ = usage_from_response(&bytes_of(&v));
        let _ = usage_from_response(&raw);
    }

    #[test]
    fn every_stream_is_a_valid_sequence(chunks in prop::collection::vec(chunk(), 0..12), fail in any::<bool>()) {
        let mut w = EventWriter::new("m");
        let mut out = Vec::new();
        for c in &chunks {
            out.extend_from_slice(&w.push(&bytes_of(c)).unwrap());
        }
        if fail {
            out.extend_from_slice(&w.error_event(&Error::new(ErrorKind::UpstreamUnavailable, "down")));
        }
        out.extend_from_slice(&w.finish());
        prop_assert!(w.is_done());
        if let Err(e) = validate(&out) {
            return Err(TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out))));
        }
        // And the meter reads what the writer wrote, in any pieces.
        let mut m = ResponsesMeter::default();
        for p in out.chunks(7) {
            m.feed(p);
        }
        prop_assert!(m.finished());
    }

    #[test]
    fn random_chunks_never_panic_the_writer(chunks in prop::collection::vec(json_value(), 0..10)) {
        let mut w = EventWriter::new("m");
        let mut out = Vec::new();
        for c in &chunks {
            if let Ok(b) = w.push(&bytes_of(c)) {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&w.finish());
        if let Err(e) = validate(&out) {
            return Err(TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out))));
        }
    }

    #[test]
    fn the_meter_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512), piece in 1usize..64) {
        let mut m = ResponsesMeter::default();
        for p in raw.chunks(piece) {
            m.feed(p);
        }
        let _ = (m.usage(), m.finished());
    }
}
