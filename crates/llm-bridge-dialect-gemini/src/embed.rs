//! OpenAI's `/v1/embeddings` ⇄ Gemini's `models/{model}:batchEmbedContents`.
//!
//! | OpenAI | Gemini | |
//! |---|---|---|
//! | `input`: a string or a list of strings | one `requests[]` entry per string | the batch is never split or merged: a batch over Gemini's limit gets Gemini's error |
//! | `input`: token arrays | — | **400**: Gemini embeds text only |
//! | `dimensions` | `outputDimensionality` | |
//! | `task_type` (an extension; `taskType` too) | `taskType` | `RETRIEVAL_QUERY`, `RETRIEVAL_DOCUMENT`, `SEMANTIC_SIMILARITY`, … as Gemini names them |
//! | `encoding_format` | — | `float` (default): Gemini's numbers as they came; `base64`: the vector as little-endian `f32`, base64-encoded by the gateway |
//! | `user`, `model` | — | `model` is the URL's and every request's `models/…`; `user` is ignored |
//!
//! Answers: `embeddings[i].values` → `data[i].embedding`; `usageMetadata.promptTokenCount`
//! (newer models report it) → `usage.prompt_tokens` = `usage.total_tokens`. Without it the
//! answer carries no `usage` and the gateway estimates the count.

use base64::Engine;
use bytes::Bytes;
use llm_bridge_core::{Error, Result};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::errors::bad_response;

/// An embeddings request, translated.
#[derive(Debug)]
pub struct EmbedRequest {
    /// The `batchEmbedContents` body.
    pub body: Bytes,
    /// Whether the client asked for base64-encoded vectors.
    pub base64: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token arrays, or anything else: not text.
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct OpenAiEmbeddings<'a> {
    input: Option<Input>,
    #[serde(default, borrow)]
    encoding_format: Option<&'a str>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default, alias = "taskType")]
    task_type: Option<String>,
}

/// The `batchEmbedContents` body for an OpenAI embeddings request to `model` (the upstream
/// name, without `models/`).
pub fn embed_request(body: &[u8], model: &str) -> Result<EmbedRequest> {
    let request: OpenAiEmbeddings<'_> = serde_json::from_slice(body).map_err(|e| {
        Error::invalid_request(format!("invalid embeddings request: {e}")).with_param("input")
    })?;
    let base64 = match request.encoding_format {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Error::invalid_request(format!(
                "encoding_format must be 'float' or 'base64', not '{other}'"
            ))
            .with_param("encoding_format"));
        }
    };
    let texts = match request.input {
        Some(Input::One(text)) => vec![text],
        Some(Input::Many(texts)) => texts,
        Some(Input::Other(_)) => {
            return Err(Error::invalid_request(
                "this model embeds text only: send 'input' as a string or a list of strings, not tokens",
            )
            .with_param("input"));
        }
        None => {
            return Err(Error::invalid_request("'input' is required").with_param("input"));
        }
    };
    if texts.is_empty() {
        return Err(Error::invalid_request("'input' must not be empty").with_param("input"));
    }
    let models = format!("models/{model}");
    let requests: Vec<serde_json::Value> = texts
        .into_iter()
        .map(|text| {
            let mut one = serde_json::json!({
                "model": models,
                "content": {"parts": [{"text": text}]},
            });
            if let Some(d) = request.dimensions {
                one["outputDimensionality"] = d.into();
            }
            if let Some(t) = &request.task_type {
                one["taskType"] = t.as_str().into();
            }
            one
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "requests": requests }))
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok(EmbedRequest {
        body: Bytes::from(body),
        base64,
    })
}

#[derive(Deserialize)]
struct BatchAnswer<'a> {
    #[serde(borrow, default)]
    embeddings: Vec<Embedding<'a>>,
    #[serde(default, rename = "usageMetadata")]
    usage: Option<UsageMetadata>,
}

