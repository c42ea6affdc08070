use super::*;
use crate::messages::SKIP_SIGNATURE;
use serde_json::json;

fn translated(body: Value, model: &str) -> Value {
    let request = ChatRequest::from_value(body).unwrap();
    let bytes = request_body(&request, model).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn rejected(body: Value) -> Error {
    let request = ChatRequest::from_value(body).unwrap();
    translate(&request, "gemini-2.5-flash").expect_err("should be rejected")
}

#[test]
fn system_user_and_assistant_become_instruction_and_alternating_turns() {
    let out = translated(
        json!({
            "model": "g/gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "use French"}]},
                {"role": "user", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}, {"type": "text", "text": ""}]},
                {"role": "assistant", "content": "bonjour"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "thanks"}
            ],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 50,
            "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "top_k": 40, "user": "u-1", "metadata": {"a": "b"}, "parallel_tool_calls": false
        }),
        "gemini-2.5-flash",
    );
    assert_eq!(
        out,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "hello"}, {"text": "again"}]},
                {"role": "model", "parts": [{"text": "bonjour"}]},
                {"role": "user", "parts": [{"text": "thanks"}]}
            ],
            "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "use French"}]},
            "generationConfig": {
                "candidateCount": 2, "stopSequences": ["END"], "maxOutputTokens": 50,
                "temperature": 0.2, "topP": 0.9, "topK": 40, "seed": 7,
                "presencePenalty": 0.5, "frequencyPenalty": -0.5
            }
        })
    );
}

#[test]
fn only_instructions_are_sent_as_the_user_turn() {
    let out = translated(
        json!({"model": "m", "messages": [{"role": "system", "content": "Say hi"}]}),
        "gemini-2.5-flash",
    );
    assert_eq!(
        out,
        json!({"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]})
    );
    let e = rejected(json!({"model": "m", "messages": [{"role": "user", "content": ""}]}));
    assert_eq!(e.param(), Some("messages"));
}

#[test]
fn images_audio_and_files() {
    let out = translated(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
        ]}]}),
        "gemini-2.5-flash",
    );
    assert_eq!(
        out["contents"][0]["parts"],
        json!([
            {"text": "what is this?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
        ])
    );
}

#[test]
fn image_urls_that_would_need_fetching_are_a_clear_400() {
    let e = rejected(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        ]}]}),
    );
    assert_eq!(e.status(), 400);
    assert_eq!(e.param(), Some("messages[0].content[1].image_url.url"));
    assert!(e.message().contains("data URL"), "{}", e.message());
    for url in [
        "data:image/png,abc",
        "data:;base64,abc",
        "data:image/png;base64,",
        "ftp://x",
    ] {
        let e = rejected(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}
            ]}]}),
        );
        assert_eq!(e.status(), 400, "{url}");
    }
}

#[test]
fn tool_round_trip_with_signatures_and_parallel_results_in_one_turn() {
    let out = translated(
        json!({"model": "m", "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "c2lnLWE="}}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "unknown", "name": "legacy", "content": [{"type": "text", "text": "[1,2]"}]},
            {"role": "assistant", "content": "Sunny.", "extra_content": {"google": {"thought_signature": "dGV4dA=="}}}
        ],
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "time"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}}}),
        "gemini-2.5-flash",
    );
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
            {"role": "model", "parts": [
                {"thoughtSignature": "c2lnLWE=", "functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "time", "response": {"result": "12:00"}}},
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "legacy", "response": {"result": [1, 2]}}}
            ]},
            {"role": "model", "parts": [{"text": "Sunny.", "thoughtSignature": "dGV4dA=="}]}
        ])
    );
    assert_eq!(
        out["tools"],
        json!([{"functionDeclarations": [
            {"name": "weather", "description": "Weather",
             "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"], "additionalProperties": false}},
            {"name": "time"}
        ]}])
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
    );
}

#[test]
fn gemini_3_calls_without_a_signature_get_the_documented_placeholder() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "1", "content": "a"},
        {"role": "tool", "tool_call_id": "2", "content": "b"}
    ]});
    let out = translated(body.clone(), "gemini-3-pro-preview");
    let parts = &out["contents"][1]["parts"];
    assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE);
    assert!(parts[1].get("thoughtSignature").is_none());
    let out = translated(body, "gemini-2.5-pro");
    assert!(
        out["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none()
    );
}

