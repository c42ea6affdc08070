//! Streams: real OpenAI chat chunk streams rendered as Responses events, every one checked
//! by [`crate::validate`]; failures; the native meter over recorded and rendered streams.

use llm_bridge_core::{Error, ErrorKind, Ingress, NativeMeter};
use llm_bridge_dialect_responses::{Echo, EventWriter, ResponsesIngress, ResponsesMeter};
use serde_json::{Value, json};

use crate::response::check_response;
use crate::{chat_chunks, fixture, sse_events, validate};

fn render(chunks: &[String]) -> Vec<u8> {
    let mut w = ResponsesIngress.stream("client-model", b"{}");
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&w.chunk(c.as_bytes()).unwrap());
    }
    out.extend_from_slice(&w.finish());
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn joined(chunks: &[String], key: &str) -> String {
    chunks
        .iter()
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .filter_map(|c| c["choices"][0]["delta"][key].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_text_stream() {
    let chunks = chat_chunks("openai-stream-text.sse");
    let events = validate(&render(&chunks)).unwrap();
    let t = types(&events);
    assert_eq!(
        t[..5],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta"
        ]
    );
    assert_eq!(
        t[t.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let last = events.last().unwrap();
    let r = &last["response"];
    check_response(r);
    assert_eq!(r["status"], "completed");
    assert_eq!(
        r["output"][0]["content"][0]["text"],
        joined(&chunks, "content").as_str()
    );
    let usage: Value = serde_json::from_str(chunks.last().unwrap()).unwrap();
    assert_eq!(r["usage"]["input_tokens"], usage["usage"]["prompt_tokens"]);
    assert_eq!(
        r["usage"]["output_tokens"],
        usage["usage"]["completion_tokens"]
    );
    // The first event names the response the last one completes.
    assert_eq!(events[0]["response"]["id"], r["id"]);
    assert_eq!(events[0]["response"]["usage"], Value::Null);
}

#[test]
fn a_tool_call_stream() {
    let chunks = chat_chunks("openai-stream-multiple-tools.sse");
    let events = validate(&render(&chunks)).unwrap();
    let r = &events.last().unwrap()["response"];
    let output = r["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    let calls: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .flat_map(|c| {
            c["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    for (i, item) in output.iter().enumerate() {
        let fragments: String = calls
            .iter()
            .filter(|c| c["index"] == i)
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let first = calls.iter().find(|c| c["index"] == i).unwrap();
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["call_id"], first["id"]);
        assert_eq!(item["name"], first["function"]["name"]);
        assert_eq!(item["arguments"], fragments.as_str());
        assert!(serde_json::from_str::<Value>(&fragments).is_ok());
    }
    assert_eq!(
        types(&events)
            .iter()
            .filter(|t| **t == "response.function_call_arguments.done")
            .count(),
        2
    );
}

#[test]
fn a_reasoning_stream() {
    // Deepseek's shape: the first content deltas of a real stream as reasoning deltas.
    let mut chunks: Vec<Value> = chat_chunks("openai-stream-text.sse")
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    for c in chunks.iter_mut().take(8) {
        let delta = &mut c["choices"][0]["delta"];
        if let Some(text) = delta.as_object_mut().and_then(|d| d.remove("content")) {
            delta["reasoning_content"] = text;
        }
    }
    let chunks: Vec<String> = chunks.iter().map(Value::to_string).collect();
    let events = validate(&render(&chunks)).unwrap();
    let t = types(&events);
    assert_eq!(
        t[2..5],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta"
        ]
    );
    let r = &events.last().unwrap()["response"];
    assert_eq!(r["output"][0]["type"], "reasoning");
    assert_eq!(
        r["output"][0]["summary"][0]["text"],
        joined(&chunks, "reasoning_content").as_str()
    );
    assert_eq!(r["output"][1]["type"], "message");
    assert_eq!(
        r["output"][1]["content"][0]["text"],
        joined(&chunks, "content").as_str()
    );
    assert_eq!(r["output"][1]["output_index"], Value::Null);
    let text_deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .collect();
    assert!(
        text_deltas
            .iter()
            .all(|e| e["output_index"] == 1 && e["content_index"] == 0)
    );
}

#[test]
fn a_cut_answer_is_incomplete() {
    let events = validate(&render(&chat_chunks("openai-stream-max-tokens.sse"))).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    assert_eq!(last["response"]["usage"]["total_tokens"], 80);
}

#[test]
fn a_refusal_stream() {
    let chunks = chat_chunks("openai-stream-refusal.sse");
    let events = validate(&render(&chunks)).unwrap();
    let r = &events.last().unwrap()["response"];
    assert_eq!(r["output"][0]["content"][0]["type"], "refusal");
    assert_eq!(
        r["output"][0]["content"][0]["refusal"],
        joined(&chunks, "refusal").as_str()
    );
    assert!(types(&events).contains(&"response.refusal.done"));
}

#[test]
fn an_error_mid_stream_fails_the_response() {
    let chunks = chat_chunks("openai-stream-multiple-tools.sse");
    let mut w = EventWriter::new("m");
    let mut out = Vec::new();
    for c in &chunks[..4] {
        out.extend_from_slice(&w.push(c.as_bytes()).unwrap());
    }
    let e = Error::new(ErrorKind::UpstreamRateLimited, "slow down");
    out.extend_from_slice(&w.error_event(&e));
    assert!(w.is_done());
    assert!(w.finish().is_empty());
    let events = validate(&out).unwrap();
    let t = types(&events);
    assert_eq!(t[t.len() - 2..], ["error", "response.failed"]);
    let error = &events[events.len() - 2];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["message"], "slow down");
    let failed = &events.last().unwrap()["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "rate_limit_exceeded", "message": "slow down"})
    );
    assert_eq!(failed["output"][0]["status"], "incomplete");
    // The same shape as a recorded OpenAI failure.
    let recorded: Vec<Value> = sse_events(&fixture("vercel-error.chunks.txt"))
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        types(&recorded),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    let rf = &recorded[3]["response"];
    for k in rf["error"].as_object().unwrap().keys() {
        assert!(failed["error"].get(k).is_some(), "{k}");
    }
    for k in ["code", "message", "param"] {
        assert!(error.get(k).is_some(), "{k}");
    }
}

#[test]
fn errors_before_any_chunk_and_cut_streams_still_make_valid_sequences() {
    let mut w = EventWriter::new("m");
    let out = w.error_event(&Error::new(ErrorKind::UpstreamTimeout, "late"));
    let events = validate(&out).unwrap();
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    let chunks = chat_chunks("openai-stream-text.sse");
    let mut w = EventWriter::new("m");
    let mut out = Vec::new();
    for c in &chunks[..5] {
        out.extend_from_slice(&w.push(c.as_bytes()).unwrap());
    }
    out.extend_from_slice(&w.finish());
    let events = validate(&out).unwrap();
    assert_eq!(events[events.len() - 2]["code"], "upstream_truncated");
    let mut w = EventWriter::new("m");
    assert_eq!(
        w.push(b"{").unwrap_err().kind(),
        ErrorKind::UpstreamBadResponse
    );
}

#[test]
fn the_echo_reaches_every_response_event() {
    let echo = Echo::from_slice(br#"{"model":"m","input":"x","instructions":"sys","store":false}"#);
    let mut w = EventWriter::with_echo("m", echo);
    let mut out = Vec::new();
    for c in chat_chunks("openai-stream-text.sse") {
        out.extend_from_slice(&w.push(c.as_bytes()).unwrap());
    }
    let events = validate(&out).unwrap();
    for e in events.iter().filter(|e| e.get("response").is_some()) {
        assert_eq!(e["response"]["instructions"], "sys");
        assert_eq!(e["response"]["store"], false);
    }
    assert_eq!(w.response_id(), events[0]["response"]["id"]);
}

#[test]
fn the_meter_reads_recorded_and_rendered_streams() {
    // Recorded: one `data:` object per line; the first stream ends at its completed event.
    let text = fixture("vercel-reasoning-encrypted-content.chunks.txt");
    let mut first = String::new();
    for line in text.lines() {
        first.push_str(&format!("data: {line}\n\n"));
        if line.starts_with("{\"type\":\"response.completed\"") {
            break;
        }
    }
    for piece in [3, 100, first.len()] {
        let mut m = ResponsesMeter::default();
        for p in first.as_bytes().chunks(piece) {
            m.feed(p);
        }
        assert!(m.finished());
        let u = m.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (134, 28, 162)
        );
    }
    // Rendered by the writer: the meter of the native side reads our own streams.
    let out = render(&chat_chunks("openai-stream-max-tokens.sse"));
    let mut m = ResponsesIngress.native_meter();
    for p in out.chunks(17) {
        m.feed(p);
    }
    assert!(m.finished());
    assert_eq!(m.usage().unwrap().total_tokens, 80);
}

#[test]
fn the_validator_accepts_openais_own_streams_and_rejects_broken_ones() {
    // Each recorded stream (one `data:` object per line) is a valid sequence.
    let text = fixture("vercel-reasoning-encrypted-content.chunks.txt");
    let mut streams = vec![String::new()];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("{\"type\":\"response.created\"") && !streams.last().unwrap().is_empty()
        {
            streams.push(String::new());
        }
        streams
            .last_mut()
            .unwrap()
            .push_str(&format!("data: {line}\n\n"));
    }
    assert_eq!(streams.len(), 4);
    for s in &streams {
        validate(s.as_bytes()).unwrap();
    }
    let failed: String = fixture("vercel-error.chunks.txt")
        .lines()
        .map(|l| format!("data: {l}\n\n"))
        .collect();
    validate(failed.as_bytes()).unwrap();
    // Ours, broken in a few ways.
    let good = String::from_utf8(render(&chat_chunks("openai-stream-multiple-tools.sse"))).unwrap();
    validate(good.as_bytes()).unwrap();
    let events: Vec<&str> = good.split_inclusive("\n\n").collect();
    let without = |pred: &dyn Fn(&str) -> bool| -> String {
        let mut dropped = false;
        events
            .iter()
            .filter(|e| {
                let drop = !dropped && pred(e);
                dropped |= drop;
                !drop
            })
            .copied()
            .collect()
    };
    for broken in [
        without(&|e| e.contains("function_call_arguments.done")),
        without(&|e| e.contains("output_item.done")),
        without(&|e| e.contains("response.in_progress")),
        without(&|e| e.contains("function_call_arguments.delta")),
        good.replacen("\"sequence_number\":3", "\"sequence_number\":4", 1),
        events[..events.len() - 1].concat(),
    ] {
        assert!(validate(broken.as_bytes()).is_err(), "accepted:\n{broken}");
    }
}

#[test]
fn sealed_reasoning_on_a_delta_reaches_the_reasoning_item() {
    let chunks = [
        json!({"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"extra_content": {"llm_bridge": {"encrypted_reasoning": "sealed"}}}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
    ];
    let out = render(&chunks.iter().map(Value::to_string).collect::<Vec<_>>());
    let events = validate(&out).unwrap();
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(done["item"]["encrypted_content"], "sealed");
    assert_eq!(done["item"]["summary"][0]["text"], "hm");
    let r = &events.last().unwrap()["response"];
    assert_eq!(r["output"][0]["encrypted_content"], "sealed");
    assert_eq!(r["usage"]["total_tokens"], 3);
}
