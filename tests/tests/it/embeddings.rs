//! `POST /v1/embeddings` through the running gateway: passed through to OpenAI-compatible
//! upstreams (bytes unaltered but `model`), translated to Gemini's `batchEmbedContents` and
//! back, refused for models that do not embed, routed with fallback, limited and recorded.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use llm_bridge_usage::{GroupBy, SqliteUsageReader, UsageQuery, UsageReader};
use serde_json::{Value, json};
use testkit::gemini::{API_KEY, gemini_provider};
use testkit::{Behavior, MockUpstream, TestGateway, config_with, fixture, openai_provider};

/// A recorded exchange (`request` / `response`, bodies as JSON) from the fixtures.
fn recorded(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn gemini_answer(exchange: &Value) -> Behavior {
    Behavior::json(200, exchange["response"]["body"].clone())
}

fn decode(b64: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn report(db: &std::path::Path) -> llm_bridge_usage::UsageReport {
    SqliteUsageReader::new(db)
        .query(&UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by: GroupBy::Model,
            key: None,
        })
        .unwrap()
}

const OPENAI_MODELS: &str = "      text-embedding-3-small: {}\n      gpt-4o: {}\n      my-vectors: { kind: embedding, upstream_model: e5-large }\n";
const GEMINI_MODELS: &str =
    "      gemini-embedding-2: {}\n      gemini-embedding-001: {}\n      gemini-2.5-flash: {}\n";

#[tokio::test]
async fn openai_embeddings_pass_through_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let answer = fixture("openai-embedding.response.json");
    mock.push(Behavior::raw(200, "application/json", answer.clone()));
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "openai",
        &mock.url(),
        OPENAI_MODELS,
    )]))
    .await;
    // Field order, spacing and numbers the gateway does not know must all survive.
    let sent = r#"{"input": ["sunny day at the beach", "rainy day in the city"],  "model":"openai/text-embedding-3-small","encoding_format":"float","dimensions":5,"user":"u-1","x_extra":1.50}"#;
    let request = gw
        .client
        .request(http::Method::POST, "/v1/embeddings")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(sent)))
        .unwrap();
    let got = gw.client.call(request).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        answer,
        "the answer unaltered"
    );
    assert_eq!(
        got.header("x-llm-bridge-target"),
        Some("openai/text-embedding-3-small")
    );
    let upstream = mock.last();
    assert_eq!(upstream.uri, "/v1/embeddings");
    assert_eq!(
        upstream.header("authorization"),
        Some("Bearer sk-upstream-openai")
    );
    assert_eq!(
        String::from_utf8_lossy(&upstream.body),
        r#"{"input":["sunny day at the beach", "rainy day in the city"],"model":"text-embedding-3-small","encoding_format":"float","dimensions":5,"user":"u-1","x_extra":1.50}"#,
        "only `model` changed"
    );

    // A configured name with its own upstream name and `kind`; base64 goes through as it came.
    mock.push(Behavior::json(
        200,
        json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPwAAAMA="}],
               "model": "e5-large", "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
    ));
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "openai/my-vectors", "input": [[1, 2, 3]], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        decode(got.json()["data"][0]["embedding"].as_str().unwrap()),
        vec![1.0, -2.0]
    );
    assert_eq!(mock.last().json()["model"], "e5-large");
    assert_eq!(mock.last().json()["input"], json!([[1, 2, 3]]));

    let db = gw.shutdown().await;
    let by_model = report(&db);
    let small = by_model
        .data
        .iter()
        .find(|g| g.group == "openai/text-embedding-3-small")
        .unwrap();
    assert_eq!(
        (small.requests, small.prompt_tokens, small.completion_tokens),
        (1, 12, 0)
    );
    assert_eq!(small.estimated_requests, 0);
    let mine = by_model
        .data
        .iter()
        .find(|g| g.group == "openai/my-vectors")
        .unwrap();
    assert_eq!((mine.requests, mine.prompt_tokens), (1, 3));
}

#[tokio::test]
async fn gemini_embeddings_are_translated_to_batch_embed_contents() {
    let mock = MockUpstream::start().await;
    let batch = recorded("gemini-embedding-batch.json");
    mock.push(gemini_answer(&batch));
    mock.push(gemini_answer(&batch));
    let gw = TestGateway::start(&config_with(&[gemini_provider(
        "gemini",
        &mock.url(),
        GEMINI_MODELS,
    )]))
    .await;
    let request = json!({"model": "gemini/gemini-embedding-2", "input": ["First text", "Second text"],
        "dimensions": 768, "encoding_format": "float", "user": "someone"});
    let got = gw.client.post("/v1/embeddings", &request).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));

    // Gemini receives what llm-gemini sent in the recording.
    let upstream = mock.last();
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-embedding-2:batchEmbedContents"
    );
    assert_eq!(upstream.header("x-goog-api-key"), Some(API_KEY));
    assert_eq!(upstream.json(), batch["request"]["body"]);

    // The client gets OpenAI's shape, Gemini's numbers, Gemini's count.
    let body = got.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "gemini-embedding-2");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(
            item["embedding"],
            batch["response"]["body"]["embeddings"][i]["values"]
        );
        assert_eq!(item["embedding"].as_array().unwrap().len(), 768);
    }
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );

    // base64: little-endian f32, encoded by the gateway.
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "gemini/gemini-embedding-2", "input": ["First text", "Second text"],
                    "dimensions": 768, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(got.status, 200);
    let body = got.json();
    for i in 0..2 {
        let expected: Vec<f32> = batch["response"]["body"]["embeddings"][i]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            decode(body["data"][i]["embedding"].as_str().unwrap()),
            expected
        );
    }
    let db = gw.shutdown().await;
    let g = report(&db);
    let g = g
        .data
        .iter()
        .find(|g| g.group == "gemini/gemini-embedding-2")
        .unwrap();
    assert_eq!(
        (g.requests, g.prompt_tokens, g.estimated_requests),
        (2, 8, 0)
    );
}

