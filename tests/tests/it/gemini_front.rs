//! Gemini's own API in front (`/v1beta/models/{model}:{method}`): forwarded as bytes to
//! `gemini` providers (the model is in the URL), translated for every other adapter, with
//! Google's key placements and error shape, models listed in Gemini's shape, usage recorded.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::Full;
use llm_bridge_usage::{GroupBy, UsageQuery, UsageReader};
use serde_json::{Value, json};
use testkit::gemini::{API_KEY, gemini_provider};
use testkit::{Behavior, MockUpstream, TEST_KEY, TestGateway, config_with, openai_provider};

async fn gateway(gemini: &MockUpstream, openai: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[
        gemini_provider(
            "gem",
            &gemini.url(),
            "      gemini-2.5-flash: {}\n      gemini-embedding-001: {}\n",
        ),
        openai_provider(
            "oai",
            &openai.url(),
            "      gpt-4o: {}\n      text-embedding-3-small: {}\n",
        ),
    ]))
    .await
}

/// A POST with Google's key header (or none), the key never in `Authorization`.
async fn post(gw: &TestGateway, path: &str, body: &str, key: Option<&str>) -> testkit::Answer {
    let client = gw.client.with_key(None);
    let mut builder = client
        .request(http::Method::POST, path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("x-goog-api-key", key);
    }
    client
        .call(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
}

fn events(answer: &testkit::Answer) -> Vec<Value> {
    answer
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn gemini_targets_get_the_bytes_and_answer_with_theirs() {
    let gemini = MockUpstream::start().await;
    let openai = MockUpstream::start().await;
    let answer = r#"{"candidates": [{"content": {"parts": [{"text": "Hi there"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 4,"candidatesTokenCount": 2,"totalTokenCount": 6},"modelVersion": "gemini-2.5-flash"}"#;
    gemini.push(Behavior::raw(200, "application/json", answer));
    let gw = gateway(&gemini, &openai).await;
    let sent = r#"{"contents": [{"role": "user","parts": [{"text": "Hello"}]}], "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}"#;
    let got = post(
        &gw,
        "/v1beta/models/gem/gemini-2.5-flash:generateContent",
        sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(String::from_utf8_lossy(&got.body), answer);
    let upstream = gemini.last();
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(upstream.header("x-goog-api-key"), Some(API_KEY));
    assert_eq!(String::from_utf8_lossy(&upstream.body), sent);

    // A stream, with the key in the query as Google's samples put it: forwarded as it came.
    let stream = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 4}}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}}\r\n\r\n";
    gemini.push(Behavior::replay(stream, std::time::Duration::ZERO));
    let got = post(
        &gw,
        &format!(
            "/v1beta/models/gem/gemini-2.5-flash:streamGenerateContent?alt=sse&key={TEST_KEY}"
        ),
        sent,
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(String::from_utf8_lossy(&got.body), stream);
    assert_eq!(
        gemini.last().uri,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "the client's key never goes upstream"
    );

    // countTokens: Gemini counts for itself.
    gemini.push(Behavior::json(200, json!({"totalTokens": 31})));
    let got = post(
        &gw,
        "/v1beta/models/gem/gemini-2.5-flash:countTokens",
        sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.json(), json!({"totalTokens": 31}));
    assert_eq!(
        gemini.last().uri,
        "/v1beta/models/gemini-2.5-flash:countTokens"
    );
    assert_eq!(openai.request_count(), 0);

    let db = gw.shutdown().await;
    let report = llm_bridge_usage::SqliteUsageReader::new(&db)
        .query(&UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by: GroupBy::Model,
            key: None,
        })
        .unwrap();
    let g = report
        .data
        .iter()
        .find(|g| g.group == "gem/gemini-2.5-flash")
        .unwrap();
    assert_eq!(
        (g.requests, g.prompt_tokens, g.completion_tokens),
        (2, 8, 4)
    );
    assert_eq!(g.estimated_requests, 0);
}

