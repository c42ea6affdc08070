use super::*;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn paths_name_the_model_and_the_method() {
    let e = endpoint("/v1beta/models/gemini/gemini-2.5-flash:streamGenerateContent").unwrap();
    assert_eq!(e.model, "gemini/gemini-2.5-flash");
    assert_eq!(e.call, Call::Generate { stream: true });
    assert_eq!(e.native, "streamGenerateContent");
    let e = endpoint("/v1/models/models%2Fmy-route:countTokens").unwrap();
    assert_eq!((e.model.as_str(), e.call), ("my-route", Call::CountTokens));
    let e = endpoint("/v1beta/models/g/gemini-embedding-001:batchEmbedContents").unwrap();
    assert_eq!(e.call, Call::Embed { batch: true });
    for path in [
        "/v1beta/models/x:deleteEverything",
        "/v1beta/models/:generateContent",
        "/v1beta/models/gemini-2.5-flash",
        "/v1/chat/completions",
        "/v1beta/models/%:generateContent%",
    ] {
        assert!(endpoint(path).is_none(), "{path}");
    }
}

#[test]
fn a_recorded_function_calling_turn_becomes_a_chat_request() {
    let recorded = fixture("Function_calling_REST.cell15.json");
    let body = recorded["request"].to_string();
    let translated = chat_request(body.as_bytes(), "gem/flash", false).unwrap();
    let request: Value = serde_json::from_slice(&translated.request.to_bytes()).unwrap();
    assert_eq!(request["model"], "gem/flash");
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": "Which theaters in Mountain View show Barbie movie?"})
    );
    assert_eq!(messages[1]["role"], "assistant");
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["function"]["name"], "find_theaters");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Mountain View, CA", "movie": "Barbie"})
    );
    assert_eq!(messages[2]["role"], "tool");
    assert_eq!(
        messages[2]["tool_call_id"], "call_1",
        "answers the open call"
    );
    let result: Value = serde_json::from_str(messages[2]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["content"]["movie"], "Barbie");
    let tools = request["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 3);
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "find_movies");
    assert_eq!(tools[0]["function"]["parameters"]["type"], "object");
    assert_eq!(
        tools[0]["function"]["parameters"]["properties"]["location"]["type"],
        "string"
    );
    assert!(request.get("stream").is_none());
}

#[test]
fn snake_case_and_single_objects_are_read_like_google_reads_them() {
    let recorded = fixture("System_instructions_REST.cell08.json");
    let body = recorded["request"].to_string();
    let translated = chat_request(body.as_bytes(), "m", true).unwrap();
    let request: Value = serde_json::from_slice(&translated.request.to_bytes()).unwrap();
    assert_eq!(
        request["messages"],
        json!([{"role": "system", "content": "You are Neko the cat respond like one"},
               {"role": "user", "content": "Hello there"}])
    );
    assert_eq!(request["stream"], true);
}

