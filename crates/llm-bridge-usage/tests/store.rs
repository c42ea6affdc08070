//! The SQLite store and the writer, against real database files.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_bridge_core::Usage;
use llm_bridge_usage::{
    GroupBy, SqliteStore, SqliteUsageReader, StoreError, UsageQuery, UsageReader, UsageRecord,
    UsageSource, UsageStore, UsageWriter,
};

fn record(i: u64, key: &str, model: &str, prompt: u64, completion: u64) -> UsageRecord {
    UsageRecord {
        time_ms: 1_764_162_300_000 + i as i64,
        request_id: format!("req-{i}"),
        key: Some(key.into()),
        provider: Some("mock".into()),
        model: Some(model.into()),
        upstream_model: Some(model.into()),
        route: None,
        transport: "http".into(),
        stream: i % 2 == 0,
        status: 200,
        outcome: "ok".into(),
        usage: Usage {
            cached_tokens: 1,
            cache_write_tokens: 3,
            ..Usage::new(prompt, completion)
        },
        usage_source: UsageSource::Upstream,
        latency_ms: 1.5,
        ttft_ms: None,
        cost: Some(0.5),
    }
}

fn all(from: i64) -> UsageQuery {
    UsageQuery {
        from_ms: from,
        to_ms: i64::MAX / 2,
        group_by: GroupBy::Model,
        key: None,
    }
}

#[test]
fn records_are_grouped_and_totalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/folder/usage.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .insert(&[
            record(1, "alice", "a", 10, 5),
            record(2, "alice", "b", 20, 7),
            record(3, "bob", "a", 1, 1),
        ])
        .unwrap();
    drop(store);
    // Reopening runs no migration twice.
    let _ = SqliteStore::open(&path).unwrap();
    let reader = SqliteUsageReader::new(&path);
    let report = reader.query(&all(0)).unwrap();
    assert_eq!(report.data.len(), 2);
    assert_eq!(report.data[0].group, "mock/a");
    assert_eq!(report.data[0].requests, 2);
    assert_eq!(report.data[0].prompt_tokens, 11);
    assert_eq!(report.data[0].total_tokens, 17);
    assert_eq!(report.data[0].cached_tokens, 2);
    assert_eq!(report.data[0].cache_write_tokens, 6);
    assert_eq!(report.total.cache_write_tokens, 9);
    assert_eq!(report.total.requests, 3);
    assert_eq!(report.total.cost, Some(1.5));

    let mine = reader
        .query(&UsageQuery {
            key: Some("bob".into()),
            group_by: GroupBy::Key,
            ..all(0)
        })
        .unwrap();
    assert_eq!(mine.data.len(), 1);
    assert_eq!(mine.data[0].group, "bob");
    let days = reader
        .query(&UsageQuery {
            group_by: GroupBy::Day,
            ..all(0)
        })
        .unwrap();
    assert_eq!(days.data[0].group, "2025-11-26");
    let later = reader.query(&all(1_764_162_300_003)).unwrap();
    assert_eq!(later.total.requests, 1, "the range start is inclusive");
    assert!(report.to_table().contains("mock/a"));
}

