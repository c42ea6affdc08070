//! Property tests: random and malformed Gemini responses, stream events, stream fragments,
//! error bodies and OpenAI requests go through the translators. They must answer with a valid
//! OpenAI object or an error, never panic, and keep the stream contract (one id, tool calls
//! numbered 0, 1, 2… per choice).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use http::{HeaderMap, StatusCode};
use llm_bridge_core::{ChatRequest, ErrorKind};
use llm_bridge_http::SseDecoder;
use llm_bridge_provider_gemini::{
    ChunkTranslator, completion, error_from_status, error_from_stream_event, request_body,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "candidates",
    "content",
    "parts",
    "text",
    "thought",
    "thoughtSignature",
    "functionCall",
    "name",
    "args",
    "id",
    "finishReason",
    "finishMessage",
    "index",
    "role",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
    "promptFeedback",
    "blockReason",
    "modelVersion",
    "responseId",
    "error",
    "code",
    "message",
    "status",
    "details",
    "@type",
    "reason",
    "retryDelay",
    "executableCode",
    "codeExecutionResult",
    "inlineData",
];

const WORDS: &[&str] = &[
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "MALFORMED_FUNCTION_CALL",
    "OTHER",
    "model",
    "user",
    "type.googleapis.com/google.rpc.RetryInfo",
    "type.googleapis.com/google.rpc.ErrorInfo",
    "API_KEY_INVALID",
    "1.5s",
    "-3s",
    "12",
    "",
    "é✓\u{0}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
    ]
}

/// Any JSON, with keys Gemini uses so that the translator's paths are reached.
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

fn part() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<String>(), any::<bool>())
            .prop_map(|(t, thought)| json!({"text": t, "thought": thought})),
        (
            prop::sample::select(&["f", "g", ""][..]),
            json_value(),
            any::<bool>()
        )
            .prop_map(|(name, args, signed)| {
                let mut p = json!({"functionCall": {"name": name, "args": args}});
                if signed {
                    p["thoughtSignature"] = json!("c2ln");
                }
                p
            }),
        json_value(),
    ]
}

fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(|n| Value::from(n.to_string())),
        leaf(),
    ]
}

/// Responses shaped like Gemini's, with random (sometimes wrong) pieces.
fn response() -> impl Strategy<Value = Value> {
    let candidate = (
        prop::collection::vec(part(), 0..4),
        prop::option::of(prop::sample::select(WORDS)),
        prop::option::of(prop_oneof![(0u64..3).prop_map(Value::from), leaf()]),
    )
        .prop_map(|(parts, finish, index)| {
            let mut c = json!({"content": {"role": "model", "parts": parts}});
            if let Some(f) = finish {
                c["finishReason"] = json!(f);
            }
            if let Some(i) = index {
                c["index"] = i;
            }
            c
        });
    (
        prop::collection::vec(candidate, 0..3),
        prop::option::of((count(), count(), count())),
        prop::option::of(prop::sample::select(WORDS)),
        json_value(),
    )
        .prop_map(|(candidates, usage, block, extra)| {
            let mut r = json!({"candidates": candidates, "responseId": "r", "extra": extra});
            if let Some((p, c, t)) = usage {
                r["usageMetadata"] = json!({"promptTokenCount": p, "candidatesTokenCount": c,
                                            "thoughtsTokenCount": t});
            }
            if let Some(b) = block {
                r["promptFeedback"] = json!({"blockReason": b});
            }
            r
        })
}

