//! The binary on PostgreSQL: `migrate` moves a SQLite database into an empty PostgreSQL one
//! (and refuses a second time), `keys` and `usage` read it with `--database`, and `check`
//! says whether the database can be used.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use llm_bridge_auth::{KeyPolicy, KeyStore, SqliteKeyStore};
use llm_bridge_core::Usage;
use llm_bridge_postgres::{PgKeyStore, PgResponses, PgUsageReader, Postgres};
use llm_bridge_usage::{
    GroupBy, ResponseStore, SqliteResponses, SqliteStore, SqliteUsageReader, StoredResponse,
    UsageQuery, UsageReader, UsageRecord, UsageSource, UsageStore,
};
use testkit::postgres::TestDatabase;

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .env_remove("ACCESS_API_KEYS")
        .env_remove("LLM_BRIDGE_CONFIG")
        .output()
        .expect("run llm-bridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &std::path::Path, database: &str) {
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::write(
        dir.join("configs/config.yaml"),
        format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: http://127.0.0.1:9\n    api_key: k\n    models:\n      x: {{}}\nusage:\n  database: \"{database}\"\n"
        ),
    )
    .unwrap();
}

/// 2026-11-26T12:00:00Z
const NOON: i64 = 1_795_694_400_000;

fn record(i: i64) -> UsageRecord {
    UsageRecord {
        time_ms: NOON + i * 60_000,
        request_id: format!("req-{i}"),
        key: Some(if i % 3 == 0 { "alice" } else { "bob" }.into()),
        provider: Some("m".into()),
        model: Some("x".into()),
        upstream_model: None,
        route: None,
        transport: "http".into(),
        stream: i % 2 == 0,
        status: 200,
        outcome: "ok".into(),
        usage: Usage::new(10, i as u64 % 7),
        usage_source: UsageSource::Upstream,
        latency_ms: 2.0,
        ttft_ms: None,
        cost: Some(0.001),
    }
}

#[test]
fn migrate_moves_keys_usage_and_kept_answers_and_refuses_a_second_time() {
    let Some(db) = TestDatabase::create("migrate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("data/llm-bridge.db");
    write_config(dir.path(), "data/llm-bridge.db");

    let keys = SqliteKeyStore::open(&sqlite).unwrap();
    keys.create(
        "alice",
        &KeyPolicy {
            rpm: Some(5),
            ..KeyPolicy::default()
        },
        NOON,
    )
    .unwrap();
    keys.create("bob", &KeyPolicy::default(), NOON).unwrap();
    keys.revoke("bob", NOON + 1).unwrap();
    let mut usage = SqliteStore::open(&sqlite).unwrap();
    let records: Vec<UsageRecord> = (0..2500).map(record).collect();
    for chunk in records.chunks(1000) {
        usage.insert(chunk).unwrap();
    }
    let now = llm_bridge_usage::time::now_ms();
    let responses = SqliteResponses::open(&sqlite, Duration::from_secs(86_400)).unwrap();
    let kept = StoredResponse {
        id: "resp_kept".into(),
        created_ms: now,
        key: "alice".into(),
        input: "[]".into(),
        response: r#"{"id":"resp_kept"}"#.into(),
    };
    responses.put(kept.clone()).unwrap();
    responses
        .put(StoredResponse {
            id: "resp_old".into(),
            created_ms: now - 2 * 86_400_000,
            ..kept.clone()
        })
        .unwrap();

    let (code, out, err) = run(
        dir.path(),
        &["migrate", "--from", "data/llm-bridge.db", "--to", &db.url],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("copied 2 key(s), 2500 usage record(s) and 1 kept answer(s)"),
        "{out}"
    );

    let pg = Postgres::new(&db.url.clone().into()).unwrap();
    assert_eq!(
        PgKeyStore::new(pg.clone()).list().unwrap(),
        keys.list().unwrap(),
        "keys with their hashes, policies and dates"
    );
    for group_by in [GroupBy::Key, GroupBy::Day, GroupBy::None] {
        let q = UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX / 2,
            group_by,
            key: None,
        };
        assert_eq!(
            PgUsageReader::new(pg.clone()).query(&q).unwrap(),
            SqliteUsageReader::new(&sqlite).query(&q).unwrap()
        );
    }
    let moved = PgResponses::new(pg.clone(), Duration::from_secs(86_400));
    assert_eq!(moved.get("resp_kept", now).unwrap(), Some(kept));
    assert_eq!(moved.get("resp_old", now).unwrap(), None, "expired: left");

    let (code, _, err) = run(
        dir.path(),
        &["migrate", "--from", "data/llm-bridge.db", "--to", &db.url],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("already holds data") && err.contains("usage: 2500 rows"),
        "{err}"
    );
    assert!(err.contains("copied nothing"), "{err}");

    // The CLI reads the same database with --database.
    let (code, out, err) = run(dir.path(), &["keys", "list", "--database", &db.url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("revoked"), "{out}");
    let (code, out, err) = run(
        dir.path(),
        &[
            "usage",
            "--database",
            &db.url,
            "--since",
            "0",
            "--by",
            "key",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"]["requests"], 2500);
    assert_eq!(report["data"][0]["group"], "alice");
}

#[test]
fn check_tries_the_database_and_says_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "postgres://llm_bridge:hunter2@127.0.0.1:1/llm_bridge",
    );
    let (code, _, err) = run(dir.path(), &["check"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("usage.database: postgres://llm_bridge:***@127.0.0.1:1/llm_bridge"),
        "{err}"
    );
    assert!(err.contains("onnect"), "the cause is named: {err}");
    assert!(!err.contains("hunter2"), "no password in messages: {err}");

    if let Some(db) = TestDatabase::create("check") {
        write_config(dir.path(), &db.url);
        let (code, out, err) = run(dir.path(), &["check"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("database: postgres://"), "{out}");
        assert!(out.contains(": ok"), "{out}");
    }
}
