//! Every request leaves one usage record with the tokens the upstream reported, or the
//! gateway's own estimate when it reported none; `/v1/usage` shows them per key and model.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyStream, Full};
use llm_bridge_usage::{GroupBy, SqliteUsageReader, UsageQuery, UsageReader};
use serde_json::{Value, json};
use testkit::{ADMIN_KEY, Behavior, Echo, MockUpstream, TestGateway, config_with, openai_provider};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn report(db: &std::path::Path, group_by: GroupBy) -> llm_bridge_usage::UsageReport {
    SqliteUsageReader::new(db)
        .query(&UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by,
            key: None,
        })
        .unwrap()
}

#[tokio::test]
async fn a_mix_of_requests_is_recorded_exactly() {
    let reporting = MockUpstream::start().await; // reports usage 11 + 7 on every answer
    let silent = MockUpstream::start().await; // reports no usage at all
    silent.set_default(Behavior::Echo(Echo {
        usage: None,
        ..Echo::default()
    }));
    let gemini = MockUpstream::start().await;
    let yaml = config_with(&[
        openai_provider(
            "up",
            &reporting.url(),
            "      m:\n        price: { input: 1000000, output: 2000000 }\n",
        ),
        openai_provider("quiet", &silent.url(), "      m: {}\n"),
        testkit::gemini::gemini_provider("gem", &gemini.url(), "      flash: {}\n"),
    ]);
    let gw = TestGateway::start(&yaml).await;
    let c = &gw.client;

    // Reported by the upstream: JSON, a stream that asked for usage, one that did not.
    assert_eq!(
        c.chat(&json!({"model": "up/m", "messages": user("a")}))
            .await
            .status,
        200
    );
    let with = c
        .chat(&json!({"model": "up/m", "stream": true, "stream_options": {"include_usage": true}, "messages": user("b")}))
        .await;
    assert!(
        with.events()
            .iter()
            .any(|e| e.contains("\"prompt_tokens\":11"))
    );
    let without = c
        .chat(&json!({"model": "up/m", "stream": true, "messages": user("c")}))
        .await;
    assert!(
        !without.events().iter().any(|e| e.contains("prompt_tokens")),
        "not asked, not sent"
    );
    // Failed upstream: no tokens.
    reporting.push(Behavior::json(500, json!({"error": {"message": "boom"}})));
    assert_eq!(
        c.chat(&json!({"model": "up/m", "messages": user("d")}))
            .await
            .status,
        502
    );
    // Unknown model: no tokens.
    assert_eq!(
        c.chat(&json!({"model": "up/nope", "messages": user("e")}))
            .await
            .status,
        404
    );
    // Not reported by the upstream: estimated, JSON and stream.
    assert_eq!(
        c.chat(&json!({"model": "quiet/m", "messages": user("hello there")}))
            .await
            .status,
        200
    );
    assert_eq!(
        c.chat(&json!({"model": "quiet/m", "stream": true, "messages": user("hello there")}))
            .await
            .status,
        200
    );
    // Gemini reports usage in usageMetadata (prompt 5, candidates 3, thoughts 2), streamed or not.
    gemini.push(Behavior::json(
        200,
        testkit::gemini::answer(
            json!([{"text": "hi"}]),
            "STOP",
            testkit::gemini::usage(5, 3, 2),
        ),
    ));
    gemini.push(testkit::gemini::sse(&[
        testkit::gemini::event(
            json!([{"text": "h"}]),
            None,
            Some(testkit::gemini::usage(5, 1, 0)),
        ),
        testkit::gemini::event(
            json!([{"text": "i"}]),
            Some("STOP"),
            Some(testkit::gemini::usage(5, 3, 2)),
        ),
    ]));
    assert_eq!(
        c.chat(&json!({"model": "gem/flash", "messages": user("g")}))
            .await
            .status,
        200
    );
    let g = c
        .chat(&json!({"model": "gem/flash", "stream": true, "messages": user("g")}))
        .await;
    assert_eq!(g.events().last().unwrap(), "[DONE]");
    // Over a WebSocket: a stream and a complete answer.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/v1/ws", gw.url().replace("http://", "ws://")))
            .await
            .unwrap();
    for (id, stream) in [("w1", true), ("w2", false)] {
        let frame = json!({"type": "chat", "id": id, "api_key": testkit::TEST_KEY,
            "payload": {"model": "up/m", "stream": stream, "messages": user("w")}});
        futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::text(frame.to_string()),
        )
        .await
        .unwrap();
        loop {
            let m = ws.next().await.unwrap().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["type"] == "done" || v["type"] == "completion" {
                break;
            }
        }
    }
    // Unauthenticated: logged, not recorded.
    assert_eq!(
        c.with_key(Some("sk-nobody"))
            .chat(&json!({"model": "up/m", "messages": user("x")}))
            .await
            .status,
        401
    );

    let db = gw.shutdown().await;
    let by_model = report(&db, GroupBy::Model);
    let up = by_model.data.iter().find(|g| g.group == "up/m").unwrap();
    assert_eq!(
        up.requests, 6,
        "four over HTTP (one failed), two over the WebSocket"
    );
    assert_eq!(up.errors, 1);
    assert_eq!(
        up.prompt_tokens, 55,
        "five answers of 11 prompt tokens; the failure adds none"
    );
    assert_eq!(up.completion_tokens, 35);
    assert_eq!(up.estimated_requests, 0);
    // 55 prompt tokens at 1 per token + 35 completion tokens at 2 per token.
    assert!(
        (up.cost.unwrap() - (55.0 + 70.0)).abs() < 1e-6,
        "{:?}",
        up.cost
    );
    let gem = by_model
        .data
        .iter()
        .find(|g| g.group == "gem/flash")
        .unwrap();
    assert_eq!(
        (
            gem.requests,
            gem.prompt_tokens,
            gem.completion_tokens,
            gem.reasoning_tokens
        ),
        (2, 10, 10, 4)
    );
    assert_eq!(
        gem.estimated_requests, 0,
        "Gemini's usageMetadata is the upstream's count"
    );

    let quiet = by_model.data.iter().find(|g| g.group == "quiet/m").unwrap();
    assert_eq!(quiet.requests, 2);
    assert_eq!(quiet.estimated_requests, 2);
    // "echo: hello there" is 4 o200k tokens; the prompt is the framed message list.
    assert_eq!(quiet.completion_tokens, 8);
    assert!(quiet.prompt_tokens >= 2 * 8, "{}", quiet.prompt_tokens);

    let nope = by_model.data.iter().find(|g| g.group == "up/nope").unwrap();
    assert_eq!((nope.requests, nope.errors, nope.total_tokens), (1, 1, 0));
    assert_eq!(
        by_model.total.requests, 11,
        "one record per authenticated request"
    );
    let by_key = report(&db, GroupBy::Key);
    assert_eq!(by_key.data.len(), 1);
    assert_eq!(by_key.data[0].group, "access-1");
}

