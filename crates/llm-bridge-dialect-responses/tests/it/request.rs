//! Requests: a real Codex first turn, OpenAI's examples, a tool round trip built from a real
//! stream's output items, and the edges of each field.

use llm_bridge_core::ErrorKind;
use llm_bridge_dialect_responses::{chat_request, prepend_items};
use serde_json::{Value, json};

use crate::{fixture, fixture_json, sse_events};

fn translate(body: &Value) -> (Value, Vec<String>) {
    let t = chat_request(body.to_string().as_bytes()).unwrap();
    (Value::Object(t.request.body().clone()), t.dropped)
}

#[test]
fn codex_first_turn_becomes_a_pivot_request() {
    let capture = fixture_json("codex-0.169.0.first-turn.json");
    let body = &capture["body"];
    let t = chat_request(body.to_string().as_bytes()).unwrap();
    let r = t.request.body();
    assert_eq!(t.request.model(), "gpt-5");
    assert!(t.request.stream());
    assert_eq!(r["prompt_cache_key"], body["prompt_cache_key"]);
    assert_eq!(r["tool_choice"], "auto");
    assert_eq!(r["parallel_tool_calls"], true);
    for gone in [
        "store",
        "include",
        "client_metadata",
        "reasoning_effort",
        "metadata",
    ] {
        assert!(r.get(gone).is_none(), "{gone} in the pivot");
    }
    // Function tools mapped, in order; the namespace and web_search left out.
    let tools = r["tools"].as_array().unwrap();
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "exec_command",
            "write_stdin",
            "request_user_input",
            "view_image",
            "get_goal",
            "create_goal",
            "update_goal"
        ]
    );
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(
        tools[0]["function"]["parameters"],
        body["tools"][0]["parameters"]
    );
    assert_eq!(tools[0]["function"]["strict"], false);
    assert_eq!(
        tools[0]["function"]["description"],
        body["tools"][0]["description"]
    );
    for d in [
        "tools[4] (namespace)",
        "tools[8] (web_search)",
        "store",
        "include",
        "client_metadata",
        "reasoning.summary",
    ] {
        assert!(
            t.dropped.iter().any(|x| x == d),
            "{d} not in {:?}",
            t.dropped
        );
    }
    // Developer messages → system turns, first; then the user turns.
    let messages = t.request.messages();
    assert_eq!(messages.len(), 4);
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "system", "user", "user"]);
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are a coding agent running in the Codex CLI")
    );
    assert_eq!(messages[3]["content"], "Say hi");
}

#[test]
fn instructions_become_the_first_system_message() {
    let (r, dropped) = translate(&json!({
        "model": "m", "instructions": "Be brief.", "input": "hi",
        "max_output_tokens": 99, "temperature": 0.2, "top_p": 0.5, "user": "u1",
        "store": true, "metadata": {"a": "b"}, "truncation": "auto", "service_tier": "flex",
        "previous_response_id": "resp_x", "reasoning": {"effort": "low", "summary": null},
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                            "schema": {"type": "object"}}, "verbosity": "low"},
    }));
    assert_eq!(
        r["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(r["max_completion_tokens"], 99);
    assert_eq!(r["temperature"], 0.2);
    assert_eq!(r["top_p"], 0.5);
    assert_eq!(r["user"], "u1");
    assert_eq!(r["reasoning_effort"], "low");
    assert_eq!(
        r["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}})
    );
    for gone in [
        "store",
        "metadata",
        "truncation",
        "service_tier",
        "previous_response_id",
        "max_output_tokens",
        "text",
        "reasoning",
    ] {
        assert!(r.get(gone).is_none(), "{gone}");
    }
    for d in [
        "store",
        "metadata",
        "truncation",
        "service_tier",
        "previous_response_id",
        "text.verbosity",
    ] {
        assert!(dropped.iter().any(|x| x == d), "{d} not in {dropped:?}");
    }
    let (r, _) = translate(
        &json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}),
    );
    assert_eq!(r["response_format"], json!({"type": "json_object"}));
}

#[test]
fn openai_examples_translate() {
    let (r, dropped) = translate(&fixture_json("spec-create-functions.request.json"));
    assert_eq!(
        r["messages"],
        json!([{"role": "user", "content": "What is the weather like in Boston today?"}])
    );
    assert_eq!(r["tools"][0]["function"]["name"], "get_current_weather");
    assert_eq!(
        r["tools"][0]["function"]["parameters"]["required"],
        json!(["location", "unit"])
    );
    assert_eq!(r["tool_choice"], "auto");
    assert!(dropped.is_empty(), "{dropped:?}");
    let (r, _) = translate(&fixture_json("spec-create-image-input.request.json"));
    let content = &r["messages"][0]["content"];
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "what is in this image?"})
    );
    assert_eq!(content[1]["type"], "image_url");
    assert!(
        content[1]["image_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://upload.wikimedia.org/")
    );
}

#[test]
fn images_files_and_assistant_text() {
    let (r, dropped) = translate(&json!({"model": "m", "input": [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"},
            {"type": "input_image", "file_id": "file-1"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVB"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "seen", "annotations": []}]},
        {"role": "user", "content": "thanks"},
    ]}));
    assert_eq!(
        r["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVB", "filename": "a.pdf"}}]},
            {"role": "assistant", "content": "seen"},
            {"role": "user", "content": "thanks"},
        ])
    );
    assert!(
        dropped
            .iter()
            .any(|d| d == "input[0].content[2] (input_image)"),
        "{dropped:?}"
    );
}

