//! Property tests of the Gemini ingress: random and malformed input in every direction. Each
//! translator answers with a value or an error, never a panic; the stream writer ends once;
//! the meter never panics on any bytes in any pieces.

#![allow(clippy::unwrap_used)]

use llm_bridge_core::{Error, ErrorKind, IngressStream, NativeMeter};
use llm_bridge_dialect_gemini::ingress::{
    EventWriter, GeminiMeter, chat_request, embeddings_answer, embeddings_request, endpoint,
    generate_response,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: &[&str] = &[
    "contents",
    "role",
    "parts",
    "text",
    "thought",
    "inlineData",
    "inline_data",
    "mimeType",
    "data",
    "fileData",
    "fileUri",
    "functionCall",
    "function_call",
    "functionResponse",
    "name",
    "args",
    "id",
    "response",
    "tools",
    "functionDeclarations",
    "parameters",
    "parametersJsonSchema",
    "type",
    "properties",
    "toolConfig",
    "functionCallingConfig",
    "mode",
    "allowedFunctionNames",
    "generationConfig",
    "temperature",
    "maxOutputTokens",
    "responseSchema",
    "responseMimeType",
    "systemInstruction",
    "system_instruction",
    "requests",
    "content",
    "outputDimensionality",
    "taskType",
    "choices",
    "delta",
    "message",
    "tool_calls",
    "function",
    "arguments",
    "index",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "data",
    "embedding",
    "generateContentRequest",
    "thoughtSignature",
    "extra_content",
];
const STRINGS: &[&str] = &[
    "user",
    "model",
    "function",
    "ANY",
    "AUTO",
    "NONE",
    "OBJECT",
    "STRING",
    "image/png",
    "application/json",
    "stop",
    "length",
    "tool_calls",
    "{\"a\":1}",
    "{",
    "",
    "call_1",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(STRINGS).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_never_panic(v in value(), stream in any::<bool>(), batch in any::<bool>()) {
        let body = v.to_string();
        let _ = chat_request(body.as_bytes(), "m", stream);
        let _ = embeddings_request(body.as_bytes(), "m", batch);
        let wrapped = json!({"contents": v, "requests": [v]}).to_string();
        let _ = chat_request(wrapped.as_bytes(), "m", stream);
        let _ = embeddings_request(wrapped.as_bytes(), "m", batch);
    }

    #[test]
    fn answers_and_streams_never_panic(chunks in prop::collection::vec(value(), 0..6), batch in any::<bool>()) {
        let mut writer = EventWriter::new("m");
        for c in &chunks {
            let body = c.to_string();
            let _ = generate_response(body.as_bytes(), "m");
            let _ = embeddings_answer(body.as_bytes(), batch);
            let _ = writer.chunk(body.as_bytes());
            let wrapped = json!({"choices": [c], "usage": c}).to_string();
            let _ = writer.chunk(wrapped.as_bytes());
        }
        let end = writer.finish();
        prop_assert!(end.starts_with(b"data: "));
        prop_assert!(writer.finish().is_empty());
        let _ = writer.error(&Error::new(ErrorKind::Internal, "x"));
    }

    #[test]
    fn bytes_paths_and_meters_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), cut in 0usize..200, path in "\\PC{0,40}") {
        let _ = chat_request(&bytes, "m", false);
        let _ = embeddings_request(&bytes, "m", true);
        let _ = generate_response(&bytes, "m");
        let _ = endpoint(&format!("/v1beta/models/{path}"));
        let mut meter = GeminiMeter::default();
        let (a, b) = bytes.split_at(cut.min(bytes.len()));
        meter.feed(a);
        meter.feed(b);
        let _ = meter.usage();
    }
}
