//! Where usage records are kept: the [`UsageStore`] trait and the embedded SQLite store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use crate::overview::{self, Overview, OverviewQuery};
use crate::query::{GroupBy, UsageGroup, UsageQuery, UsageReport};
use crate::record::UsageRecord;

/// A store that failed; the writer logs it and tries again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Somewhere to write usage records in batches.
pub trait UsageStore: Send {
    /// Writes all records, or none of them.
    fn insert(&mut self, records: &[UsageRecord]) -> Result<(), StoreError>;
}

/// The versioned schema of the usage table; each entry runs once, in order.
const MIGRATIONS: &[&str] = &[
    // 1: the usage table.
    "CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        key_name TEXT,
        provider TEXT,
        model TEXT,
        upstream_model TEXT,
        route TEXT,
        transport TEXT NOT NULL,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_source TEXT NOT NULL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        cost REAL
    );
    CREATE INDEX usage_ts ON usage (ts);
    CREATE INDEX usage_key_ts ON usage (key_name, ts);",
    // 2: prompt tokens written to the provider's cache (Anthropic), apart from cache reads.
    "ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;",
];

/// Opens a database file with the settings every llm-bridge component uses: the folder is
/// created, WAL journaling, `synchronous = NORMAL` (a committed batch survives a crash of the
/// process; a power loss may lose the last commits), and a busy timeout.
pub fn open_database(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Runs the migrations of one component (`usage`, `keys`, …) that have not run yet, each in
/// its own transaction. Components share the database file and version their tables apart.
pub fn migrate(
    conn: &mut Connection,
    component: &str,
    migrations: &[&str],
) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM schema_migrations WHERE component = ?1",
            [component],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError(format!(
            "the database's {component} schema is version {current}, newer than this llm-bridge knows ({known}): upgrade llm-bridge"
        )));
    }
    for (i, sql) in migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version) VALUES (?1, ?2)
             ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            params![component, i64::try_from(i + 1).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The embedded SQLite usage store.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // A short busy timeout: the writer retries on its own schedule rather than blocking.
        let mut conn = open_database(path, Duration::from_millis(200))?;
        migrate(&mut conn, "usage", MIGRATIONS)?;
        Ok(SqliteStore { conn })
    }
}

impl UsageStore for SqliteStore {
    fn insert(&mut self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage (ts, request_id, key_name, provider, model, upstream_model, route,
                    transport, stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens,
                    reasoning_tokens, usage_source, latency_ms, ttft_ms, cost, cache_write_tokens)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )?;
            for r in records {
                stmt.execute(params![
                    r.time_ms,
                    r.request_id,
                    r.key,
                    r.provider,
                    r.model,
                    r.upstream_model,
                    r.route,
                    r.transport,
                    r.stream,
                    r.status,
                    r.outcome,
                    clamp(r.usage.prompt_tokens),
                    clamp(r.usage.completion_tokens),
                    clamp(r.usage.cached_tokens),
                    clamp(r.usage.reasoning_tokens),
                    r.usage_source.as_str(),
                    r.latency_ms,
                    r.ttft_ms,
                    r.cost,
                    clamp(r.usage.cache_write_tokens),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A text column, borrowed.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<Option<&'r str>, StoreError> {
    row.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| StoreError(e.to_string()))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads usage from the database; each query opens its own read connection, so readers
/// never wait for the writer (WAL).
#[derive(Debug, Clone)]
pub struct UsageReader {
    path: PathBuf,
}

impl UsageReader {
    /// A reader of the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UsageReader { path: path.into() }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection, or `None` when there is no usage table yet.
    fn open_read(&self) -> Result<Option<Connection>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError(format!("cannot open {}: {e}", self.path.display())))?;
        conn.busy_timeout(Duration::from_secs(2))?;
        let has_table: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage')",
            [],
            |r| r.get(0),
        )?;
        Ok(has_table.then_some(conn))
    }

    /// Buckets, percentiles and top lists over a time range (the console's overview), from
    /// one pass over the range's records. Blocking: call it off the async threads.
    pub fn overview(&self, q: &OverviewQuery) -> Result<Overview, StoreError> {
        let mut builder = overview::Builder::new(q);
        let Some(conn) = self.open_read()? else {
            return Ok(builder.finish());
        };
        let mut stmt = conn.prepare(
            "SELECT ts, outcome = 'ok', prompt_tokens, completion_tokens, cost, latency_ms, ttft_ms,
                    key_name, provider, model
             FROM usage WHERE ts >= ?1 AND ts < ?2",
        )?;
        let mut rows = stmt.query(params![q.from_ms, q.to_ms])?;
        let mut model = String::new();
        while let Some(r) = rows.next()? {
            let row = overview::Row {
                ts: r.get(0)?,
                ok: r.get(1)?,
                prompt: r.get::<_, i64>(2)?.max(0) as u64,
                completion: r.get::<_, i64>(3)?.max(0) as u64,
                cost: r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                latency: r.get(5)?,
                ttft: r.get(6)?,
            };
            let key = text(r, 7)?.unwrap_or("(none)");
            model.clear();
            match (text(r, 8)?, text(r, 9)?) {
                (Some(p), Some(m)) => {
                    model.push_str(p);
                    model.push('/');
                    model.push_str(m);
                }
                (None, Some(m)) => model.push_str(m),
                _ => model.push_str("(unknown)"),
            }
            builder.add(&row, key, &model);
        }
        Ok(builder.finish())
    }

    /// Totals per group over a time range. Blocking: call it off the async threads.
    pub fn query(&self, q: &UsageQuery) -> Result<UsageReport, StoreError> {
        let Some(conn) = self.open_read()? else {
            return Ok(UsageReport::empty(q));
        };
        let group = match q.group_by {
            GroupBy::Key => "COALESCE(key_name, '(none)')",
            GroupBy::Model => "COALESCE(provider || '/' || model, model, '(unknown)')",
            GroupBy::Provider => "COALESCE(provider, '(unknown)')",
            GroupBy::Day => "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')",
            GroupBy::None => "'all'",
        };
        let sql = format!(
            "SELECT {group} AS g, COUNT(*), SUM(outcome != 'ok'), SUM(usage_source = 'estimated'),
                    SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(reasoning_tokens),
                    SUM(cost), COUNT(cost), SUM(cache_write_tokens)
             FROM usage
             WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR key_name = ?3)
             GROUP BY g ORDER BY g"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![q.from_ms, q.to_ms, q.key], |r| {
            let costs: i64 = r.get(9)?;
            Ok(UsageGroup {
                group: r.get(0)?,
                requests: r.get::<_, i64>(1)?.max(0) as u64,
                errors: r.get::<_, i64>(2)?.max(0) as u64,
                estimated_requests: r.get::<_, i64>(3)?.max(0) as u64,
                prompt_tokens: r.get::<_, i64>(4)?.max(0) as u64,
                completion_tokens: r.get::<_, i64>(5)?.max(0) as u64,
                cached_tokens: r.get::<_, i64>(6)?.max(0) as u64,
                reasoning_tokens: r.get::<_, i64>(7)?.max(0) as u64,
                cache_write_tokens: r.get::<_, i64>(10)?.max(0) as u64,
                total_tokens: 0,
                cost: if costs > 0 {
                    r.get::<_, Option<f64>>(8)?
                } else {
                    None
                },
            })
        })?;
        let mut groups = Vec::new();
        for row in rows {
            let mut g = row?;
            g.total_tokens = g.prompt_tokens + g.completion_tokens;
            groups.push(g);
        }
        Ok(UsageReport::new(q, groups))
    }
}