#[test]
fn tool_choice_forms() {
    let config = |choice: Value| {
        let out = translated(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}),
            "gemini-2.5-flash",
        );
        out["toolConfig"]["functionCallingConfig"].clone()
    };
    assert_eq!(config(json!("auto")), json!({"mode": "AUTO"}));
    assert_eq!(config(json!("none")), json!({"mode": "NONE"}));
    assert_eq!(config(json!("required")), json!({"mode": "ANY"}));
    assert_eq!(
        config(
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto",
            "tools": [{"type": "function", "function": {"name": "a"}}]}})
        ),
        json!({"mode": "VALIDATED", "allowedFunctionNames": ["a"]})
    );
    let e = rejected(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "any"}),
    );
    assert_eq!(e.param(), Some("tool_choice"));
}

#[test]
fn json_mode_and_json_schema() {
    let format = |f: Value| {
        translated(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": f}),
            "gemini-2.5-flash",
        )["generationConfig"]
            .clone()
    };
    assert_eq!(
        format(json!({"type": "json_object"})),
        json!({"responseMimeType": "application/json"})
    );
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
    assert_eq!(
        format(
            json!({"type": "json_schema", "json_schema": {"name": "s", "strict": true, "schema": schema}})
        ),
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );
    assert!(
        translated(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}}),
            "gemini-2.5-flash"
        )
        .get("generationConfig")
        .is_none()
    );
    let e = rejected(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s"}}}),
    );
    assert_eq!(e.param(), Some("response_format.json_schema.schema"));
}

#[test]
fn reasoning_effort_is_a_level_for_gemini_3_and_a_budget_before() {
    let thinking = |effort: &str, model: &str| {
        translated(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}),
            model,
        )["generationConfig"]["thinkingConfig"]
            .clone()
    };
    assert_eq!(
        thinking("low", "gemini-3-pro-preview"),
        json!({"includeThoughts": true, "thinkingLevel": "low"})
    );
    assert_eq!(
        thinking("high", "gemini-3.1-flash"),
        json!({"includeThoughts": true, "thinkingLevel": "high"})
    );
    assert_eq!(
        thinking("medium", "gemini-2.5-flash"),
        json!({"includeThoughts": true, "thinkingBudget": 8192})
    );
    assert_eq!(
        thinking("none", "gemini-2.5-flash"),
        json!({"includeThoughts": false, "thinkingBudget": 0})
    );
    assert!(is_gemini3("models/gemini-10-ultra"));
    assert!(!is_gemini3("gemini-2.5-pro"));
    assert!(!is_gemini3("learnlm-3"));
    let e = rejected(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": "max"}),
    );
    assert_eq!(e.param(), Some("reasoning_effort"));
}

#[test]
fn parameters_whose_loss_would_change_the_answer_are_400() {
    for (key, value) in [
        ("logprobs", json!(true)),
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({"voice": "alloy", "format": "mp3"})),
        ("logit_bias", json!({"50256": -100})),
        (
            "functions",
            json!([{"name": "f", "parameters": {"type": "object"}}]),
        ),
        ("function_call", json!("auto")),
        ("web_search_options", json!({})),
        ("temperature", json!("hot")),
        ("stop", json!([1])),
        ("n", json!(0)),
    ] {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        body[key] = value;
        let e = rejected(body);
        assert_eq!(e.status(), 400, "{key}");
        assert_eq!(e.param(), Some(key), "{key}");
    }
    // Harmless forms of the same parameters pass.
    translated(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": false,
               "modalities": ["text"], "logit_bias": {}, "top_logprobs": null}),
        "gemini-2.5-flash",
    );
}

#[test]
fn malformed_messages_are_400_with_the_place() {
    let cases = [
        (
            json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]),
            "messages[1].tool_call_id",
        ),
        (
            json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "critic", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "video", "video": {}}]}]),
            "messages[0].content[0]",
        ),
        (
            json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
            "messages[0].content[0]",
        ),
    ];
    for (messages, param) in cases {
        let e = rejected(json!({"model": "m", "messages": messages}));
        assert_eq!(e.status(), 400, "{param}");
        assert_eq!(e.param(), Some(param));
    }
    let e = rejected(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search"}]}),
    );
    assert_eq!(e.param(), Some("tools[0]"));
}