#[test]
fn every_column_of_a_record_is_written_where_it_belongs() {
    // Each column read back as written, with each optional column both given and not (a
    // record's 20 values are bound by position: one out of place would land in another
    // column of the same type).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let records: Vec<UsageRecord> = (0..123u64)
        .map(|i| UsageRecord {
            key: (i % 3 != 0).then(|| format!("key-{i}")),
            route: (i % 4 == 1).then(|| format!("route-{i}")),
            upstream_model: (i % 5 != 2).then(|| format!("up-{i}")),
            status: 200 + u16::try_from(i).unwrap(),
            outcome: if i % 2 == 0 { "ok" } else { "error" }.into(),
            usage: Usage {
                cached_tokens: i + 1,
                reasoning_tokens: i + 2,
                cache_write_tokens: i + 3,
                ..Usage::new(i * 10, i * 20)
            },
            usage_source: if i % 2 == 0 {
                UsageSource::Upstream
            } else {
                UsageSource::Estimated
            },
            latency_ms: i as f64 + 0.25,
            ttft_ms: (i % 2 == 1).then_some(i as f64 + 0.5),
            cost: (i % 7 != 0).then(|| i as f64 / 8.0),
            ..record(i, "unused", &format!("m-{i}"), 0, 0)
        })
        .collect();
    store.insert(&records).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT ts, request_id, key_name, provider, model, upstream_model, route, transport,
                stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, usage_source, latency_ms, ttft_ms, cost, cache_write_tokens
             FROM usage ORDER BY id",
        )
        .unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{:?}",
                (
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, bool>(8)?,
                        r.get::<_, u16>(9)?,
                    ),
                    (
                        r.get::<_, String>(10)?,
                        r.get::<_, i64>(11)?,
                        r.get::<_, i64>(12)?,
                        r.get::<_, i64>(13)?,
                        r.get::<_, i64>(14)?,
                        r.get::<_, String>(15)?,
                        r.get::<_, f64>(16)?,
                        r.get::<_, Option<f64>>(17)?,
                        r.get::<_, Option<f64>>(18)?,
                        r.get::<_, i64>(19)?,
                    ),
                )
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{:?}",
                (
                    (
                        r.time_ms,
                        r.request_id.clone(),
                        r.key.clone(),
                        r.provider.clone(),
                        r.model.clone(),
                        r.upstream_model.clone(),
                        r.route.clone(),
                        r.transport.clone(),
                        r.stream,
                        r.status,
                    ),
                    (
                        r.outcome.clone(),
                        i64::try_from(r.usage.prompt_tokens).unwrap(),
                        i64::try_from(r.usage.completion_tokens).unwrap(),
                        i64::try_from(r.usage.cached_tokens).unwrap(),
                        i64::try_from(r.usage.reasoning_tokens).unwrap(),
                        r.usage_source.as_str().to_owned(),
                        r.latency_ms,
                        r.ttft_ms,
                        r.cost,
                        i64::try_from(r.usage.cache_write_tokens).unwrap(),
                    ),
                )
            )
        })
        .collect();
    assert_eq!(rows.len(), 123);
    for (i, (row, want)) in rows.iter().zip(&expected).enumerate() {
        assert_eq!(row, want, "record {i}");
    }
}

#[test]
fn a_database_from_before_cache_writes_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    // The schema as version 1 created it, with one row.
    let mut conn = llm_bridge_usage::open_database(&path, Duration::from_secs(1)).unwrap();
    let v1 = "CREATE TABLE usage (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, request_id TEXT NOT NULL,
        key_name TEXT, provider TEXT, model TEXT, upstream_model TEXT, route TEXT, transport TEXT NOT NULL,
        stream INTEGER NOT NULL, status INTEGER NOT NULL, outcome TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
        usage_source TEXT NOT NULL, latency_ms REAL NOT NULL, ttft_ms REAL, cost REAL);";
    llm_bridge_usage::migrate(&mut conn, "usage", &[v1]).unwrap();
    conn.execute_batch(
        "INSERT INTO usage (ts, request_id, provider, model, transport, stream, status, outcome,
            prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_source, latency_ms)
         VALUES (1764162300000, 'old', 'mock', 'a', 'http', 0, 200, 'ok', 10, 1, 0, 0, 'upstream', 1.0)",
    )
    .unwrap();
    drop(conn);
    let mut store = SqliteStore::open(&path).unwrap();
    store.insert(&[record(1, "alice", "a", 10, 5)]).unwrap();
    drop(store);
    let report = SqliteUsageReader::new(&path).query(&all(0)).unwrap();
    assert_eq!(report.total.requests, 2);
    assert_eq!(report.total.prompt_tokens, 20);
    assert_eq!(report.total.cache_write_tokens, 3, "the old row counts 0");
}

