//! Every recorded Gemini response, stream and error in the shared conformance material
//! (`shared/conformance/gemini/`, next to the repository) goes through the translator: success
//! recordings must become valid OpenAI objects, failure recordings a valid object or a
//! classified upstream error, and nothing may panic.
//!
//! The material lives outside the repository; on a checkout without it this test says so and
//! passes (the named comparisons in tests/fixtures.rs always run).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use http::{HeaderMap, StatusCode};
use llm_bridge_core::{Error, ErrorKind};
use llm_bridge_http::SseDecoder;
use llm_bridge_provider_gemini::{ChunkTranslator, completion, error_from_status};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/gemini")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("json" | "txt")
        ) {
            out.push(path);
        }
    }
}

/// An upstream error is fine for a failure recording; a bug (`Internal`) never is.
fn acceptable(e: &Error) -> bool {
    e.kind().is_upstream() && e.kind() != ErrorKind::UpstreamTimeout
}

fn check_completion(bytes: &[u8]) -> Value {
    let out: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(out["model"].is_string());
    let choices = out["choices"].as_array().unwrap();
    assert!(!choices.is_empty());
    for c in choices {
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["index"].is_u64());
    }
    out
}

enum Outcome {
    Translated,
    Failed(Error),
}

fn translate_stream(text: &str) -> Outcome {
    let mut decoder = SseDecoder::default();
    decoder.push(text.as_bytes());
    let mut data = Vec::new();
    while let Some(event) = decoder.next_event().unwrap() {
        data.push(event.data);
    }
    data.extend(decoder.finish().map(|e| e.data));
    let mut t = ChunkTranslator::new("gemini-test");
    let mut chunks = Vec::new();
    for d in data {
        match t.push(&d) {
            Ok(c) => chunks.extend(c),
            Err(e) => return Outcome::Failed(e),
        }
    }
    match t.finish() {
        Ok(c) => chunks.extend(c),
        Err(e) => return Outcome::Failed(e),
    }
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_slice(c).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().clone())
        .filter(|c| !c["finish_reason"].is_null())
        .count();
    assert!(finishes >= 1, "a translated stream has a finish reason");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    Outcome::Translated
}

#[test]
fn every_recording_translates() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} is not there (the shared conformance material is not checked out)",
            dir.display()
        );
        return;
    }
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    paths.sort();
    let (mut translated, mut errors, mut skipped) = (0, 0, 0);
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let success = name.contains("success") || path.to_string_lossy().contains("cookbook");
        let outcome = if text.trim_start().starts_with("data:") {
            translate_stream(&text)
        } else {
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                // A deliberately broken recording: the translator must refuse it cleanly.
                let e = completion(text.as_bytes(), "gemini-test").unwrap_err();
                assert_eq!(e.kind(), ErrorKind::UpstreamBadResponse, "{name}");
                errors += 1;
                continue;
            };
            let body = match value.get("response") {
                // A cookbook request/response pair: only generateContent answers concern us.
                Some(response) => {
                    let url = value["url"].as_str().unwrap_or_default();
                    if response.is_null() || !url.contains(":generateContent") {
                        skipped += 1;
                        continue;
                    }
                    response.clone()
                }
                None => value,
            };
            if body.get("totalTokens").is_some() || body.get("codes").is_some() {
                // countTokens answers and the documentation table: not generateContent.
                skipped += 1;
                continue;
            }
            let error = match &body {
                Value::Array(items) => items.first().and_then(|i| i.get("error")),
                other => other.get("error"),
            };
            if let Some(error) = error {
                let code = error["code"].as_u64().unwrap_or(500) as u16;
                let e = error_from_status(
                    "gemini",
                    StatusCode::from_u16(code).unwrap(),
                    &HeaderMap::new(),
                    body.to_string().as_bytes(),
                );
                assert!(acceptable(&e), "{name}: {e:?}");
                assert!(!e.message().contains("Invalid API key:"), "{name}");
                eprintln!("{name}: error body → {} {}", e.status(), e.kind().label());
                errors += 1;
                continue;
            }
            match completion(body.to_string().as_bytes(), "gemini-test") {
                Ok(bytes) => {
                    check_completion(&bytes);
                    Outcome::Translated
                }
                Err(e) => Outcome::Failed(e),
            }
        };
        match outcome {
            Outcome::Translated => translated += 1,
            Outcome::Failed(e) => {
                assert!(!success, "{name} must translate: {e:?}");
                assert!(acceptable(&e), "{name}: {e:?}");
                eprintln!(
                    "{name}: refused → {} {}: {}",
                    e.status(),
                    e.kind().label(),
                    e.message()
                );
                errors += 1;
            }
        }
    }
    eprintln!(
        "{} recordings: {translated} translated, {errors} classified as errors, {skipped} not generateContent",
        paths.len()
    );
    assert!(translated >= 100, "only {translated} recordings translated");
}
