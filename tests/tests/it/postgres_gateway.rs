//! The gateway with `usage.database: postgres://…`: keys made through the admin API live in
//! PostgreSQL, a chat request leaves its usage row there and `/v1/usage` reports it; with
//! PostgreSQL unreachable, requests are still served and `/readyz` says so.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::postgres::TestDatabase;
use testkit::{ADMIN_KEY, MockUpstream, TestGateway, config_with, openai_provider};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn usage_and_keys_go_to_postgres_and_usage_is_read_back_from_it() {
    let Some(db) = TestDatabase::create("gateway on PostgreSQL") else {
        return;
    };
    let mock = MockUpstream::start().await; // reports usage 11 + 7
    let yaml = format!(
        "{}usage:\n  database: \"{}\"\n",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")]),
        db.url
    );
    let gw = TestGateway::start(&yaml).await;
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    assert_eq!(gw.client.get("/readyz").await.status, 200);

    let created = admin
        .post("/admin/keys", &json!({"name": "team", "rpm": 100}))
        .await;
    assert_eq!(created.status, 201, "{}", created.json());
    let key = created.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(
        db.query_text("SELECT name FROM api_keys")
            .unwrap()
            .as_deref(),
        Some("team"),
        "the key is stored in PostgreSQL"
    );
    let team = gw.client.with_key(Some(&key));
    let answer = team
        .chat(&json!({"model": "up/m", "messages": user("hi")}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());

    // Written by the batched writer within its flush interval, then read back.
    let started = Instant::now();
    let report = loop {
        let r = admin.get("/v1/usage?group_by=key").await;
        assert_eq!(r.status, 200, "{}", r.json());
        let r = r.json();
        if r["total"]["requests"] == 1 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the record reaches PostgreSQL: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["data"][0]["group"], "team");
    assert_eq!(report["data"][0]["prompt_tokens"], 11);
    assert_eq!(report["data"][0]["completion_tokens"], 7);
    let own = team.get("/v1/usage").await.json();
    assert_eq!(
        own["total"]["requests"], 1,
        "a key sees its own usage: {own}"
    );
    assert_eq!(
        db.query_text(
            "SELECT key_name || ' ' || provider || '/' || model || ' ' || prompt_tokens FROM usage"
        )
        .unwrap()
        .as_deref(),
        Some("team up/m 11"),
        "the row in PostgreSQL"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn with_postgres_unreachable_requests_are_served_and_readyz_reports_it() {
    let mock = MockUpstream::start().await;
    // Nothing listens on port 1.
    let yaml = format!(
        "{}usage:\n  database: \"postgres://llm_bridge:secret@127.0.0.1:1/llm_bridge\"\n",
        config_with(&[openai_provider("up", &mock.url(), "      m: {}\n")])
    );
    let gw = TestGateway::start(&yaml).await;
    let answer = gw
        .client
        .chat(&json!({"model": "up/m", "messages": user("hi")}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let ready = gw.client.get("/readyz").await;
    assert_eq!(ready.status, 503, "the usage store is down");
    assert_eq!(
        gw.client.get("/healthz").await.status,
        200,
        "alive all the same"
    );
    gw.shutdown().await;
}
