//! OpenTelemetry traces: an OTLP/HTTP receiver in the test decodes what the gateway exports
//! (`ExportTraceServiceRequest`, protobuf) and checks the spans of a retried chat request,
//! a stream and a Messages request: parentage, the client's trace continued, the upstream's
//! `traceparent`, the GenAI attributes, and no content unless asked. With the collector
//! down, answers and latency are what they are without traces.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use testkit::{Behavior, MockUpstream, TestGateway, config_with, openai_provider, sse_data};
use tokio::net::TcpListener;

/// What the receiver got: the spans and the resource's `service.name` of every export.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
    content_types: Vec<String>,
    paths: Vec<String>,
}

/// An OTLP/HTTP collector on `127.0.0.1:0`.
struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            let mut r = state.lock().unwrap();
                            r.paths.push(path);
                            r.content_types.push(content_type);
                            for rs in export.resource_spans {
                                if let Some(res) = rs.resource {
                                    for kv in res.attributes {
                                        if kv.key == "service.name" {
                                            if let Some(Any::StringValue(s)) =
                                                kv.value.and_then(|v| v.value)
                                            {
                                                r.services.push(s);
                                            }
                                        }
                                    }
                                }
                                for ss in rs.scope_spans {
                                    r.spans.extend(ss.spans);
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            url,
            received,
            task,
        }
    }

    /// The spans of trace `trace_id`, once there are `n` of them (or after 10 s).
    async fn trace(&self, trace_id: &[u8], n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .received
                .lock()
                .unwrap()
                .spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attrs(span: &Span) -> HashMap<String, Any> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

fn s(v: &str) -> Any {
    Any::StringValue(v.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// `(trace id, span id, flags)` of a `traceparent` header.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

const SECRET_PROMPT: &str = "the launch code is 0451";

async fn gateway(mock: &MockUpstream, telemetry: &str) -> TestGateway {
    TestGateway::start(&format!(
        "retry: {{ attempts: 2, base_delay: 0.01, max_delay: 0.02 }}\n{telemetry}default_provider: p\n{}",
        config_with(&[openai_provider(
            "p",
            &mock.url(),
            "      m: { price: { input: 1.0, output: 2.0 } }\n",
        )])
    ))
    .await
}

fn telemetry(collector: &Collector, extra: &str) -> String {
    format!(
        "telemetry: {{ otlp_endpoint: \"{}\", service_name: bridge-under-test{extra} }}\n",
        collector.url
    )
}

async fn chat_with_traceparent(gw: &TestGateway, body: &Value, tp: &str) -> testkit::Answer {
    gw.client
        .call(
            gw.client
                .request(http::Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header("traceparent", tp)
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn a_retried_request_is_one_trace_continued_from_the_client_with_a_span_per_attempt() {
    let collector = Collector::start().await;
    let mock = MockUpstream::start().await;
    mock.push(Behavior::json(
        500,
        json!({"error": {"message": "upstream fell over", "type": "server_error"}}),
    ));
    let gw = gateway(&mock, &telemetry(&collector, "")).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let answer = chat_with_traceparent(
        &gw,
        &json!({"model": "p/m", "max_tokens": 64,
                "messages": [{"role": "user", "content": SECRET_PROMPT}]}),
        &format!("00-{trace_id}-{client_span}-01"),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    // Both upstream requests carried the client's trace, each with its own attempt span.
    let upstream: Vec<(String, String, String)> = mock
        .requests()
        .iter()
        .map(|r| traceparent(r.header("traceparent").expect("traceparent upstream")))
        .collect();
    assert_eq!(upstream.len(), 2);
    assert!(upstream.iter().all(|(t, _, f)| t == trace_id && f == "01"));
    assert_ne!(upstream[0].1, upstream[1].1);

    let spans = collector.trace(&unhex(trace_id), 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(hex(&server.parent_span_id), client_span);
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2);
    for (attempt, (_, span_id, _)) in attempts.iter().zip(&upstream) {
        assert_eq!(attempt.parent_span_id, server.span_id);
        assert_eq!(
            &hex(&attempt.span_id),
            span_id,
            "the upstream saw the attempt's span"
        );
        assert!(attempt.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);
        assert_eq!(attempt.name, "chat m");
    }
    // The failed attempt, then the one that served.
    let first = attrs(attempts[0]);
    assert_eq!(first["error.type"], s("upstream_unavailable"));
    assert_eq!(attempts[0].status.as_ref().unwrap().code, 2);
    assert!(attempts[0].end_time_unix_nano <= attempts[1].start_time_unix_nano);
    let second = attrs(attempts[1]);
    assert!(!second.contains_key("error.type"));
    for a in [&first, &second] {
        assert_eq!(a["gen_ai.operation.name"], s("chat"));
        assert_eq!(a["gen_ai.provider.name"], s("p"));
        assert_eq!(a["gen_ai.request.model"], s("m"));
        assert_eq!(a["gen_ai.request.max_tokens"], Any::IntValue(64));
    }
    assert_eq!(second["gen_ai.response.model"], s("m"));
    assert_eq!(second["gen_ai.usage.input_tokens"], Any::IntValue(11));
    assert_eq!(second["gen_ai.usage.output_tokens"], Any::IntValue(7));

    let server_attrs = attrs(server);
    assert_eq!(server_attrs["gen_ai.operation.name"], s("chat"));
    assert_eq!(server_attrs["gen_ai.request.model"], s("p/m"));
    assert_eq!(server_attrs["gen_ai.response.model"], s("m"));
    assert_eq!(server_attrs["gen_ai.provider.name"], s("p"));
    assert_eq!(server_attrs["gen_ai.request.max_tokens"], Any::IntValue(64));
    assert_eq!(server_attrs["gen_ai.usage.input_tokens"], Any::IntValue(11));
    assert_eq!(server_attrs["gen_ai.usage.output_tokens"], Any::IntValue(7));
    match &server_attrs["gen_ai.response.finish_reasons"] {
        Any::ArrayValue(a) => assert_eq!(a.values[0].value, Some(s("stop"))),
        other => panic!("finish reasons: {other:?}"),
    }
    assert_eq!(server_attrs["llm_bridge.outcome"], s("ok"));
    assert_eq!(server_attrs["llm_bridge.retries"], Any::IntValue(1));
    assert_eq!(
        server_attrs["http.response.status_code"],
        Any::IntValue(200)
    );
    assert!(matches!(&server_attrs["llm_bridge.key"], Any::StringValue(k) if !k.is_empty()));
    // 11 prompt tokens at $1/M and 7 completion tokens at $2/M.
    match server_attrs["llm_bridge.cost_usd"] {
        Any::DoubleValue(cost) => assert!((cost - 0.000_025).abs() < 1e-12, "{cost}"),
        ref other => panic!("cost: {other:?}"),
    }
    assert!(server.status.is_none(), "an answered request is no error");

    // No prompt or answer text leaves without capture_content.
    for span in &spans {
        for (key, value) in attrs(span) {
            assert!(!key.contains("messages"), "{key}");
            assert!(!format!("{value:?}").contains("0451"), "{key}: {value:?}");
        }
    }
    let received = collector.received.lock().unwrap();
    assert!(received.services.iter().all(|s| s == "bridge-under-test"));
    assert!(received.paths.iter().all(|p| p == "/v1/traces"));
    assert!(
        received
            .content_types
            .iter()
            .all(|c| c == "application/x-protobuf")
    );
}

#[tokio::test]
async fn a_stream_and_a_messages_request_are_traced_and_an_unsampled_client_trace_passed_on() {
    let collector = Collector::start().await;
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, &telemetry(&collector, "")).await;

    // A stream, with no traceparent: a new trace, whose id the upstream saw.
    let answer = gw
        .client
        .chat(
            &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": SECRET_PROMPT}]}),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(sse_data(&answer.body).last().is_some_and(|d| d == "[DONE]"));
    let (trace_id, span_id, flags) = traceparent(mock.last().header("traceparent").unwrap());
    assert_eq!(flags, "01");
    let spans = collector.trace(&unhex(&trace_id), 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let attempt = spans.iter().find(|s| s.kind == 3).unwrap();
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace has a root span"
    );
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(hex(&attempt.span_id), span_id);
    // The attempt that served a stream lasts as long as the stream.
    assert_eq!(attempt.end_time_unix_nano, server.end_time_unix_nano);
    let a = attrs(server);
    assert_eq!(a["llm_bridge.stream"], Any::BoolValue(true));
    assert_eq!(a["gen_ai.request.model"], s("m"));
    assert_eq!(a["gen_ai.response.model"], s("m"));
    assert_eq!(a["gen_ai.usage.output_tokens"], Any::IntValue(7));
    match &a["gen_ai.response.finish_reasons"] {
        Any::ArrayValue(v) => assert_eq!(v.values.len(), 1),
        other => panic!("finish reasons: {other:?}"),
    }

    // A Messages request (translated for an OpenAI-compatible target).
    let before = mock.request_count();
    let answer = gw
        .client
        .call(
            gw.client
                .request(http::Method::POST, "/v1/messages")
                .header("anthropic-version", "2023-06-01")
                .body(Full::new(Bytes::from(
                    json!({"model": "p/m", "max_tokens": 100,
                           "messages": [{"role": "user", "content": SECRET_PROMPT}]})
                    .to_string(),
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(mock.request_count(), before + 1);
    let (trace_id, span_id, _) = traceparent(mock.last().header("traceparent").unwrap());
    let spans = collector.trace(&unhex(&trace_id), 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let attempt = spans.iter().find(|s| s.kind == 3).unwrap();
    assert_eq!(server.name, "POST /v1/messages");
    assert_eq!(hex(&attempt.span_id), span_id);
    assert_eq!(attempt.parent_span_id, server.span_id);
    let a = attrs(server);
    assert_eq!(a["gen_ai.request.max_tokens"], Any::IntValue(100));
    assert_eq!(a["gen_ai.usage.input_tokens"], Any::IntValue(11));
    assert_eq!(a["llm_bridge.outcome"], s("ok"));
    for span in &spans {
        for (key, value) in attrs(span) {
            assert!(!format!("{value:?}").contains("0451"), "{key}: {value:?}");
        }
    }

    // The client decided not to sample its trace: passed on as it came, nothing exported.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let answer = chat_with_traceparent(
        &gw,
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        unsampled,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(mock.last().header("traceparent"), Some(unsampled));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        collector
            .trace(&unhex("0af7651916cd43dd8448eb211c80319c"), 0)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn content_is_exported_only_with_capture_content() {
    let collector = Collector::start().await;
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock, &telemetry(&collector, ", capture_content: true")).await;
    for stream in [false, true] {
        let answer = gw
            .client
            .chat(&json!({"model": "m", "stream": stream,
                          "messages": [{"role": "user", "content": SECRET_PROMPT}]}))
            .await;
        assert_eq!(answer.status, 200);
        let (trace_id, _, _) = traceparent(mock.last().header("traceparent").unwrap());
        let spans = collector.trace(&unhex(&trace_id), 2).await;
        let server = spans.iter().find(|s| s.kind == 2).unwrap();
        let a = attrs(server);
        let Any::StringValue(input) = &a["gen_ai.input.messages"] else {
            panic!("input messages")
        };
        let input: Value = serde_json::from_str(input).unwrap();
        assert_eq!(input[0]["content"], SECRET_PROMPT);
        let Any::StringValue(output) = &a["gen_ai.output.messages"] else {
            panic!("output messages")
        };
        let output: Value = serde_json::from_str(output).unwrap();
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(
            output[0]["parts"][0]["content"],
            format!("echo: {SECRET_PROMPT}"),
            "stream: {stream}"
        );
    }
}

#[tokio::test]
async fn with_the_collector_down_answers_and_latency_are_unaffected() {
    // A port nothing listens on: every export fails at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A collector that accepts connections and never answers: every export hangs until its
    // timeout (10 s). Were exports on the request path, each request would wait as long.
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let mock = MockUpstream::start().await;
    let plain = gateway(&mock, "").await;
    let down = gateway(
        &mock,
        &format!("telemetry: {{ otlp_endpoint: \"http://{closed}\" }}\n"),
    )
    .await;
    let stuck = gateway(
        &mock,
        &format!("telemetry: {{ otlp_endpoint: \"http://{hanging_addr}\" }}\n"),
    )
    .await;
    // Without telemetry, nothing is added upstream, whatever the client sends.
    let answer = chat_with_traceparent(
        &plain,
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(mock.last().header("traceparent"), None);

    let body = json!({"model": "m", "messages": [{"role": "user", "content": "latency"}]});
    let gateways = [&plain, &down, &stuck];
    // All warm: a first request opens the pooled connections.
    for gw in gateways {
        assert_eq!(gw.client.chat(&body).await.status, 200);
    }
    let mut slowest = [Duration::ZERO; 3];
    let mut total = [Duration::ZERO; 3];
    let mut answers: [Vec<Value>; 3] = Default::default();
    for round in 0..50 {
        for (i, gw) in gateways.into_iter().enumerate() {
            let started = Instant::now();
            let answer = gw.client.chat(&body).await;
            slowest[i] = slowest[i].max(started.elapsed());
            total[i] += started.elapsed();
            assert_eq!(answer.status, 200, "round {round}");
            let mut json = answer.json();
            json["id"] = Value::Null;
            answers[i].push(json);
        }
    }
    eprintln!(
        "50 requests each, mean / slowest: without traces {:?} / {:?}; collector refusing {:?} / {:?}; collector hanging {:?} / {:?}",
        total[0] / 50,
        slowest[0],
        total[1] / 50,
        slowest[1],
        total[2] / 50,
        slowest[2]
    );
    for i in [1, 2] {
        assert_eq!(
            answers[0], answers[i],
            "the same answers with and without traces"
        );
        // A wide margin for a shared machine, far below the 10 s an export can hang.
        assert!(
            slowest[i] < slowest[0] + Duration::from_secs(1),
            "slowest with the collector down {:?}, without traces {:?}",
            slowest[i],
            slowest[0]
        );
    }
    // The failed exports are counted, not waited for.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = String::from_utf8(down.client.get("/metrics").await.body.to_vec()).unwrap();
        let failures = metrics
            .lines()
            .find(|l| l.starts_with("llm_bridge_telemetry_export_failures_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if failures >= 1.0 {
            assert!(metrics.contains("llm_bridge_telemetry_traces_dropped_total 0"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.abort();
}

#[tokio::test]
async fn a_fallback_from_a_native_anthropic_target_to_a_translated_one_shows_both_attempts() {
    let collector = Collector::start().await;
    let anthropic = MockUpstream::start().await;
    anthropic.push(testkit::anthropic::overloaded());
    let chat = MockUpstream::start().await;
    let gw = TestGateway::start(&format!(
        "retry: {{ attempts: 1 }}\n{}routes:\n  smart: {{ strategy: fallback, targets: [claude/claude-sonnet-4-5, up/m] }}\n{}",
        telemetry(&collector, ""),
        config_with(&[
            testkit::anthropic::anthropic_provider(
                "claude",
                &anthropic.url(),
                "      claude-sonnet-4-5: {}\n",
            ),
            openai_provider("up", &chat.url(), "      m: {}\n"),
        ])
    ))
    .await;
    let answer = gw
        .client
        .call(
            gw.client
                .request(http::Method::POST, "/v1/messages")
                .header("anthropic-version", "2023-06-01")
                .header(
                    "traceparent",
                    "00-11112222333344445555666677778888-1234567812345678-01",
                )
                .body(Full::new(Bytes::from(
                    json!({"model": "smart", "max_tokens": 50,
                           "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // The native request and the translated one each carried their attempt's span.
    let (t1, s1, _) = traceparent(anthropic.last().header("traceparent").unwrap());
    let (t2, s2, _) = traceparent(chat.last().header("traceparent").unwrap());
    assert_eq!(t1, "11112222333344445555666677778888");
    assert_eq!(t2, t1);
    assert_ne!(s1, s2);
    let spans = collector.trace(&unhex(&t1), 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    assert_eq!(hex(&server.parent_span_id), "1234567812345678");
    let by_id = |id: &str| spans.iter().find(|s| hex(&s.span_id) == id).unwrap();
    let (native, translated) = (attrs(by_id(&s1)), attrs(by_id(&s2)));
    assert_eq!(native["gen_ai.provider.name"], s("anthropic"));
    assert_eq!(native["llm_bridge.target"], s("claude/claude-sonnet-4-5"));
    assert!(native.contains_key("error.type"));
    assert_eq!(translated["llm_bridge.target"], s("up/m"));
    assert!(!translated.contains_key("error.type"));
    let a = attrs(server);
    assert_eq!(a["llm_bridge.route"], s("smart"));
    assert_eq!(a["llm_bridge.retries"], Any::IntValue(1));
    assert_eq!(a["gen_ai.request.model"], s("smart"));
}
