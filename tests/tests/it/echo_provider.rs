//! A provider crate of your own, end to end: the worked example of docs/providers.md.
//!
//! `Echo` answers with the last user message, word by word when streamed, and reports
//! usage like OpenAI. It is registered under `adapter: echo` next to the built-in adapters,
//! and the real gateway serves it through real sockets: routing, auth, SSE framing, `[DONE]`,
//! usage records and errors come from the gateway, not from the provider.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use llm_bridge::Registry;
use llm_bridge_core::{
    ChatChunk, ChatProvider, ChatRequest, ChatResponse, ChunkStream, Error, ErrorKind,
    ModelCatalog, ProviderConfig, Result,
};
use llm_bridge_usage::{GroupBy, SqliteUsageReader, UsageQuery, UsageReader};
use serde_json::{Value, json};
use testkit::{TestGateway, sse_data};

/// Answers every request with the last user message.
struct Echo {
    name: String,
    catalog: ModelCatalog,
}

impl Echo {
    /// The constructor the registry calls with the provider's name and config.
    fn new(name: &str, config: &ProviderConfig) -> Result<Self> {
        Ok(Echo {
            name: name.to_owned(),
            catalog: ModelCatalog::new(config.models.clone()),
        })
    }

    /// The upstream model name of `model`, or the error every provider returns for an
    /// unknown model (the router checks the catalog first; this guards direct calls).
    fn upstream_model(&self, model: &str) -> Result<String> {
        self.catalog
            .lookup(model)
            .map(|entry| entry.upstream_name().to_owned())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ModelNotFound,
                    format!("{} has no model {model}", self.name),
                )
            })
    }
}

/// The text of the last user message (string content or text parts).
fn last_user_text(request: &ChatRequest) -> Result<String> {
    let message = request
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .ok_or_else(|| Error::invalid_request("echo needs a user message"))?;
    Ok(match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(text: &str) -> Value {
    let words = text.split_whitespace().count() as u64;
    json!({"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words})
}

#[async_trait]
impl ChatProvider for Echo {
    fn name(&self) -> &str {
        &self.name
    }

    fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }

    async fn chat(&self, model: &str, request: ChatRequest) -> Result<ChatResponse> {
        let model = self.upstream_model(model)?;
        let text = last_user_text(&request)?;
        let body = json!({
            "id": "chatcmpl-echo", "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage(&text),
        });
        Ok(ChatResponse {
            body: Bytes::from(body.to_string()),
        })
    }

    async fn chat_stream(&self, model: &str, request: ChatRequest) -> Result<ChunkStream> {
        let model = self.upstream_model(model)?;
        let text = last_user_text(&request)?;
        let created = now();
        let chunk = |delta: Value, finish: Value| ChatChunk {
            data: Bytes::from(
                json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
                       "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string(),
            ),
        };
        let mut chunks: Vec<Result<ChatChunk>> = Vec::new();
        for (i, word) in text.split_inclusive(' ').enumerate() {
            let delta = if i == 0 {
                json!({"role": "assistant", "content": word})
            } else {
                json!({"content": word})
            };
            chunks.push(Ok(chunk(delta, Value::Null)));
        }
        chunks.push(Ok(chunk(json!({}), json!("stop"))));
        // Usage on a last chunk without choices, as OpenAI sends it; the gateway passes it on
        // only to clients that asked (`stream_options.include_usage`) and records it always.
        chunks.push(Ok(ChatChunk {
            data: Bytes::from(
                json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
                       "created": created, "model": model, "choices": [], "usage": usage(&text)})
                .to_string(),
            ),
        }));
        Ok(Box::pin(stream::iter(chunks)))
    }
}

/// The built-in adapters plus `echo`.
fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.register("echo", |name, config, _client| {
        Ok(std::sync::Arc::new(Echo::new(name, config)?))
    });
    registry
}

const CONFIG: &str = "\
providers:
  parrot:
    adapter: echo
    base_url: http://echo.invalid   # required by the config; Echo never connects
    models:
      repeat: {}
      repeat<loud>: { max_tokens: 10 }
";

#[tokio::test]
async fn a_registered_provider_is_served_like_a_builtin_one() {
    let gw = TestGateway::start_with_registry(CONFIG, &[], &registry()).await;

    let models = gw.client.get("/v1/models").await;
    assert_eq!(models.status, 200);
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"parrot/repeat".to_owned()), "{ids:?}");

    let answer = gw
        .client
        .chat(&json!({"model": "parrot/repeat", "messages": [{"role": "user", "content": "hello there"}]}))
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["choices"][0]["message"]["content"], "hello there");
    assert_eq!(body["model"], "repeat");
    assert_eq!(body["usage"]["total_tokens"], 4);

    // A variant reaches the provider under the model's upstream name.
    let answer = gw
        .client
        .chat(&json!({"model": "parrot/repeat<loud>", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.json()["model"], "repeat");

    let streamed = gw
        .client
        .chat(&json!({"model": "parrot/repeat", "stream": true,
                      "messages": [{"role": "user", "content": "one two three"}]}))
        .await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&streamed.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "one two three");
    assert!(
        !data.iter().any(|d| d.contains("\"usage\"")),
        "usage was not asked for: {data:?}"
    );

    // Errors of the provider reach the client OpenAI-shaped, with the right status.
    let bad = gw
        .client
        .chat(&json!({"model": "parrot/repeat", "messages": [{"role": "system", "content": "no user"}]}))
        .await;
    assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let missing = gw
        .client
        .chat(&json!({"model": "parrot/nothing", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(missing.status, 404);

    // The provider's usage lands in the usage database like any other.
    let db = gw.shutdown().await;
    let report = SqliteUsageReader::new(&db)
        .query(&UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by: GroupBy::Model,
            key: None,
        })
        .unwrap();
    let groups: Vec<_> = report
        .data
        .iter()
        .map(|g| {
            (
                g.group.as_str(),
                g.requests,
                g.errors,
                g.prompt_tokens,
                g.completion_tokens,
                g.estimated_requests,
            )
        })
        .collect();
    // (model, requests, errors, prompt, completion, estimated): "hello there" and the streamed
    // "one two three" report 2 + 3 tokens each way; the refused request counts as an error.
    assert_eq!(
        groups,
        vec![
            ("parrot/nothing", 1, 1, 0, 0, 0),
            ("parrot/repeat", 3, 1, 5, 5, 0),
            ("parrot/repeat<loud>", 1, 0, 1, 1, 0),
        ]
    );
}
