//! Where usage records are kept: the [`UsageStore`] trait and the embedded SQLite store.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

// foldhash, not std's SipHash, for the roll-ups of every batch (seeded per process).
use foldhash::HashMap;

use crate::overview::{self, Acc, Hist, Overview, OverviewQuery};
use crate::query::{GroupBy, UsageGroup, UsageQuery, UsageReport};
use crate::record::{UsageRecord, UsageSource};

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

    /// The writer has been quiet for a while: give back what the store keeps in memory
    /// between writes (SQLite's page cache). The next write reads it again.
    fn release_memory(&mut self) {}
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
    // 3: the console's overview reads a time range's records from this index alone (no
    // table lookups); usage by model reads its groups in order.
    "CREATE INDEX usage_ts_overview ON usage (ts, outcome, prompt_tokens, completion_tokens, cost,
        latency_ms, ttft_ms, key_name, provider, model);
    CREATE INDEX usage_model_ts ON usage (provider, model, ts);",
    // 4: hourly roll-ups (totals and latency histograms per hour, key and model), kept by
    // the writer in the same transaction as the records: a week's overview or a month's
    // usage reads a few thousand rows instead of every record. Filled from the existing
    // records once (see `backfill_hourly`).
    "CREATE TABLE usage_hourly (
        hour INTEGER NOT NULL,
        key_name TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        priced INTEGER NOT NULL,
        latency BLOB NOT NULL,
        ttft BLOB NOT NULL,
        PRIMARY KEY (hour, key_name, provider, model)
    ) WITHOUT ROWID;",
    // 5: two indexes every insert paid for and no query needs: `usage_ts` is a prefix of
    // `usage_ts_overview`, which serves every time-range read, and usage by model reads the
    // hourly roll-ups and, for part hours, a time range. Each record now updates three
    // B-trees instead of five (measured: about a third less SQLite time per insert).
    "DROP INDEX IF EXISTS usage_ts;
    DROP INDEX IF EXISTS usage_model_ts;",
    // 6: `usage_key_ts` serves no query either: usage for one key filters a time range read
    // through `usage_ts_overview` (`?3 IS NULL OR key_name = ?3` cannot seek an index), and
    // whole hours come from the roll-ups. Each record now updates two B-trees, not three:
    // the writer's instructions per record 20.4k → 15.6k (callgrind).
    "DROP INDEX IF EXISTS usage_key_ts;",
];

/// One hour in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// One roll-up row's totals.
#[derive(Default)]
struct Roll {
    requests: i64,
    errors: i64,
    estimated: i64,
    prompt: i64,
    completion: i64,
    cached: i64,
    reasoning: i64,
    cache_write: i64,
    cost: f64,
    priced: i64,
    latency: Hist,
    ttft: Hist,
}

/// Hour, key, provider, model: borrowed from the records (a batch is thousands of them).
type RollKey<'a> = (i64, &'a str, &'a str, &'a str);

impl Roll {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.errors += i64::from(r.outcome != "ok");
        self.estimated += i64::from(r.usage_source == crate::record::UsageSource::Estimated);
        self.prompt += clamp(r.usage.prompt_tokens);
        self.completion += clamp(r.usage.completion_tokens);
        self.cached += clamp(r.usage.cached_tokens);
        self.reasoning += clamp(r.usage.reasoning_tokens);
        self.cache_write += clamp(r.usage.cache_write_tokens);
        if let Some(c) = r.cost {
            self.cost += c;
            self.priced += 1;
        }
        self.latency.add(r.latency_ms);
        if let Some(t) = r.ttft_ms {
            self.ttft.add(t);
        }
    }

    fn key_of(r: &UsageRecord) -> RollKey<'_> {
        (
            r.time_ms - r.time_ms.rem_euclid(HOUR_MS),
            r.key.as_deref().unwrap_or_default(),
            r.provider.as_deref().unwrap_or_default(),
            r.model.as_deref().unwrap_or_default(),
        )
    }
}

