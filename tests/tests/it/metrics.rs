//! `GET /metrics` in Prometheus' text format, read with a Prometheus text-format parser: the
//! counters match the requests sent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use serde_json::json;
use testkit::{Behavior, Echo, MockUpstream, TestGateway, config_with, openai_provider};

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text format")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|m| m.metric == name && labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
        .map(|m| match &m.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn counters_match_the_requests_sent() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n",
    )]))
    .await;
    let c = &gw.client;
    for _ in 0..3 {
        assert_eq!(
            c.chat(&json!({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}))
                .await
                .status,
            200
        );
    }
    for _ in 0..2 {
        let a = c.chat(&json!({"model": "up/m", "stream": true, "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(a.status, 200);
    }
    mock.push(Behavior::json(503, json!({"error": {"message": "down"}})));
    assert_eq!(
        c.chat(&json!({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}))
            .await
            .status,
        502
    );
    assert_eq!(
        c.chat(&json!({"model": "up/zzz", "messages": [{"role": "user", "content": "x"}]}))
            .await
            .status,
        404
    );

    // Access events and metrics are emitted as requests end: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = c.with_key(None).get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let s = scrape(&text);

    let ok = [
        ("provider", "up"),
        ("model", "up/m"),
        ("status", "200"),
        ("transport", "http"),
    ];
    assert_eq!(value(&s, "llm_bridge_requests_total", &ok), 5.0, "{text}");
    assert_eq!(
        value(&s, "llm_bridge_requests_total", &[("status", "502")]),
        1.0
    );
    assert_eq!(
        value(&s, "llm_bridge_requests_total", &[("status", "404")]),
        1.0
    );
    // The mock reports 11 prompt and 7 completion tokens per answer.
    assert_eq!(
        value(
            &s,
            "llm_bridge_tokens_total",
            &[("model", "up/m"), ("kind", "prompt")]
        ),
        55.0
    );
    assert_eq!(
        value(
            &s,
            "llm_bridge_tokens_total",
            &[("model", "up/m"), ("kind", "completion")]
        ),
        35.0
    );
    assert_eq!(
        value(
            &s,
            "llm_bridge_upstream_errors_total",
            &[("provider", "up"), ("kind", "upstream_unavailable")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "llm_bridge_request_duration_seconds_count",
            &[("provider", "up")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &s,
            "llm_bridge_time_to_first_token_seconds_count",
            &[("provider", "up")]
        ),
        2.0
    );
    assert_eq!(
        value(&s, "llm_bridge_gateway_overhead_seconds_count", &[]),
        5.0
    );
    assert_eq!(value(&s, "llm_bridge_in_flight_requests", &[]), 0.0);
    assert_eq!(value(&s, "llm_bridge_in_flight_streams", &[]), 0.0);
    assert!(
        s.samples
            .iter()
            .any(|m| m.metric == "llm_bridge_usage_queue_depth")
    );
}

#[tokio::test]
async fn in_flight_gauges_count_open_streams() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 100,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n",
    )]))
    .await;
    let client = gw.client.clone();
    let request = client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "up/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        )))
        .unwrap();
    let response = client.send(request).await;
    let text = String::from_utf8(gw.client.get("/metrics").await.body.to_vec()).unwrap();
    let s = scrape(&text);
    assert_eq!(
        value(&s, "llm_bridge_in_flight_streams", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "llm_bridge_in_flight_requests", &[]),
        1.0,
        "{text}"
    );
    drop(response);
    mock.wait_cancelled(1).await;
    // The cancelled stream's tokens are estimated off the request path: wait for its record.
    let mut s = scrape("");
    for _ in 0..250 {
        s = scrape(std::str::from_utf8(&gw.client.get("/metrics").await.body).unwrap());
        if value(&s, "llm_bridge_requests_total", &[]) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(value(&s, "llm_bridge_in_flight_streams", &[]), 0.0);
    assert_eq!(value(&s, "llm_bridge_in_flight_requests", &[]), 0.0);
    assert_eq!(
        value(&s, "llm_bridge_requests_total", &[("status", "200")]),
        1.0
    );
}

#[tokio::test]
async fn a_metrics_token_protects_the_endpoint() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "metrics: {{ token: sk-metrics-secret }}\n{}",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(gw.client.with_key(None).get("/metrics").await.status, 401);
    assert_eq!(
        gw.client.get("/metrics").await.status,
        401,
        "an access key is not the metrics token"
    );
    let ok = gw
        .client
        .with_key(Some("sk-metrics-secret"))
        .get("/metrics")
        .await;
    assert_eq!(ok.status, 200);
    let _ = scrape(std::str::from_utf8(&ok.body).unwrap());
}
