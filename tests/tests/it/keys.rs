//! Managed keys on the running gateway: the admin API, permissions, rate limits and budgets,
//! over HTTP and WebSocket alike.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    ADMIN_KEY, Behavior, Client, Echo, MockUpstream, TestGateway, config_with, openai_provider,
};

async fn gateway(mock: &MockUpstream) -> TestGateway {
    TestGateway::start(&config_with(&[openai_provider(
        "up",
        &mock.url(),
        "      m: {}\n      other: {}\n",
    )]))
    .await
}

/// Creates a managed key through the admin API; returns its secret.
async fn create(gw: &TestGateway, body: Value) -> String {
    let answer = gw
        .client
        .with_key(Some(ADMIN_KEY))
        .post("/admin/keys", &body)
        .await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["key"].as_str().unwrap().to_owned()
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn the_admin_api_manages_keys_and_never_shows_them_again() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    // Only admins.
    assert_eq!(gw.client.get("/admin/keys").await.status, 403);
    assert_eq!(
        gw.client.with_key(None).get("/admin/keys").await.status,
        401
    );

    let key = create(
        &gw,
        json!({"name": "alice", "models": ["up/*"], "rpm": 100, "expires_in": "30d"}),
    )
    .await;
    assert!(key.starts_with("sk-llmb-"));
    let listed = admin.get("/admin/keys").await;
    assert_eq!(listed.status, 200);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(!text.contains(&key), "the key itself is never listed");
    let alice = &listed.json()["data"][0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["rpm"], 100);
    assert_eq!(alice["key_prefix"].as_str().unwrap(), &key[..12]);
    assert!(alice["expires_at"].as_i64().unwrap() > 0);

    // The key works at once, is recorded under its name, and can be changed and revoked.
    let alice_client = gw.client.with_key(Some(&key));
    assert_eq!(alice_client.chat(&chat_body("up/m")).await.status, 200);
    let dup = admin.post("/admin/keys", &json!({"name": "alice"})).await;
    assert_eq!(dup.status, 400);
    let bad = admin
        .post("/admin/keys", &json!({"name": "bob", "rmp": 1}))
        .await;
    assert_eq!(bad.status, 400, "unknown settings are refused");
    let patched = admin
        .request(http::Method::PATCH, "/admin/keys/alice")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"rpm": null, "tpm": 5000}).to_string(),
        )))
        .unwrap();
    let patched = gw.client.call(patched).await;
    assert_eq!(patched.status, 200);
    assert!(patched.json()["rpm"].is_null());
    assert_eq!(patched.json()["tpm"], 5000);
    let shown = admin.get("/admin/keys/alice").await.json();
    assert_eq!(shown["spent_tokens"]["total"], 18);
    assert_eq!(admin.get("/admin/keys/nobody").await.status, 404);

    let revoke = admin
        .request(http::Method::DELETE, "/admin/keys/alice")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(gw.client.call(revoke).await.json()["revoked"], true);
    let refused = alice_client.chat(&chat_body("up/m")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["message"], "API key revoked");
    assert_eq!(refused.json()["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn models_outside_the_allow_list_are_403_and_not_listed() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let key = create(&gw, json!({"name": "narrow", "models": ["up/m"]})).await;
    let c = gw.client.with_key(Some(&key));
    assert_eq!(c.chat(&chat_body("up/m")).await.status, 200);
    let denied = c.chat(&chat_body("up/other")).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"]["type"], "permission_error");
    let ids: Vec<String> = c.get("/v1/models").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["up/m"]);
    // Static keys see everything.
    assert_eq!(
        gw.client.get("/v1/models").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_route_whose_every_target_is_allowed_is_usable_and_listed() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "routes:\n  only-m: {{ targets: [up/m] }}\n  mixed: {{ targets: [up/m, up/other] }}\n{}",
        config_with(&[openai_provider(
            "up",
            &mock.url(),
            "      m: {}\n      other: {}\n",
        )])
    );
    let gw = TestGateway::start(&yaml).await;
    let key = create(&gw, json!({"name": "narrow", "models": ["up/m"]})).await;
    let c = gw.client.with_key(Some(&key));
    assert_eq!(c.chat(&chat_body("only-m")).await.status, 200);
    assert_eq!(c.chat(&chat_body("mixed")).await.status, 403);
    let mut ids: Vec<String> = c.get("/v1/models").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["only-m", "up/m"], "what it may use, and nothing else");
}

