//! The versioned schema, as in the SQLite database: a `schema_migrations` table holds each
//! component's version; each migration runs once, in order. A database whose schema is newer
//! than this build knows is refused rather than misread. Instances starting together take
//! turns (an advisory lock held for the migrating transaction).

use tokio_postgres::Client;

/// Keys: the keys table and the counter every key change moves (with a NOTIFY).
const KEYS: &[&str] = &["CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key_hash BYTEA NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        policy TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
    );
    CREATE TABLE key_changes (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    INSERT INTO key_changes (id, version) VALUES (1, 0);"];

/// Usage records, the same columns as SQLite's.
const USAGE: &[&str] = &["CREATE TABLE usage (
        id BIGSERIAL PRIMARY KEY,
        ts BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        key_name TEXT,
        provider TEXT,
        model TEXT,
        upstream_model TEXT,
        route TEXT,
        transport TEXT NOT NULL,
        stream BOOLEAN NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        usage_source TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        cost DOUBLE PRECISION,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX usage_ts ON usage (ts);
    CREATE INDEX usage_key_ts ON usage (key_name, ts);"];

/// Kept Responses answers, with their expiry for pruning.
const RESPONSES: &[&str] = &["CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        key_name TEXT NOT NULL,
        input TEXT NOT NULL,
        response TEXT NOT NULL
    );
    CREATE INDEX responses_expires ON responses (expires_ms);"];

/// The keys schema version this build knows.
pub const KEYS_VERSION: i64 = KEYS.len() as i64;
/// The usage schema version this build knows.
pub const USAGE_VERSION: i64 = USAGE.len() as i64;
/// The kept-answers schema version this build knows.
pub const RESPONSES_VERSION: i64 = RESPONSES.len() as i64;

/// An arbitrary constant naming llm-bridge's advisory lock.
const LOCK: i64 = 0x6c6c_6d62_7269_6467;

/// Brings every component up to date, in one transaction.
pub(crate) async fn run(client: &mut Client) -> Result<(), String> {
    let text = |e: tokio_postgres::Error| crate::describe(&e);
    let tx = client.transaction().await.map_err(text)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(text)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    )
    .await
    .map_err(text)?;
    for (component, migrations) in [("keys", KEYS), ("usage", USAGE), ("responses", RESPONSES)] {
        let current: i64 = tx
            .query_opt(
                "SELECT version FROM schema_migrations WHERE component = $1",
                &[&component],
            )
            .await
            .map_err(text)?
            .map_or(0, |r| r.get(0));
        let known = migrations.len() as i64;
        if current > known {
            return Err(format!(
                "the database's {component} schema is version {current}, newer than this llm-bridge knows ({known}): upgrade llm-bridge"
            ));
        }
        for (i, sql) in migrations
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            tx.batch_execute(sql).await.map_err(text)?;
            tx.execute(
                "INSERT INTO schema_migrations (component, version) VALUES ($1, $2)
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                &[&component, &(i as i64 + 1)],
            )
            .await
            .map_err(text)?;
        }
    }
    tx.commit().await.map_err(text)
}