#[tokio::test]
async fn other_targets_are_translated_both_ways() {
    let gemini = MockUpstream::start().await;
    let openai = MockUpstream::start().await; // echoes chat, computes embeddings
    let gw = gateway(&gemini, &openai).await;
    let sent = json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64},
    })
    .to_string();
    let got = post(
        &gw,
        "/v1beta/models/oai/gpt-4o:generateContent",
        &sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let body = got.json();
    assert_eq!(
        body["candidates"][0]["content"],
        json!({"role": "model", "parts": [{"text": "echo: hello there"}]})
    );
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 11);
    assert_eq!(body["usageMetadata"]["candidatesTokenCount"], 7);
    let upstream = openai.last();
    assert_eq!(upstream.uri, "/v1/chat/completions");
    assert_eq!(
        upstream.json()["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}])
    );
    assert_eq!(upstream.json()["max_tokens"], 64);
    assert_eq!(upstream.json()["model"], "gpt-4o");

    let got = post(
        &gw,
        "/v1beta/models/oai/gpt-4o:streamGenerateContent?alt=sse",
        &sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = events(&got);
    let text: String = events
        .iter()
        .flat_map(|e| {
            e["candidates"][0]["content"]["parts"]
                .as_array()
                .unwrap()
                .clone()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "echo: hello there");
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 11);

    // countTokens: the gateway's estimate.
    let got = post(
        &gw,
        "/v1beta/models/oai/gpt-4o:countTokens",
        &sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.json()["totalTokens"].as_u64().unwrap() > 0);

    // Embeddings: through /v1/embeddings of the OpenAI target, and Gemini's batch API.
    let one =
        json!({"content": {"parts": [{"text": "vectors please"}]}, "outputDimensionality": 4});
    let got = post(
        &gw,
        "/v1beta/models/oai/text-embedding-3-small:embedContent",
        &one.to_string(),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let expected: Vec<f64> = testkit::embeddings::vector("vectors please", 4)
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(got.json(), json!({"embedding": {"values": expected}}));
    assert_eq!(openai.last().uri, "/v1/embeddings");
    let batch = json!({"requests": [
        {"model": "models/gem/gemini-embedding-001", "content": {"parts": [{"text": "vectors please"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"},
        {"model": "models/gem/gemini-embedding-001", "content": {"parts": [{"text": "and more"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"}]});
    let got = post(
        &gw,
        "/v1beta/models/gem/gemini-embedding-001:batchEmbedContents",
        &batch.to_string(),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["embeddings"][0]["values"], json!(expected));
    assert_eq!(got.json()["embeddings"].as_array().unwrap().len(), 2);
    let upstream = gemini.last();
    assert_eq!(
        upstream.uri,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(
        upstream.json()["requests"][1]["taskType"],
        "RETRIEVAL_QUERY"
    );
    assert_eq!(
        upstream.json()["requests"][1]["model"],
        "models/gemini-embedding-001"
    );
}

#[tokio::test]
async fn keys_errors_and_models_in_gemini_shapes() {
    let gemini = MockUpstream::start().await;
    let openai = MockUpstream::start().await;
    let gw = gateway(&gemini, &openai).await;
    let sent = r#"{"contents": [{"parts": [{"text": "x"}]}]}"#;
    let got = post(&gw, "/v1beta/models/oai/gpt-4o:generateContent", sent, None).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(got.json()["error"]["code"], 401);
    let got = post(
        &gw,
        "/v1beta/models/oai/nope:generateContent",
        sent,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["error"]["status"], "NOT_FOUND");
    let got = post(
        &gw,
        "/v1beta/models/oai/gpt-4o:generateContent",
        r#"{"contents": []}"#,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["status"], "INVALID_ARGUMENT");
    let got = post(
        &gw,
        "/v1beta/models/oai/gpt-4o:embedContent",
        r#"{"content": {"parts": [{"text": "x"}]}}"#,
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(got.status, 400, "a chat model embeds nothing");
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("oai/gpt-4o")
    );
    assert_eq!(gemini.request_count() + openai.request_count(), 0);

    let listed = gw
        .client
        .with_key(None)
        .get(&format!("/v1beta/models?key={TEST_KEY}"))
        .await;
    assert_eq!(
        listed.status,
        200,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    let names: Vec<String> = listed.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"models/gem/gemini-2.5-flash".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"models/oai/text-embedding-3-small".to_owned()));
    let one = gw
        .client
        .with_key(None)
        .get(&format!(
            "/v1beta/models/gem/gemini-embedding-001?key={TEST_KEY}"
        ))
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(
        one.json()["supportedGenerationMethods"],
        json!(["embedContent", "batchEmbedContents"])
    );
    let missing = gw
        .client
        .with_key(None)
        .get(&format!("/v1beta/models/gem/nope?key={TEST_KEY}"))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["status"], "NOT_FOUND");
    // Under /v1 with Google's key header (the Google GenAI SDK given a base URL): Gemini's.
    let client = gw.client.with_key(None);
    let request = client
        .request(http::Method::GET, "/v1/models/gem/gemini-2.5-flash")
        .header("x-goog-api-key", TEST_KEY)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let one = client.call(request).await;
    assert_eq!(one.status, 200, "{}", String::from_utf8_lossy(&one.body));
    assert_eq!(one.json()["name"], "models/gem/gemini-2.5-flash");
    // OpenAI's /v1/models is untouched.
    assert_eq!(gw.client.get("/v1/models").await.json()["object"], "list");
}