#[tokio::test]
async fn an_interrupted_stream_is_recorded_with_what_was_delivered() {
    let mock = MockUpstream::start().await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 50,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n",
    )]))
    .await;
    let request = gw
        .client
        .request(http::Method::POST, "/v1/chat/completions")
        .body(Full::new(bytes::Bytes::from(
            json!({"model": "up/m", "stream": true, "messages": user("a long story please")})
                .to_string(),
        )))
        .unwrap();
    let response = gw.client.send(request).await;
    let mut body = BodyStream::new(response.into_body());
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    drop(body);
    mock.wait_cancelled(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = gw.shutdown().await;
    let r = report(&db, GroupBy::None);
    assert_eq!(r.total.requests, 1);
    assert_eq!(r.total.errors, 1, "a cancelled request did not end ok");
    assert_eq!(r.total.estimated_requests, 1);
    assert!(r.total.prompt_tokens > 0);
    assert!(
        r.total.completion_tokens > 0 && r.total.completion_tokens < 20,
        "{}",
        r.total.completion_tokens
    );
}

#[tokio::test]
async fn usage_endpoint_shows_own_usage_and_admins_see_all() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n",
    )]))
    .await;
    for _ in 0..3 {
        gw.client
            .chat(&json!({"model": "up/m", "messages": user("x")}))
            .await;
    }
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    admin
        .chat(&json!({"model": "up/m", "messages": user("x")}))
        .await;

    // Records are written off the request path: wait until they are visible.
    let mut own = Value::Null;
    for _ in 0..100 {
        own = gw.client.get("/v1/usage?group_by=model").await.json();
        if own["total"]["requests"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(own["object"], "usage.report");
    assert_eq!(own["key"], "access-1");
    assert_eq!(own["data"][0]["group"], "up/m");
    assert_eq!(own["data"][0]["prompt_tokens"], 33);
    assert_eq!(own["total"]["total_tokens"], 54);

    let mut all = Value::Null;
    for _ in 0..100 {
        all = admin.get("/v1/usage?group_by=key").await.json();
        if all["total"]["requests"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let groups: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["access-1", "admin-1"]);
    let filtered = admin
        .get("/v1/usage?key=access-1&group_by=day")
        .await
        .json();
    assert_eq!(filtered["total"]["requests"], 3);

    let denied = gw.client.get("/v1/usage?key=admin-1").await;
    assert_eq!(denied.status, 403);
    assert_eq!(gw.client.get("/v1/usage?group_by=colour").await.status, 400);
    assert_eq!(gw.client.get("/v1/usage?from=yesterday").await.status, 400);
    assert_eq!(gw.client.with_key(None).get("/v1/usage").await.status, 401);
    let future = gw.client.get("/v1/usage?from=2099-01-01").await.json();
    assert_eq!(future["total"]["requests"], 0);
}