/// Every record updates the table and each of its indexes: a new database (which runs every
/// migration, the first creating four indexes) keeps only the one the reads use
/// (`usage_ts` and `usage_model_ts` went in migration 5, `usage_key_ts` in 6), and a read of
/// one key's usage still seeks by time.
#[test]
fn a_new_database_keeps_only_the_index_its_reads_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = llm_bridge_usage::open_database(&path, Duration::from_secs(1)).unwrap();
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["usage_ts_overview"]);
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT COUNT(*), SUM(usage_source = 'estimated') FROM usage
             WHERE ts >= ?1 AND ts < ?2 AND (?3 IS NULL OR key_name = ?3)",
            rusqlite::params![0, 1, "alice"],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("usage_ts_overview (ts>? AND ts<?)"), "{plan}");
}

#[test]
fn a_missing_database_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let report = SqliteUsageReader::new(dir.path().join("none.db"))
        .query(&all(0))
        .unwrap();
    assert_eq!(report.total.requests, 0);
}

/// A store that fails its first `failures` inserts.
struct Flaky {
    failures: usize,
    rows: Arc<Mutex<Vec<String>>>,
}

impl UsageStore for Flaky {
    fn insert(&mut self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(StoreError("disk on fire".into()));
        }
        self.rows
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.request_id.clone()));
        Ok(())
    }
}

#[test]
fn a_failing_store_is_retried_and_loses_nothing() {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let r = rows.clone();
    let mut opened = 0;
    let (writer, sink) = UsageWriter::start(
        Box::new(move || {
            opened += 1;
            Ok(Box::new(Flaky {
                failures: if opened == 1 { 3 } else { 0 },
                rows: r.clone(),
            }) as Box<dyn UsageStore>)
        }),
        1000,
        Duration::from_millis(20),
    )
    .unwrap();
    for i in 0..50 {
        sink.record(record(i, "k", "m", 1, 1));
    }
    assert!(writer.shutdown(Duration::from_secs(20)));
    let rows = rows.lock().unwrap();
    assert_eq!(rows.len(), 50, "every record written exactly once");
    let mut unique = rows.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    assert_eq!(sink.dropped(), 0);
    assert!(sink.failures() >= 1);
    assert_eq!(sink.queue_depth(), 0);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let (writer, sink) = UsageWriter::start(
        Box::new(|| Err(StoreError("unavailable".into()))),
        4,
        Duration::from_millis(20),
    )
    .unwrap();
    for i in 0..50 {
        sink.record(record(i, "k", "m", 1, 1));
    }
    assert!(sink.dropped() > 0);
    assert!(sink.queue_depth() <= 8);
    drop(writer);
}

#[test]
fn a_locked_database_delays_records_but_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    drop(SqliteStore::open(&path).unwrap());
    // Another process holds the write lock.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let p = path.clone();
    let (writer, sink) = UsageWriter::start(
        Box::new(move || SqliteStore::open(&p).map(|s| Box::new(s) as Box<dyn UsageStore>)),
        1000,
        Duration::from_millis(20),
    )
    .unwrap();
    for i in 0..20 {
        sink.record(record(i, "k", "m", 1, 1));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        sink.written(),
        0,
        "nothing can be written while the lock is held"
    );
    assert!(sink.failures() >= 1);
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    assert!(writer.shutdown(Duration::from_secs(20)));
    assert_eq!(sink.written(), 20);
    assert_eq!(
        SqliteUsageReader::new(&path)
            .query(&all(0))
            .unwrap()
            .total
            .requests,
        20
    );
}