/// Adds these records to the hourly roll-ups, inside the caller's transaction.
fn roll_up(tx: &rusqlite::Transaction<'_>, records: &[UsageRecord]) -> Result<(), StoreError> {
    let mut rolls: HashMap<RollKey<'_>, Roll> = HashMap::default();
    for r in records {
        rolls.entry(Roll::key_of(r)).or_default().add(r);
    }
    let mut read = tx.prepare_cached(
        "SELECT requests, errors, estimated, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, cache_write_tokens, cost, priced, latency, ttft
         FROM usage_hourly WHERE hour = ?1 AND key_name = ?2 AND provider = ?3 AND model = ?4",
    )?;
    let mut write = tx.prepare_cached(
        "INSERT OR REPLACE INTO usage_hourly (hour, key_name, provider, model, requests, errors,
            estimated, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
            cache_write_tokens, cost, priced, latency, ttft)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for ((hour, key, provider, model), mut roll) in rolls {
        let mut rows = read.query(params![hour, key, provider, model])?;
        if let Some(old) = rows.next()? {
            roll.requests += old.get::<_, i64>(0)?;
            roll.errors += old.get::<_, i64>(1)?;
            roll.estimated += old.get::<_, i64>(2)?;
            roll.prompt += old.get::<_, i64>(3)?;
            roll.completion += old.get::<_, i64>(4)?;
            roll.cached += old.get::<_, i64>(5)?;
            roll.reasoning += old.get::<_, i64>(6)?;
            roll.cache_write += old.get::<_, i64>(7)?;
            roll.cost += old.get::<_, f64>(8)?;
            roll.priced += old.get::<_, i64>(9)?;
            roll.latency
                .merge_encoded(old.get_ref(10)?.as_blob().unwrap_or_default());
            roll.ttft
                .merge_encoded(old.get_ref(11)?.as_blob().unwrap_or_default());
        }
        drop(rows);
        write.execute(params![
            hour,
            key,
            provider,
            model,
            roll.requests,
            roll.errors,
            roll.estimated,
            roll.prompt,
            roll.completion,
            roll.cached,
            roll.reasoning,
            roll.cache_write,
            roll.cost,
            roll.priced,
            roll.latency.encode(),
            roll.ttft.encode(),
        ])?;
    }
    Ok(())
}

/// Fills the hourly roll-ups from the records written before they existed, once.
fn backfill_hourly(conn: &mut Connection) -> Result<(), StoreError> {
    let done: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE component = 'usage_hourly')",
        [],
        |r| r.get(0),
    )?;
    if done {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM usage_hourly", [])?;
    {
        let mut stmt = tx.prepare(
            "SELECT ts, key_name, provider, model, outcome, usage_source, prompt_tokens,
                    completion_tokens, cached_tokens, reasoning_tokens, cache_write_tokens,
                    latency_ms, ttft_ms, cost
             FROM usage",
        )?;
        let mut rows = stmt.query([])?;
        let mut batch = Vec::new();
        while let Some(r) = rows.next()? {
            let n = |i: usize| -> Result<u64, rusqlite::Error> {
                Ok(r.get::<_, i64>(i)?.max(0) as u64)
            };
            let mut usage = llm_bridge_core::Usage::new(n(6)?, n(7)?);
            usage.cached_tokens = n(8)?;
            usage.reasoning_tokens = n(9)?;
            usage.cache_write_tokens = n(10)?;
            batch.push(UsageRecord {
                time_ms: r.get(0)?,
                request_id: String::new(),
                key: r.get(1)?,
                provider: r.get(2)?,
                model: r.get(3)?,
                upstream_model: None,
                route: None,
                transport: String::new(),
                stream: false,
                status: 0,
                outcome: r.get(4)?,
                usage,
                usage_source: if r.get::<_, String>(5)? == "estimated" {
                    crate::record::UsageSource::Estimated
                } else {
                    crate::record::UsageSource::Upstream
                },
                latency_ms: r.get(11)?,
                ttft_ms: r.get(12)?,
                cost: r.get(13)?,
            });
            if batch.len() == 10_000 {
                roll_up(&tx, &batch)?;
                batch.clear();
            }
        }
        roll_up(&tx, &batch)?;
    }
    tx.execute(
        "INSERT INTO schema_migrations (component, version) VALUES ('usage_hourly', 1)",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

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

/// Frees the connection's page cache (up to 2 MB by SQLite's default `cache_size`, allocated
/// with the C library's `malloc`, so no Rust allocator gives it back): a writer that went
/// quiet after a burst kept it for good. Measured after 4 s of 64 connections and 30 s of
/// quiet: 2.3 MB of the process's RSS. The pages come back from the operating system's file
/// cache on the next write, a few reads per index.
pub(crate) fn release_page_cache(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
        tracing::debug!(error = %e, "SQLite would not release its page cache");
    }
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
        backfill_hourly(&mut conn)?;
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
        roll_up(&tx, records)?;
        tx.commit()?;
        Ok(())
    }

    fn release_memory(&mut self) {
        release_page_cache(&self.conn);
    }
}

