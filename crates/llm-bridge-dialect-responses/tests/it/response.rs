//! Answers: recorded chat completions → `response` objects, checked against the fields the
//! OpenAI spec requires and a recorded live `response`; errors; native usage.

use llm_bridge_core::{Error, ErrorKind, Ingress};
use llm_bridge_dialect_responses::{
    Echo, ResponsesIngress, chat_request, error_response, responses_response, usage_from_response,
};
use serde_json::{Value, json};

use crate::fixture_json;

/// `required` of `components.schemas.Response` in the OpenAI spec
/// (shared/conformance/openai-openapi.yaml).
pub(crate) const REQUIRED: &[&str] = &[
    "id",
    "object",
    "created_at",
    "error",
    "incomplete_details",
    "instructions",
    "model",
    "tools",
    "output",
    "parallel_tool_calls",
    "metadata",
    "tool_choice",
    "temperature",
    "top_p",
];

pub(crate) fn check_response(r: &Value) {
    for k in REQUIRED {
        assert!(r.get(*k).is_some(), "{k} missing from {r}");
    }
    assert_eq!(r["object"], "response");
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert!(r["created_at"].is_u64());
    // Every field of a recorded live response is there.
    let recorded = fixture_json("openai-python-output-text.response.json");
    for k in recorded.as_object().unwrap().keys() {
        assert!(r.get(k).is_some(), "{k} (in OpenAI's answers) missing");
    }
}

fn render(completion: &Value, echo: &Echo) -> Value {
    let body = responses_response(completion.to_string().as_bytes(), "client-model", echo).unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn tool_calls_become_function_call_items() {
    let completion = fixture_json("openai-multiple-tools.json");
    let r = render(&completion, &Echo::default());
    check_response(&r);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "client-model");
    assert_eq!(r["created_at"], completion["created"]);
    let calls = completion["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    let output = r["output"].as_array().unwrap();
    assert_eq!(output.len(), calls.len());
    let body = r["id"].as_str().unwrap().strip_prefix("resp_").unwrap();
    for (i, (item, call)) in output.iter().zip(calls).enumerate() {
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["id"], format!("fc_{body}_{i}"));
        assert_eq!(item["call_id"], call["id"]);
        assert_eq!(item["name"], call["function"]["name"]);
        assert_eq!(item["arguments"], call["function"]["arguments"]);
        assert_eq!(item["status"], "completed");
    }
    let u = &completion["usage"];
    assert_eq!(
        r["usage"],
        json!({"input_tokens": u["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": u["completion_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": u["total_tokens"]})
    );
    // The defaults OpenAI echoes for a bare request.
    assert_eq!(r["tools"], json!([]));
    assert_eq!(r["tool_choice"], "auto");
    assert_eq!(r["parallel_tool_calls"], true);
    assert_eq!(r["metadata"], json!({}));
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["incomplete_details"], Value::Null);
    assert!(r["completed_at"].is_u64());
}

#[test]
fn length_is_incomplete() {
    let r = render(&fixture_json("openai-max-tokens.json"), &Echo::default());
    check_response(&r);
    assert_eq!(r["status"], "incomplete");
    assert_eq!(
        r["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(r["completed_at"], Value::Null);
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output"][0]["content"][0]["text"], "{\"");
    let mut filtered = fixture_json("openai-max-tokens.json");
    filtered["choices"][0]["finish_reason"] = "content_filter".into();
    let r = render(&filtered, &Echo::default());
    assert_eq!(r["incomplete_details"], json!({"reason": "content_filter"}));
}

#[test]
fn reasoning_text_refusal_and_the_echo() {
    let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "hello", "refusal": "no", "reasoning_content": "thought",
            "extra_content": {"llm_bridge": {"encrypted_reasoning": "sealed"}}}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 3}}});
    let request = json!({"model": "m", "input": "x", "instructions": "be nice",
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
        "tool_choice": "required", "parallel_tool_calls": false, "store": false,
        "temperature": 0.3, "metadata": {"k": "v"}, "reasoning": {"effort": "high"},
        "max_output_tokens": 50, "prompt_cache_key": "pk", "text": {"verbosity": "low"}});
    let echo = Echo::from_slice(request.to_string().as_bytes());
    let r = render(&completion, &echo);
    check_response(&r);
    let out = r["output"].as_array().unwrap();
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(
        out[0]["summary"],
        json!([{"type": "summary_text", "text": "thought"}])
    );
    assert_eq!(out[0]["encrypted_content"], "sealed");
    assert_eq!(out[1]["type"], "message");
    assert_eq!(out[1]["role"], "assistant");
    assert_eq!(
        out[1]["content"],
        json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": "hello"},
               {"type": "refusal", "refusal": "no"}])
    );
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 4);
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 3);
    for k in [
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "store",
        "temperature",
        "metadata",
        "max_output_tokens",
        "prompt_cache_key",
    ] {
        assert_eq!(r[k], request[k], "{k}");
    }
    assert_eq!(r["reasoning"], json!({"effort": "high", "summary": null}));
    assert_eq!(
        r["text"],
        json!({"verbosity": "low", "format": {"type": "text"}})
    );
    assert_eq!(r["top_p"], 1.0);
}

#[test]
fn the_answer_goes_back_as_the_next_input() {
    // A response's output items, sent back as input, are the assistant message it came from.
    let completion = fixture_json("openai-multiple-tools.json");
    let r = render(&completion, &Echo::default());
    let mut input = vec![json!({"role": "user", "content": "weather?"})];
    input.extend(r["output"].as_array().unwrap().iter().cloned());
    let t = chat_request(json!({"model": "m", "input": input}).to_string().as_bytes()).unwrap();
    let message = &completion["choices"][0]["message"];
    let back = &t.request.messages()[1];
    assert_eq!(back["role"], "assistant");
    assert_eq!(back["tool_calls"], message["tool_calls"]);
}

#[test]
fn not_a_completion_is_an_upstream_error() {
    for body in [&b"<html>"[..], b"[]", b""] {
        let e = responses_response(body, "m", &Echo::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UpstreamBadResponse);
    }
}

#[test]
fn errors_are_the_gateways_openai_shape() {
    let e = Error::new(ErrorKind::ModelNotFound, "no such model").with_param("model");
    let (status, body) = ResponsesIngress.error(&e);
    assert_eq!((status, body.clone()), error_response(&e));
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "no such model", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
    );
    let e = Error::new(ErrorKind::UpstreamRejected(422), "nope");
    assert_eq!(ResponsesIngress.error(&e).0, 422);
}

#[test]
fn the_mounted_ingress() {
    let i = ResponsesIngress;
    assert_eq!(i.name(), "responses");
    assert_eq!(i.path(), "/v1/responses");
    assert_eq!(i.count_tokens_path(), None);
    assert_eq!(i.forwarded_headers(), ["openai-beta"]);
    let t = i
        .request(br#"{"model":"m","input":"x","tools":[{"type":"web_search"}]}"#)
        .unwrap();
    assert_eq!(t.dropped, ["tools[0] (web_search)"]);
    let recorded = fixture_json("openai-python-output-text.response.json");
    let u = i.native_usage(recorded.to_string().as_bytes()).unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (14, 50, 64)
    );
    assert_eq!(
        usage_from_response(recorded.to_string().as_bytes()),
        Some(u)
    );
    let body = i
        .response(
            fixture_json("openai-max-tokens.json")
                .to_string()
                .as_bytes(),
            "m",
            b"{}",
        )
        .unwrap();
    check_response(&serde_json::from_slice(&body).unwrap());
}