#[derive(Deserialize)]
struct Embedding<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
}

#[derive(Deserialize)]
struct UsageMetadata {
    #[serde(default, rename = "promptTokenCount")]
    prompt: Option<u64>,
}

/// A `batchEmbedContents` answer as OpenAI's embeddings list for `model`.
pub fn embed_answer(answer: &[u8], model: &str, base64: bool) -> Result<Bytes> {
    let parsed: BatchAnswer<'_> = serde_json::from_slice(answer)
        .map_err(|e| bad_response(format!("Gemini's embeddings answer is not valid: {e}")))?;
    let mut out = Vec::with_capacity(answer.len() + 64 * parsed.embeddings.len());
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, embedding) in parsed.embeddings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"object":"embedding","index":"#);
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(br#","embedding":"#);
        if base64 {
            let values: Vec<f32> = serde_json::from_str(embedding.values.get()).map_err(|e| {
                bad_response(format!("Gemini's embedding values are not numbers: {e}"))
            })?;
            let mut raw = Vec::with_capacity(values.len() * 4);
            for v in values {
                raw.extend_from_slice(&v.to_le_bytes());
            }
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(raw)
                    .as_bytes(),
            );
            out.push(b'"');
        } else {
            out.extend_from_slice(embedding.values.get().as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"model":"#);
    serde_json::to_writer(&mut out, model).map_err(|e| Error::internal(e.to_string()))?;
    if let Some(prompt) = parsed.usage.and_then(|u| u.prompt) {
        out.extend_from_slice(
            format!(r#","usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt}}}"#).as_bytes(),
        );
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn strings_dimensions_and_task_type_become_one_batch() {
        let body = br#"{"model":"g/gemini-embedding-001","input":["First text","Second text"],"dimensions":768,"task_type":"RETRIEVAL_DOCUMENT","user":"u1"}"#;
        let out = embed_request(body, "gemini-embedding-001").unwrap();
        assert!(!out.base64);
        let sent: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            sent,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "First text"}]},
                 "outputDimensionality": 768, "taskType": "RETRIEVAL_DOCUMENT"},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "Second text"}]},
                 "outputDimensionality": 768, "taskType": "RETRIEVAL_DOCUMENT"}
            ]})
        );
        let one = embed_request(br#"{"input":"hi","encoding_format":"base64"}"#, "m").unwrap();
        assert!(one.base64);
        let sent: Value = serde_json::from_slice(&one.body).unwrap();
        assert_eq!(
            sent,
            json!({"requests": [{"model": "models/m", "content": {"parts": [{"text": "hi"}]}}]})
        );
    }

    #[test]
    fn tokens_empty_input_and_unknown_formats_are_the_clients_errors() {
        for body in [
            &br#"{"input":[1,2,3]}"#[..],
            br#"{"input":[[1,2],[3]]}"#,
            br#"{"input":[]}"#,
            br#"{"model":"m"}"#,
            br#"{"input":"x","encoding_format":"int8"}"#,
            b"[1]",
        ] {
            let e = embed_request(body, "m").unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn answers_keep_gemini_numbers_or_encode_them() {
        let answer = br#"{"embeddings":[{"values":[-0.011345503,0.5]},{"values":[1,-2.25]}],"usageMetadata":{"promptTokenCount":4}}"#;
        let out = embed_answer(answer, "gemini-embedding-2", false).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[-0.011345503,0.5]},{"object":"embedding","index":1,"embedding":[1,-2.25]}],"model":"gemini-embedding-2","usage":{"prompt_tokens":4,"total_tokens":4}}"#
        );
        let out = embed_answer(answer, "m", true).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = decoded
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, vec![1.0, -2.25]);
        // Older models report no usage: none is made up.
        let out = embed_answer(br#"{"embeddings":[{"values":[0.1]}]}"#, "m", false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("usage").is_none());
        assert!(embed_answer(b"<html>", "m", false).is_err());
    }
}
