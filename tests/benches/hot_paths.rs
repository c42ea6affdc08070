//! Microbenchmarks of the per-request hot functions, with a plain timing loop (no extra
//! dependency): `cargo bench -p llm-bridge-tests --bench hot_paths`, or
//! `cargo xtask bench --micro`. Figures are nanoseconds per call, the median of 5 runs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use llm_bridge_core::{ChatRequest, ModelConfig, completion_usage, inspect};
use llm_bridge_http::SseDecoder;
use llm_bridge_usage::{UsageRecord, UsageSource, UsageStore};

fn measure(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{name:<58} {:>10.0} ns", runs[2]);
}

fn main() {
    let request = br#"{"model":"deepseek/deepseek-chat","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say something short about gateways, please, in one sentence."}],"temperature":0.7,"max_tokens":512,"stream":true}"#;
    let config: ModelConfig = serde_json::from_value(serde_json::json!({
        "max_tokens": 256,
        "param_config": {"add_params": {"top_p": 0.9}}
    }))
    .unwrap();
    measure("request: parse + validate", 200_000, || {
        black_box(ChatRequest::from_slice(black_box(request)).unwrap());
    });
    measure(
        "request: parse + ceiling/param_config + model + serialise",
        200_000,
        || {
            let mut r = ChatRequest::from_slice(black_box(request)).unwrap();
            config.apply(&mut r);
            r.set_model("deepseek-chat");
            r.set_include_usage(true);
            black_box(r.to_bytes());
        },
    );
    // As most requests go: no model config to apply, only the gateway's own edits.
    measure(
        "request: parse + model + include_usage + clone + serialise",
        200_000,
        || {
            let mut r = ChatRequest::from_bytes(Bytes::from_static(black_box(request))).unwrap();
            let attempt = r.clone();
            r.set_model("deepseek-chat");
            r.set_include_usage(true);
            black_box(r.to_bytes());
            black_box(attempt);
        },
    );

    let chunk = br#"{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[{"index":0,"delta":{"content":" weather"},"logprobs":null,"finish_reason":null}]}"#;
    let usage_chunk = br#"{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":79,"completion_tokens":40,"total_tokens":119,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    let mut text = String::new();
    measure("chunk: inspect (usage + delivered text)", 500_000, || {
        text.clear();
        black_box(inspect(black_box(chunk), Some(&mut text)).unwrap());
    });
    measure("chunk: inspect the final usage chunk", 500_000, || {
        black_box(inspect(black_box(usage_chunk), None).unwrap());
    });
    let completion = include_bytes!("../fixtures/openai-completion-length.json");
    measure("completion: usage of a complete answer", 500_000, || {
        black_box(completion_usage(black_box(completion)).unwrap());
    });

    let stream = include_bytes!("../fixtures/openai-stream-text.sse");
    let events = stream
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"data: "))
        .count();
    measure(
        &format!("sse: decode a recorded stream ({events} events)"),
        20_000,
        || {
            let mut d = SseDecoder::default();
            for piece in stream.chunks(1460) {
                d.push(piece);
                while let Some(e) = d.next_event().unwrap() {
                    black_box(e);
                }
            }
        },
    );

    let gemini_events: Vec<Bytes> = [
        r#"{"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":1,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash"}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":" there, how can I help?"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":7,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash"}"#,
    ]
    .into_iter()
    .map(Bytes::from)
    .collect();
    measure("gemini: translate a 2-event stream", 100_000, || {
        let mut t = llm_bridge_provider_gemini::ChunkTranslator::new("gemini-2.5-flash");
        for e in &gemini_events {
            black_box(t.push(e).unwrap());
        }
        black_box(t.finish().unwrap());
    });
    // What the usage writer does per record: a batch of 500 (about a quarter second of a
    // busy gateway) in one transaction, as the writer commits it; per record.
    let dir = tempfile::tempdir().unwrap();
    let mut store = llm_bridge_usage::SqliteStore::open(&dir.path().join("usage.db")).unwrap();
    let batch: Vec<UsageRecord> = (0..500)
        .map(|i| UsageRecord {
            time_ms: 1_764_000_000_000 + i,
            request_id: format!("req_{i:024x}"),
            key: Some("bench".into()),
            provider: Some("openai".into()),
            model: Some("gpt-4o-mini".into()),
            upstream_model: Some("gpt-4o-mini".into()),
            route: None,
            transport: "http".into(),
            stream: false,
            status: 200,
            outcome: "ok".into(),
            usage: llm_bridge_core::Usage {
                prompt_tokens: 11,
                completion_tokens: 7,
                total_tokens: 18,
                ..Default::default()
            },
            usage_source: UsageSource::Upstream,
            latency_ms: 1.25,
            ttft_ms: None,
            cost: Some(0.000_025),
        })
        .collect();
    measure("usage: write a batch of 500 records (SQLite)", 20, || {
        store.insert(&batch).unwrap();
    });
}