/// Reports over ranges that cut hours in the middle read whole hours from the roll-ups and
/// the partial ones from the records: the same totals as counting every record, before and
/// after the roll-ups were rebuilt from the records (an older database being opened).
#[test]
fn hourly_rollups_give_the_same_answers_as_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let t0 = 1_764_158_400_000i64; // an hour boundary
    let records: Vec<UsageRecord> = (0..3000u64)
        .map(|i| {
            let mut r = record(
                i,
                ["a", "b", "c"][(i % 3) as usize],
                ["m1", "m2"][(i % 2) as usize],
                i % 50,
                i % 7,
            );
            r.time_ms = t0 + (i as i64) * 7_919; // about 6.6 hours, odd offsets
            r.outcome = if i % 11 == 0 { "error" } else { "ok" }.into();
            r.latency_ms = (i % 900) as f64;
            r
        })
        .collect();
    let mut store = SqliteStore::open(&path).unwrap();
    store.insert(&records[..1000]).unwrap();
    store.insert(&records[1000..]).unwrap();
    drop(store);
    let reader = SqliteUsageReader::new(&path);
    let check = |reader: &SqliteUsageReader| {
        for (from, to) in [
            (t0 + 17 * 60_000, t0 + 4 * 3_600_000 + 33 * 60_000),
            (t0, t0 + 3 * 3_600_000),
            (t0 + 1, t0 + 3_600_000 - 1),
            (0, t0 + 10 * 3_600_000),
        ] {
            for group_by in [GroupBy::Key, GroupBy::Model, GroupBy::Day] {
                let report = reader
                    .query(&UsageQuery {
                        from_ms: from,
                        to_ms: to,
                        group_by,
                        key: None,
                    })
                    .unwrap();
                let inside: Vec<&UsageRecord> = records
                    .iter()
                    .filter(|r| r.time_ms >= from && r.time_ms < to)
                    .collect();
                assert_eq!(report.total.requests, inside.len() as u64);
                assert_eq!(
                    report.total.errors,
                    inside.iter().filter(|r| r.outcome != "ok").count() as u64
                );
                assert_eq!(
                    report.total.prompt_tokens,
                    inside.iter().map(|r| r.usage.prompt_tokens).sum::<u64>()
                );
                if group_by == GroupBy::Key {
                    let a = report.data.iter().find(|g| g.group == "a").unwrap();
                    assert_eq!(
                        a.requests,
                        inside
                            .iter()
                            .filter(|r| r.key.as_deref() == Some("a"))
                            .count() as u64
                    );
                }
            }
        }
    };
    check(&reader);
    // An older database: the roll-ups are rebuilt from the records when the store opens.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM usage_hourly; DELETE FROM schema_migrations WHERE component = 'usage_hourly';",
        )
        .unwrap();
    }
    drop(SqliteStore::open(&path).unwrap());
    check(&reader);
}

/// Counts the writes and the times it was told to give back its memory.
struct Counting {
    inserts: Arc<Mutex<(usize, usize)>>,
}

impl UsageStore for Counting {
    fn insert(&mut self, _: &[UsageRecord]) -> Result<(), StoreError> {
        self.inserts.lock().unwrap().0 += 1;
        Ok(())
    }

    fn release_memory(&mut self) {
        self.inserts.lock().unwrap().1 += 1;
    }
}

#[test]
fn the_store_gives_back_its_memory_once_after_a_burst_and_not_while_idle() {
    let counts = Arc::new(Mutex::new((0, 0)));
    let c = counts.clone();
    let (writer, sink) = UsageWriter::start(
        Box::new(move || Ok(Box::new(Counting { inserts: c.clone() }) as Box<dyn UsageStore>)),
        1000,
        Duration::from_millis(20),
    )
    .unwrap();
    // Idle from the start: nothing written, nothing to give back.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(*counts.lock().unwrap(), (0, 0));
    // A burst of 0.6 s, a record every 50 ms: no quiet second within it.
    for i in 0..12 {
        sink.record(record(i, "k", "m", 1, 1));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (inserts, released) = *counts.lock().unwrap();
    assert!(inserts >= 2, "written in batches as they came: {inserts}");
    assert_eq!(released, 0, "memory given back during the burst");
    // A quiet second after it: given back once, and not again while nothing comes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counts.lock().unwrap().1, 1, "given back after the burst");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(counts.lock().unwrap().1, 1, "given back again while idle");
    assert!(writer.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_store_that_gave_back_its_cache_keeps_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .insert(
            &(0..200)
                .map(|i| record(i, "k", "m", 1, 1))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    store.release_memory();
    store
        .insert(
            &(200..400)
                .map(|i| record(i, "k", "m", 1, 1))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let report = SqliteUsageReader::new(&path).query(&all(0)).unwrap();
    assert_eq!(report.total.requests, 400);
}