#[tokio::test]
async fn exactly_rpm_requests_pass_when_fifty_arrive_at_once() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let key = create(&gw, json!({"name": "rpm10", "rpm": 10})).await;
    let c = gw.client.with_key(Some(&key));
    let answers = futures_util::future::join_all((0..50).map(|_| {
        let c = c.clone();
        async move { c.chat(&chat_body("up/m")).await }
    }))
    .await;
    let ok: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!((ok.len(), limited.len()), (10, 40));
    let a = limited[0];
    assert_eq!(a.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(
        ok.iter()
            .all(|a| a.header("x-ratelimit-limit-requests") == Some("10"))
    );
    let remaining: Vec<u64> = ok
        .iter()
        .map(|a| {
            a.header("x-ratelimit-remaining-requests")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let mut sorted = remaining.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..10).collect::<Vec<u64>>(),
        "each admitted request saw one fewer left"
    );
    assert_eq!(mock.request_count(), 10);
}

#[tokio::test]
async fn token_limits_reserve_an_estimate_and_hold_under_concurrency() {
    let mock = MockUpstream::start().await;
    // Slow answers: nothing settles while the fifty requests arrive.
    mock.set_default(Behavior::Delay(
        Duration::from_millis(400),
        Box::new(Behavior::Echo(Echo::default())),
    ));
    let gw = gateway(&mock).await;
    let key = create(&gw, json!({"name": "tpm", "tpm": 1000})).await;
    let c = gw.client.with_key(Some(&key));
    let body = json!({"model": "up/m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let estimate = (body.to_string().len() as u64).div_ceil(4) + 100;
    let expected = 1000u64.div_ceil(estimate) as usize;
    let answers = futures_util::future::join_all((0..50).map(|_| {
        let (c, body) = (c.clone(), body.clone());
        async move { c.chat(&body).await }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(
        ok, expected,
        "admitted while below 1000 tokens: ⌈1000 / {estimate}⌉"
    );
    let limited = answers.iter().find(|a| a.status == 429).unwrap();
    assert_eq!(limited.header("x-ratelimit-limit-tokens"), Some("1000"));
    assert!(limited.header("retry-after").is_some());
    // Settled with the real usage (18 tokens each), the window has room again.
    let again = c.chat(&body).await;
    assert_eq!(again.status, 200);
    let left: u64 = again
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(left, 1000 - 18 * expected as u64 - estimate);
}

#[tokio::test]
async fn a_spent_budget_is_429_insufficient_quota() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let key = create(
        &gw,
        json!({"name": "thrifty", "budget_tokens": {"total": 30}}),
    )
    .await;
    let c = gw.client.with_key(Some(&key));
    assert_eq!(c.chat(&chat_body("up/m")).await.status, 200); // 18 tokens
    assert_eq!(c.chat(&chat_body("up/m")).await.status, 200); // 36: over, but admitted at 18
    let refused = c.chat(&chat_body("up/m")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["code"], "insufficient_quota");
    assert_eq!(refused.json()["error"]["type"], "insufficient_quota");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn expired_keys_are_401() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let key = create(&gw, json!({"name": "old", "expires_at": 1})).await;
    let refused = gw
        .client
        .with_key(Some(&key))
        .chat(&chat_body("up/m"))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["message"], "API key expired");
}

#[tokio::test]
async fn the_same_limits_hold_over_websocket() {
    use futures_util::{SinkExt, StreamExt};
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).await;
    let key = create(&gw, json!({"name": "ws", "rpm": 1, "models": ["up/m"]})).await;
    let url = format!("{}/v1/ws", gw.url().replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames = Vec::new();
    for (id, model) in [("a", "up/m"), ("b", "up/m"), ("c", "up/other")] {
        let frame = json!({"type": "chat", "id": id, "api_key": key,
            "payload": {"model": model, "stream": false, "messages": [{"role": "user", "content": "x"}]}});
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            frame.to_string(),
        ))
        .await
        .unwrap();
        loop {
            let m = ws.next().await.unwrap().unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                frames.push(v);
                break;
            }
        }
    }
    assert_eq!(frames[0]["type"], "completion");
    assert_eq!(frames[1]["error"]["status"], 429);
    assert_eq!(frames[1]["error"]["code"], "rate_limit_exceeded");
    assert_eq!(frames[2]["error"]["status"], 403);
    let _ = Client::new(&gw.url(), None);
}