#[tokio::test]
async fn an_answer_without_usage_gets_the_gateways_estimate() {
    let mock = MockUpstream::start().await;
    let single = recorded("gemini-embedding-001-768.json");
    mock.push(gemini_answer(&single));
    let gw = TestGateway::start(&config_with(&[gemini_provider(
        "gemini",
        &mock.url(),
        GEMINI_MODELS,
    )]))
    .await;
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "gemini/gemini-embedding-001", "input": "Some text goes here", "dimensions": 768,
                    "task_type": "RETRIEVAL_DOCUMENT"}),
        )
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let mut expected = single["request"]["body"].clone();
    expected["requests"][0]["taskType"] = json!("RETRIEVAL_DOCUMENT");
    assert_eq!(mock.last().json(), expected);
    let body = got.json();
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 768);
    // "Some text goes here" is 4 tokens in o200k.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    let db = gw.shutdown().await;
    let r = report(&db);
    let g = r
        .data
        .iter()
        .find(|g| g.group == "gemini/gemini-embedding-001")
        .unwrap();
    assert_eq!(
        (g.requests, g.prompt_tokens, g.estimated_requests),
        (1, 4, 1)
    );
}

#[tokio::test]
async fn models_without_embeddings_are_refused_by_name() {
    let openai = MockUpstream::start().await;
    let gemini = MockUpstream::start().await;
    let anthropic = MockUpstream::start().await;
    gemini.push(Behavior::json(
        404,
        serde_json::from_str(&fixture("gemini-error-404-batchEmbedContents.json")).unwrap(),
    ));
    let gw = TestGateway::start(&config_with(&[
        openai_provider("openai", &openai.url(), OPENAI_MODELS),
        gemini_provider("gemini", &gemini.url(), GEMINI_MODELS),
        testkit::anthropic::anthropic_provider(
            "claude",
            &anthropic.url(),
            "      claude-embedding-x: {}\n",
        ),
    ]))
    .await;
    for model in [
        "openai/gpt-4o",
        "gemini/gemini-2.5-flash",
        "claude/claude-embedding-x",
    ] {
        let got = gw
            .client
            .post("/v1/embeddings", &json!({"model": model, "input": "hi"}))
            .await;
        assert_eq!(got.status, 400, "{model}");
        let body = got.json();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(model),
            "{body}"
        );
    }
    // Gemini embeds text only.
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "gemini/gemini-embedding-001", "input": [[1, 2]]}),
        )
        .await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["param"], "input");
    // Unknown: 404; no model: 400.
    assert_eq!(
        gw.client
            .post(
                "/v1/embeddings",
                &json!({"model": "openai/nope", "input": "x"})
            )
            .await
            .status,
        404
    );
    assert_eq!(
        gw.client
            .post("/v1/embeddings", &json!({"input": "x"}))
            .await
            .status,
        400
    );
    // An upstream's own error keeps its status (Gemini's 404 for a model it lacks).
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "gemini/gemini-embedding-001", "input": "x"}),
        )
        .await;
    assert_eq!(got.status, 404, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(openai.request_count(), 0);
    assert_eq!(anthropic.request_count(), 0);
    // The key has no access without a key.
    assert_eq!(
        gw.client
            .with_key(None)
            .post(
                "/v1/embeddings",
                &json!({"model": "openai/text-embedding-3-small", "input": "x"})
            )
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn routes_fall_back_between_embedding_targets_and_models_say_their_kind() {
    let openai = MockUpstream::start().await;
    let gemini = MockUpstream::start().await;
    openai.push(Behavior::json(
        500,
        json!({"error": {"message": "boom", "type": "server_error"}}),
    ));
    gemini.push(gemini_answer(&recorded("gemini-embedding-batch.json")));
    let yaml = format!(
        "{}routes:\n  vectors:\n    strategy: fallback\n    targets: [openai/text-embedding-3-small, gemini/gemini-embedding-2]\n",
        config_with(&[
            openai_provider("openai", &openai.url(), OPENAI_MODELS),
            gemini_provider("gemini", &gemini.url(), GEMINI_MODELS),
        ])
    );
    let gw = TestGateway::start(&yaml).await;
    let got = gw
        .client
        .post(
            "/v1/embeddings",
            &json!({"model": "vectors", "input": ["First text", "Second text"], "dimensions": 768}),
        )
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        got.header("x-llm-bridge-target"),
        Some("gemini/gemini-embedding-2")
    );
    assert_eq!(openai.request_count(), 1);
    assert_eq!(got.json()["data"].as_array().unwrap().len(), 2);

    let models = gw.client.get("/v1/models").await.json();
    let kind = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["kind"].clone())
            .unwrap()
    };
    assert_eq!(kind("vectors"), "embedding");
    assert_eq!(kind("openai/text-embedding-3-small"), "embedding");
    assert_eq!(kind("openai/my-vectors"), "embedding");
    assert_eq!(kind("openai/gpt-4o"), "chat");
    assert_eq!(kind("gemini/gemini-embedding-001"), "embedding");
    assert_eq!(kind("gemini/gemini-2.5-flash"), "chat");
}