/// Totals per group of the records in `[from, to)`.
fn raw_groups(
    conn: &Connection,
    q: &UsageQuery,
    from: i64,
    to: i64,
    out: &mut Vec<UsageGroup>,
) -> Result<(), StoreError> {
    if from >= to {
        return Ok(());
    }
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
         GROUP BY g"
    );
    read_groups(conn, &sql, params![from, to, q.key], out)
}

/// Totals per group of the hourly roll-ups of the hours in `[from, to)`.
fn hourly_groups(
    conn: &Connection,
    q: &UsageQuery,
    from: i64,
    to: i64,
    out: &mut Vec<UsageGroup>,
) -> Result<(), StoreError> {
    let group = match q.group_by {
        GroupBy::Key => "CASE key_name WHEN '' THEN '(none)' ELSE key_name END",
        GroupBy::Model => {
            "CASE WHEN model = '' THEN '(unknown)' WHEN provider = '' THEN model
                  ELSE provider || '/' || model END"
        }
        GroupBy::Provider => "CASE provider WHEN '' THEN '(unknown)' ELSE provider END",
        GroupBy::Day => "strftime('%Y-%m-%d', hour / 1000, 'unixepoch')",
        GroupBy::None => "'all'",
    };
    let sql = format!(
        "SELECT {group} AS g, SUM(requests), SUM(errors), SUM(estimated),
                SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(reasoning_tokens),
                SUM(cost), SUM(priced), SUM(cache_write_tokens)
         FROM usage_hourly
         WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR key_name = ?3)
         GROUP BY g"
    );
    read_groups(conn, &sql, params![from, to, q.key], out)
}

fn read_groups(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    out: &mut Vec<UsageGroup>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| {
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
    for row in rows {
        out.push(row?);
    }
    Ok(())
}

/// `provider/model` as usage reports name it.
fn model_name(out: &mut String, provider: Option<&str>, model: Option<&str>) {
    out.clear();
    match (provider, model) {
        (Some(p), Some(m)) => {
            out.push_str(p);
            out.push('/');
            out.push_str(m);
        }
        (None, Some(m)) => out.push_str(m),
        _ => out.push_str("(unknown)"),
    }
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )?)
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

/// Where usage is read back from (`/v1/usage`, `llm-bridge usage`, the console, budgets at
/// start-up). Implementations: [`SqliteUsageReader`] and the PostgreSQL reader of
/// `llm-bridge-postgres`.
pub trait UsageReader: Send + Sync {
    /// Totals per group over a time range. Blocking: call it off the async threads.
    fn query(&self, q: &UsageQuery) -> Result<UsageReport, StoreError>;
    /// Buckets, percentiles and top lists over a time range (the console's overview).
    /// Blocking: call it off the async threads.
    fn overview(&self, q: &OverviewQuery) -> Result<Overview, StoreError>;
}

/// Reads usage from the SQLite database; each query opens its own read connection, so
/// readers never wait for the writer (WAL).
#[derive(Debug, Clone)]
pub struct SqliteUsageReader {
    path: PathBuf,
}