/// The output items of the first recorded stream (reasoning with `encrypted_content`, a
/// function call), as Codex sends them back with the call's output on the next turn.
#[test]
fn a_real_tool_turn_goes_back_as_one_assistant_message_and_a_tool_message() {
    let events = sse_events(&fixture("vercel-reasoning-encrypted-content.chunks.txt"));
    let completed: Value = events
        .iter()
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "response.completed")
        .unwrap();
    let output = completed["response"]["output"].as_array().unwrap().clone();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[1]["type"], "function_call");
    let mut input = vec![
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is (12 + 7) * 3 * 10?"}]}),
    ];
    input.extend(output.iter().cloned());
    input.push(
        json!({"type": "function_call_output", "call_id": output[1]["call_id"], "output": "19"}),
    );
    let (r, dropped) = translate(&json!({"model": "m", "input": input, "tools": [
        {"type": "function", "name": "calculator", "parameters": {"type": "object"}}]}));
    assert!(dropped.is_empty(), "{dropped:?}");
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    let assistant = &m[1];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["content"], Value::Null);
    assert_eq!(
        assistant["reasoning_content"],
        output[0]["summary"][0]["text"]
    );
    assert_eq!(
        assistant["extra_content"]["llm_bridge"]["encrypted_reasoning"],
        json!([output[0]["encrypted_content"]])
    );
    assert_eq!(
        assistant["tool_calls"],
        json!([{"id": output[1]["call_id"], "type": "function",
                "function": {"name": "calculator", "arguments": output[1]["arguments"]}}])
    );
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": output[1]["call_id"], "content": "19"})
    );
}

#[test]
fn consecutive_calls_merge_and_tool_images_follow_the_results() {
    let (r, _) = translate(&json!({"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "think"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "two calls"}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "shot"},
            {"type": "input_image", "image_url": "https://e.com/s.png"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "ok"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "s1"}, {"type": "summary_text", "text": "s2"}]},
        {"type": "message", "role": "assistant", "content": "done"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]}));
    assert_eq!(
        r["messages"],
        json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "two calls", "reasoning_content": "think", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "shot"},
            {"role": "tool", "tool_call_id": "c2", "content": "ok"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://e.com/s.png"}}]},
            {"role": "assistant", "content": "done", "reasoning_content": "s1\n\ns2"},
        ])
    );
}

#[test]
fn tool_choice_forms() {
    let tools = json!([{"type": "function", "name": "f"}, {"type": "web_search"}]);
    let choice = |c: Value| {
        let (r, dropped) =
            translate(&json!({"model": "m", "input": "x", "tools": tools, "tool_choice": c}));
        (r.get("tool_choice").cloned(), dropped)
    };
    assert_eq!(choice(json!("required")).0, Some(json!("required")));
    assert_eq!(choice(json!("none")).0, Some(json!("none")));
    assert_eq!(
        choice(json!({"type": "function", "name": "f"})).0,
        Some(json!({"type": "function", "function": {"name": "f"}}))
    );
    let (c, dropped) = choice(json!({"type": "web_search_preview"}));
    assert_eq!(c, None);
    assert!(
        dropped
            .iter()
            .any(|d| d == "tool_choice (web_search_preview)")
    );
    assert_eq!(choice(json!({"type": "function", "name": "gone"})).0, None);
    assert_eq!(
        choice(json!({"type": "allowed_tools", "mode": "required", "tools": []})).0,
        Some(json!("required"))
    );
    // Only built-in tools: no tools, no tool_choice, no parallel_tool_calls.
    let (r, dropped) = translate(
        &json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
        "tool_choice": "required", "parallel_tool_calls": false}),
    );
    assert!(
        r.get("tools").is_none()
            && r.get("tool_choice").is_none()
            && r.get("parallel_tool_calls").is_none()
    );
    assert!(
        dropped.iter().any(|d| d == "parallel_tool_calls"),
        "{dropped:?}"
    );
}

#[test]
fn malformed_requests_are_400s() {
    for body in [
        "not json".to_owned(),
        "[1]".to_owned(),
        json!({"input": "x"}).to_string(),
        json!({"model": "m"}).to_string(),
        json!({"model": "m", "input": 5}).to_string(),
        json!({"model": "m", "input": [5]}).to_string(),
        json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}).to_string(),
        json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]})
            .to_string(),
        json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}).to_string(),
        json!({"model": "m", "input": "x", "tools": {"type": "function"}}).to_string(),
    ] {
        let e = chat_request(body.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{body}");
    }
    let e =
        chat_request(br#"{"model":"m","input":"x","tools":[{"type":"function"}]}"#).unwrap_err();
    assert_eq!(e.param(), Some("tools[0].name"));
}

#[test]
fn earlier_items_go_in_front() {
    let mut body = json!({"model": "m", "previous_response_id": "resp_1", "input": "and then?"});
    let body_map = body.as_object_mut().unwrap();
    prepend_items(
        body_map,
        vec![json!({"type": "message", "role": "user", "content": "first"})],
        vec![
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "one"}]}),
        ],
    );
    assert!(body_map.get("previous_response_id").is_none());
    let (r, dropped) = translate(&body);
    assert_eq!(
        r["messages"],
        json!([{"role": "user", "content": "first"}, {"role": "assistant", "content": "one"},
               {"role": "user", "content": "and then?"}])
    );
    assert!(dropped.is_empty());
    let mut list = json!({"input": [{"role": "user", "content": "b"}]});
    prepend_items(
        list.as_object_mut().unwrap(),
        vec![json!({"role": "user", "content": "a"})],
        vec![],
    );
    assert_eq!(
        list["input"],
        json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    );
}
