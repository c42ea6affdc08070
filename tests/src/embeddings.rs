//! Embeddings for the mock upstream: OpenAI's `/v1/embeddings` (float or base64) and Gemini's
//! `:batchEmbedContents` / `:embedContent` (and Gemini's `:countTokens`: a word count), with
//! vectors computed from the texts
//! ([`vector`]), so that a client test knows what to expect whichever way the gateway went.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::mock::Recorded;

/// Dimensions of a vector when the request does not say.
pub const DEFAULT_DIMENSIONS: usize = 8;

/// The mock's embedding of `text`: `dims` multiples of 1/16 (exact in `f32`), from its length.
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| ((text.chars().count() + j) % 16) as f32 / 16.0 - 0.5)
        .collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

/// For an embeddings request: `(content type, body)` of the answer; `None` for any other.
pub fn echo(recorded: &Recorded) -> Option<(&'static str, Vec<Bytes>)> {
    let path = recorded.uri.split('?').next().unwrap_or_default();
    let request: Value = serde_json::from_slice(&recorded.body).unwrap_or(Value::Null);
    let body = if path.ends_with("/embeddings") {
        openai(&request)
    } else if path.ends_with(":batchEmbedContents") {
        let model = model_of(path);
        let requests = request["requests"].as_array().cloned().unwrap_or_default();
        let (embeddings, tokens) = gemini_batch(requests.iter());
        let mut body = json!({"embeddings": embeddings});
        if !model.ends_with("-001") {
            body["usageMetadata"] = json!({"promptTokenCount": tokens});
        }
        body
    } else if path.ends_with(":countTokens") {
        // Gemini's token count: a word count of every text part.
        let words: u64 = request["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["text"].as_str().map(self::words))
            .sum();
        json!({"totalTokens": words})
    } else if path.ends_with(":embedContent") {
        let (mut embeddings, _) = gemini_batch(std::iter::once(&request));
        json!({"embedding": embeddings.remove(0)})
    } else {
        return None;
    };
    Some(("application/json", vec![Bytes::from(body.to_string())]))
}

fn model_of(path: &str) -> String {
    path.rsplit('/')
        .next()
        .and_then(|m| m.split(':').next())
        .unwrap_or_default()
        .to_owned()
}

fn gemini_batch<'a>(requests: impl Iterator<Item = &'a Value>) -> (Vec<Value>, u64) {
    let mut tokens = 0;
    let embeddings = requests
        .map(|r| {
            let text: String = r["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["text"].as_str())
                .collect();
            tokens += words(&text);
            let dims = r["outputDimensionality"]
                .as_u64()
                .or_else(|| r["output_dimensionality"].as_u64())
                .map_or(DEFAULT_DIMENSIONS, |d| d as usize);
            json!({"values": vector(&text, dims)})
        })
        .collect();
    (embeddings, tokens)
}

fn openai(request: &Value) -> Value {
    let texts: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let dims = request["dimensions"]
        .as_u64()
        .map_or(DEFAULT_DIMENSIONS, |d| d as usize);
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = vector(t, dims);
            let embedding = if base64 {
                let raw: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(raw))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| words(t)).sum();
    json!({"object": "list", "data": data, "model": request["model"],
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}
