//! The server around the API: model listing, health, HTTP/2, graceful shutdown.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Full};
use serde_json::json;
use testkit::{Echo, MockUpstream, TestGateway, config_with, openai_provider};

#[tokio::test]
async fn models_are_listed_as_provider_slash_model() {
    let mock = MockUpstream::start().await;
    let yaml = config_with(&[
        openai_provider(
            "closeai",
            &mock.url(),
            "      gpt-4o: {}\n      o3-mini<high>: {}\n      \"*\": {}\n",
        ),
        openai_provider("deepseek", &mock.url(), "      deepseek-chat: {}\n"),
    ]);
    let gw = TestGateway::start(&yaml).await;
    let answer = gw.client.get("/v1/models").await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "closeai/gpt-4o",
            "closeai/o3-mini<high>",
            "deepseek/deepseek-chat"
        ]
    );
    for m in body["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert!(m["created"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            m["owned_by"],
            m["id"].as_str().unwrap().split('/').next().unwrap()
        );
    }
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "m",
        &mock.url(),
        "      x: {}\n",
    )]))
    .await;
    let anonymous = gw.client.with_key(None);
    let health = anonymous.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(anonymous.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn http2_with_prior_knowledge_works() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "m",
        &mock.url(),
        "      x: {}\n",
    )]))
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = http::Request::post(format!("{}/v1/chat/completions", gw.url()))
        .header("authorization", format!("Bearer {}", testkit::TEST_KEY))
        .body(Full::new(Bytes::from(
            json!({"model": "m/x", "stream": true, "messages": [{"role": "user", "content": "h2"}]}).to_string(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let events = testkit::sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events
            .iter()
            .any(|e| e.contains("echo: h2") || e.contains("h2"))
    );
}

#[tokio::test]
async fn shutdown_drains_streams_in_flight_and_stops_accepting() {
    let mock = MockUpstream::start().await;
    mock.set_default(testkit::Behavior::Echo(Echo {
        chunks: 8,
        delay: Duration::from_millis(40),
        ..Echo::default()
    }));
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "m",
        &mock.url(),
        "      x: {}\n",
    )]))
    .await;
    let url = gw.url();
    let client = gw.client.clone();
    let request = client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(Full::new(Bytes::from(
            json!({"model": "m/x", "stream": true, "messages": [{"role": "user", "content": "drain me"}]}).to_string(),
        )))
        .unwrap();
    let response = client.send(request).await;
    let mut body = BodyStream::new(response.into_body());
    let first = body.next().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));

    let shutdown = tokio::spawn(gw.shutdown());
    // The stream in flight still completes.
    let mut rest = Vec::new();
    while let Some(frame) = body.next().await {
        if let Ok(data) = frame.expect("the stream is not cut").into_data() {
            rest.extend_from_slice(&data);
        }
    }
    let events = testkit::sse_data(&rest);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
    // And nobody new gets in.
    let refused = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
    assert_eq!(mock.finished(), 1);
}