/// Translates a stream and checks the contract on what came out.
fn check_stream(events: &[Vec<u8>]) {
    let mut t = ChunkTranslator::new("gemini-fuzz");
    let mut chunks = Vec::new();
    let mut failed = false;
    for e in events {
        match t.push(e) {
            Ok(c) => chunks.extend(c),
            Err(err) => {
                assert_ne!(err.kind(), ErrorKind::Internal);
                failed = true;
                break;
            }
        }
    }
    if !failed {
        match t.finish() {
            Ok(c) => chunks.extend(c),
            Err(err) => assert_ne!(err.kind(), ErrorKind::Internal),
        }
    }
    let mut next_call: BTreeMap<u64, u64> = BTreeMap::new();
    let mut id = None;
    for c in &chunks {
        let c: Value = serde_json::from_slice(c).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        let this = c["id"].as_str().unwrap().to_owned();
        assert_eq!(id.get_or_insert_with(|| this.clone()), &this);
        for choice in c["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap();
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let expected = next_call.entry(index).or_insert(0);
                assert_eq!(call["index"].as_u64(), Some(*expected));
                *expected += 1;
                assert!(call["function"]["arguments"].is_string());
                assert!(call["id"].as_str().is_some_and(|i| !i.is_empty()));
            }
        }
    }
}

fn check_completion(body: &[u8]) {
    match completion(body, "gemini-fuzz") {
        Ok(bytes) => {
            let out: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(out["object"], "chat.completion");
            assert!(!out["choices"].as_array().unwrap().is_empty());
            for choice in out["choices"].as_array().unwrap() {
                assert!(choice["finish_reason"].is_string());
            }
        }
        Err(e) => assert_ne!(e.kind(), ErrorKind::Internal),
    }
}

fn recording() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/googleai-streaming-success-thinking-function-call-thought-summary-signature.txt");
    std::fs::read_to_string(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), status in 100u16..600) {
        check_completion(&bytes);
        check_stream(std::slice::from_ref(&bytes));
        let e = error_from_status("g", StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), &bytes);
        prop_assert!(e.status() >= 400);
        let _ = error_from_stream_event("g", &bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value(), status in 400u16..600) {
        let bytes = value.to_string().into_bytes();
        check_completion(&bytes);
        check_stream(std::slice::from_ref(&bytes));
        let e = error_from_status("g", StatusCode::from_u16(status).unwrap(), &HeaderMap::new(), &bytes);
        prop_assert!(e.status() >= 400);
    }

    #[test]
    fn gemini_shaped_responses_translate_or_fail_cleanly(value in response()) {
        check_completion(value.to_string().as_bytes());
    }

    #[test]
    fn gemini_shaped_streams_keep_the_contract(events in prop::collection::vec(response(), 0..6)) {
        let events: Vec<Vec<u8>> = events.iter().map(|e| e.to_string().into_bytes()).collect();
        check_stream(&events);
    }

    #[test]
    fn recorded_streams_cut_and_corrupted(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
                                           flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = recording().into_bytes();
        for (at, byte) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        // Fed in random pieces, as the network delivers them.
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
        points.sort_unstable();
        let mut decoder = SseDecoder::default();
        let mut events = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            decoder.push(&bytes[start..p]);
            start = p;
            while let Ok(Some(e)) = decoder.next_event() {
                events.push(e.data.to_vec());
            }
        }
        events.extend(decoder.finish().map(|e| e.data.to_vec()));
        check_stream(&events);
    }

    #[test]
    fn random_openai_requests_translate_or_are_400(messages in prop::collection::vec(json_value(), 1..4),
                                                   extra in prop::collection::vec((prop::sample::select(&[
                                                       "tools", "tool_choice", "response_format", "stop", "n",
                                                       "reasoning_effort", "temperature", "max_tokens"][..]), json_value()), 0..4),
                                                   roles in prop::collection::vec(prop::sample::select(&[
                                                       "user", "assistant", "tool", "system"][..]), 4)) {
        let messages: Vec<Value> = messages
            .into_iter()
            .zip(roles)
            .map(|(m, role)| {
                let mut obj = match m {
                    Value::Object(o) => o,
                    other => Map::from_iter([("content".to_owned(), other)]),
                };
                obj.insert("role".into(), role.into());
                Value::Object(obj)
            })
            .collect();
        let mut body = json!({"model": "g/gemini-3-pro", "messages": messages});
        for (k, v) in extra {
            body[k] = v;
        }
        if let Ok(request) = ChatRequest::from_value(body) {
            if let Err(e) = request_body(&request, "gemini-3-pro") {
                prop_assert_eq!(e.status(), 400);
            }
        }
    }
}