#[test]
fn generation_config_and_tool_config_map_to_chat_fields() {
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]}],
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 3, "maxOutputTokens": 50,
            "stopSequences": ["x"], "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 0}},
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "safetySettings": [],
    });
    let translated = chat_request(body.to_string().as_bytes(), "m", false).unwrap();
    let request: Value = serde_json::from_slice(&translated.request.to_bytes()).unwrap();
    assert_eq!(request["temperature"], 0.2);
    assert_eq!(request["top_p"], 0.9);
    assert_eq!(request["max_tokens"], 50);
    assert_eq!(request["stop"], json!(["x"]));
    assert_eq!(request["response_format"], json!({"type": "json_object"}));
    assert_eq!(
        request["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(
        request["messages"][0]["content"],
        json!([{"type": "text", "text": "hi"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}])
    );
    for d in [
        "generationConfig.topK",
        "generationConfig.thinkingConfig",
        "safetySettings",
    ] {
        assert!(translated.dropped.iter().any(|x| x == d), "{d}");
    }
    for bad in [&b"{}"[..], b"[]", b"{\"contents\": []}", b"nope"] {
        let e = chat_request(bad, "m", false).unwrap_err();
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn answers_chunks_and_errors_in_gemini_shapes() {
    let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Let me look.", "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "find", "arguments": "{\"q\":1}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "completion_tokens_details": {"reasoning_tokens": 2}}});
    let out = generate_response(completion.to_string().as_bytes(), "gem/flash").unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out["candidates"][0]["content"],
        json!({"role": "model", "parts": [{"text": "Let me look."},
            {"functionCall": {"name": "find", "args": {"q": 1}, "id": "call_9"}}]})
    );
    assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 2, "totalTokenCount": 15})
    );
    assert_eq!(out["responseId"], "chatcmpl-1");

    let mut writer = EventWriter::new("gem/flash");
    let mut events = Vec::new();
    for chunk in [
        json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":2}"}}]}}]}),
        json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
    ] {
        let bytes = writer.chunk(chunk.to_string().as_bytes()).unwrap();
        if !bytes.is_empty() {
            events.push(bytes);
        }
    }
    events.push(writer.finish());
    assert!(writer.finish().is_empty(), "one end");
    let parsed: Vec<Value> = events
        .iter()
        .map(|e| {
            let text = std::str::from_utf8(e).unwrap();
            assert!(
                text.starts_with("data: ") && text.ends_with("\r\n\r\n"),
                "{text}"
            );
            serde_json::from_str(&text[6..]).unwrap()
        })
        .collect();
    assert_eq!(parsed.len(), 3);
    assert_eq!(
        parsed[0]["candidates"][0]["content"]["parts"],
        json!([{"text": "Hel"}])
    );
    assert_eq!(
        parsed[1]["candidates"][0]["content"]["parts"],
        json!([{"text": "lo"}])
    );
    let last = &parsed[2];
    assert_eq!(
        last["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "f", "args": {"a": 2}, "id": "call_1"}}])
    );
    assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 3);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 7);
    assert_eq!(last["responseId"], "c");

    let e = Error::new(llm_bridge_core::ErrorKind::RateLimited, "slow down");
    let (status, body) = GeminiIngress.error(&e);
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
    );
    assert_eq!(
        &GeminiIngress.count_tokens_answer(12)[..],
        br#"{"totalTokens":12}"#
    );
}

#[test]
fn embeddings_both_ways() {
    let batch = json!({"requests": [
        {"model": "models/x", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"},
        {"model": "models/x", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4, "taskType": "RETRIEVAL_QUERY"}]});
    let out = embeddings_request(batch.to_string().as_bytes(), "g/x", true).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        json!({"model": "g/x", "input": ["a", "b"], "encoding_format": "float", "dimensions": 4, "task_type": "RETRIEVAL_QUERY"})
    );
    let single = json!({"content": {"parts": [{"text": "c"}]}});
    let out = embeddings_request(single.to_string().as_bytes(), "g/x", false).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        json!({"model": "g/x", "input": ["c"], "encoding_format": "float"})
    );
    let mixed = json!({"requests": [
        {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 4},
        {"content": {"parts": [{"text": "b"}]}}]});
    assert!(embeddings_request(mixed.to_string().as_bytes(), "m", true).is_err());
    let answer = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-1e-3]},{"object":"embedding","index":1,"embedding":[1,2]}],"model":"x","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
    assert_eq!(
        &embeddings_answer(answer, true).unwrap()[..],
        br#"{"embeddings":[{"values":[0.25,-1e-3]},{"values":[1,2]}]}"#
    );
    assert_eq!(
        &embeddings_answer(answer, false).unwrap()[..],
        br#"{"embedding":{"values":[0.25,-1e-3]}}"#
    );
}

#[test]
fn the_meter_reads_usage_and_the_end_of_a_forwarded_stream() {
    let mut meter = GeminiMeter::default();
    let stream = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"totalTokenCount\": 5}}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 2,\"thoughtsTokenCount\": 1,\"totalTokenCount\": 8}}\r\n\r\n";
    let (a, b) = stream.split_at(37);
    meter.feed(a.as_bytes());
    assert!(!meter.finished());
    meter.feed(b.as_bytes());
    assert!(meter.finished());
    let usage = meter.usage().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens
        ),
        (5, 3, 1)
    );
    let listed = GeminiIngress.models_answer(
        &[
            ("g/flash".into(), ModelKind::Chat),
            ("g/emb".into(), ModelKind::Embedding),
        ],
        false,
    );
    let listed: Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed["models"][0]["name"], "models/g/flash");
    assert_eq!(
        listed["models"][1]["supportedGenerationMethods"],
        json!(["embedContent", "batchEmbedContents"])
    );
}