impl SqliteUsageReader {
    /// A reader of the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteUsageReader { path: path.into() }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record with a row id above `after`, oldest first, at most `limit`, with its
    /// row id: for moving the records to another store (`llm-bridge migrate`).
    pub fn export(&self, after: i64, limit: usize) -> Result<Vec<(i64, UsageRecord)>, StoreError> {
        let Some(conn) = self.read_connection()? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(
            "SELECT id, ts, request_id, key_name, provider, model, upstream_model, route, transport,
                    stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens,
                    reasoning_tokens, usage_source, latency_ms, ttft_ms, cost, cache_write_tokens
             FROM usage WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                let n =
                    |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
                let usage = llm_bridge_core::Usage {
                    prompt_tokens: n(12)?,
                    completion_tokens: n(13)?,
                    total_tokens: n(12)? + n(13)?,
                    cached_tokens: n(14)?,
                    reasoning_tokens: n(15)?,
                    cache_write_tokens: n(20)?,
                };
                let source: String = r.get(16)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    UsageRecord {
                        time_ms: r.get(1)?,
                        request_id: r.get(2)?,
                        key: r.get(3)?,
                        provider: r.get(4)?,
                        model: r.get(5)?,
                        upstream_model: r.get(6)?,
                        route: r.get(7)?,
                        transport: r.get(8)?,
                        stream: r.get(9)?,
                        status: u16::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
                        outcome: r.get(11)?,
                        usage,
                        usage_source: UsageSource::parse(&source),
                        latency_ms: r.get(17)?,
                        ttft_ms: r.get(18)?,
                        cost: r.get(19)?,
                    },
                ))
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// A read-only connection, or `None` when there is no usage table yet.
    fn read_connection(&self) -> Result<Option<Connection>, StoreError> {
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
}

impl UsageReader for SqliteUsageReader {
    /// Buckets, percentiles and top lists over a time range (the console's overview), from
    /// one pass over the range's records. Blocking: call it off the async threads.
    fn overview(&self, q: &OverviewQuery) -> Result<Overview, StoreError> {
        let mut builder = overview::Builder::new(q);
        let Some(conn) = self.read_connection()? else {
            return Ok(builder.finish());
        };
        let hourly = q.from_ms % HOUR_MS == 0
            && q.to_ms % HOUR_MS == 0
            && q.bucket_ms % HOUR_MS == 0
            && has_table(&conn, "usage_hourly")?;
        if hourly {
            let mut stmt = conn.prepare(
                "SELECT hour, requests, errors, prompt_tokens, completion_tokens, cost, latency, ttft,
                        key_name, provider, model
                 FROM usage_hourly WHERE hour >= ?1 AND hour < ?2",
            )?;
            let mut rows = stmt.query(params![q.from_ms, q.to_ms])?;
            let mut model = String::new();
            while let Some(r) = rows.next()? {
                let mut acc = Acc {
                    requests: r.get::<_, i64>(1)?.max(0) as u64,
                    errors: r.get::<_, i64>(2)?.max(0) as u64,
                    prompt: r.get::<_, i64>(3)?.max(0) as u64,
                    completion: r.get::<_, i64>(4)?.max(0) as u64,
                    cost: r.get(5)?,
                    ..Acc::default()
                };
                acc.latency
                    .merge_encoded(r.get_ref(6)?.as_blob().unwrap_or_default());
                acc.ttft
                    .merge_encoded(r.get_ref(7)?.as_blob().unwrap_or_default());
                let key = text(r, 8)?.filter(|k| !k.is_empty()).unwrap_or("(none)");
                let provider = text(r, 9)?.filter(|p| !p.is_empty());
                let m = text(r, 10)?.filter(|m| !m.is_empty());
                model_name(&mut model, provider, m);
                builder.add_rollup(r.get(0)?, &acc, key, &model);
            }
            return Ok(builder.finish());
        }
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
            model_name(&mut model, text(r, 8)?, text(r, 9)?);
            builder.add(&row, key, &model);
        }
        Ok(builder.finish())
    }

    /// Totals per group over a time range. Blocking: call it off the async threads.
    fn query(&self, q: &UsageQuery) -> Result<UsageReport, StoreError> {
        let Some(conn) = self.read_connection()? else {
            return Ok(UsageReport::empty(q));
        };
        // Whole hours from the roll-ups, the partial hours at either end from the records.
        let first_hour = q.from_ms.div_euclid(HOUR_MS) * HOUR_MS
            + if q.from_ms.rem_euclid(HOUR_MS) == 0 {
                0
            } else {
                HOUR_MS
            };
        let last_hour = q.to_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let mut groups: Vec<UsageGroup> = Vec::new();
        if first_hour < last_hour && has_table(&conn, "usage_hourly")? {
            raw_groups(&conn, q, q.from_ms, first_hour, &mut groups)?;
            hourly_groups(&conn, q, first_hour, last_hour, &mut groups)?;
            raw_groups(&conn, q, last_hour, q.to_ms, &mut groups)?;
        } else {
            raw_groups(&conn, q, q.from_ms, q.to_ms, &mut groups)?;
        }
        // Groups met in several parts add up.
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        let mut merged: Vec<UsageGroup> = Vec::with_capacity(groups.len());
        for g in groups {
            match merged.last_mut() {
                Some(last) if last.group == g.group => last.add(&g),
                _ => merged.push(g),
            }
        }
        for g in &mut merged {
            g.total_tokens = g.prompt_tokens + g.completion_tokens;
        }
        let groups = merged;
        Ok(UsageReport::new(q, groups))
    }
}
