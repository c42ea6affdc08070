//! Usage records in PostgreSQL: written by the usage writer thread in batches (one
//! `INSERT … SELECT FROM UNNEST(arrays)` statement per batch, so a batch of 1,000 records is
//! one round trip), and read back with the same totals as the SQLite reader.

use std::sync::Arc;

use llm_bridge_usage::{
    GroupBy, Overview, OverviewBuilder, OverviewQuery, OverviewRow, StoreError, UsageGroup,
    UsageQuery, UsageReader, UsageRecord, UsageReport, UsageStore,
};

use crate::Postgres;

/// The usage writer's store on PostgreSQL.
#[derive(Debug)]
pub struct PgUsageStore {
    pg: Arc<Postgres>,
}

impl PgUsageStore {
    /// A store over this database.
    pub fn new(pg: Arc<Postgres>) -> PgUsageStore {
        PgUsageStore { pg }
    }

    /// Connects and migrates first, so that an unreachable database is known at once (the
    /// writer then keeps records in memory and retries).
    pub fn open(pg: Arc<Postgres>) -> Result<PgUsageStore, StoreError> {
        pg.check()?;
        Ok(PgUsageStore { pg })
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One array per column: the batch as `UNNEST` reads it.
#[derive(Default)]
struct Columns {
    ts: Vec<i64>,
    request_id: Vec<String>,
    key_name: Vec<Option<String>>,
    provider: Vec<Option<String>>,
    model: Vec<Option<String>>,
    upstream_model: Vec<Option<String>>,
    route: Vec<Option<String>>,
    transport: Vec<String>,
    stream: Vec<bool>,
    status: Vec<i32>,
    outcome: Vec<String>,
    prompt: Vec<i64>,
    completion: Vec<i64>,
    cached: Vec<i64>,
    reasoning: Vec<i64>,
    source: Vec<String>,
    latency: Vec<f64>,
    ttft: Vec<Option<f64>>,
    cost: Vec<Option<f64>>,
    cache_write: Vec<i64>,
}

impl Columns {
    fn of(records: &[UsageRecord]) -> Columns {
        let mut c = Columns::default();
        for r in records {
            c.ts.push(r.time_ms);
            c.request_id.push(r.request_id.clone());
            c.key_name.push(r.key.clone());
            c.provider.push(r.provider.clone());
            c.model.push(r.model.clone());
            c.upstream_model.push(r.upstream_model.clone());
            c.route.push(r.route.clone());
            c.transport.push(r.transport.clone());
            c.stream.push(r.stream);
            c.status.push(i32::from(r.status));
            c.outcome.push(r.outcome.clone());
            c.prompt.push(clamp(r.usage.prompt_tokens));
            c.completion.push(clamp(r.usage.completion_tokens));
            c.cached.push(clamp(r.usage.cached_tokens));
            c.reasoning.push(clamp(r.usage.reasoning_tokens));
            c.source.push(r.usage_source.as_str().to_owned());
            c.latency.push(r.latency_ms);
            c.ttft.push(r.ttft_ms);
            c.cost.push(r.cost);
            c.cache_write.push(clamp(r.usage.cache_write_tokens));
        }
        c
    }
}

const INSERT: &str =
    "INSERT INTO usage (ts, request_id, key_name, provider, model, upstream_model, route,
        transport, stream, status, outcome, prompt_tokens, completion_tokens, cached_tokens,
        reasoning_tokens, usage_source, latency_ms, ttft_ms, cost, cache_write_tokens)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
        $7::TEXT[], $8::TEXT[], $9::BOOLEAN[], $10::INTEGER[], $11::TEXT[], $12::BIGINT[],
        $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[], $17::DOUBLE PRECISION[],
        $18::DOUBLE PRECISION[], $19::DOUBLE PRECISION[], $20::BIGINT[])";

impl UsageStore for PgUsageStore {
    /// One statement, so all records or none.
    fn insert(&mut self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let c = Columns::of(records);
        self.pg.run(|shared| async move {
            let client = shared.client().await?;
            let stmt = client
                .prepare_cached(INSERT)
                .await
                .map_err(|e| shared.error(&e))?;
            client
                .execute(
                    &stmt,
                    &[
                        &c.ts,
                        &c.request_id,
                        &c.key_name,
                        &c.provider,
                        &c.model,
                        &c.upstream_model,
                        &c.route,
                        &c.transport,
                        &c.stream,
                        &c.status,
                        &c.outcome,
                        &c.prompt,
                        &c.completion,
                        &c.cached,
                        &c.reasoning,
                        &c.source,
                        &c.latency,
                        &c.ttft,
                        &c.cost,
                        &c.cache_write,
                    ],
                )
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(())
        })
    }
}

/// Usage totals from PostgreSQL, grouped and ordered as the SQLite reader does (byte order
/// of the group names, `COLLATE "C"`). Costs are summed as NUMERIC: SQLite sums floats
/// with compensation, and a plain float sum would differ in the last digits.
#[derive(Debug, Clone)]
pub struct PgUsageReader {
    pg: Arc<Postgres>,
}

impl PgUsageReader {
    /// A reader of this database.
    pub fn new(pg: Arc<Postgres>) -> PgUsageReader {
        PgUsageReader { pg }
    }
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl UsageReader for PgUsageReader {
    fn query(&self, q: &UsageQuery) -> Result<UsageReport, StoreError> {
        let group = match q.group_by {
            GroupBy::Key => "COALESCE(key_name, '(none)')",
            GroupBy::Model => "COALESCE(provider || '/' || model, model, '(unknown)')",
            GroupBy::Provider => "COALESCE(provider, '(unknown)')",
            GroupBy::Day => "to_char(to_timestamp(ts / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            GroupBy::None => "'all'",
        };
        let sql = format!(
            "SELECT ({group}) COLLATE \"C\" AS g, COUNT(*),
                    COALESCE(SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END), 0)::BIGINT,
                    COALESCE(SUM(CASE WHEN usage_source = 'estimated' THEN 1 ELSE 0 END), 0)::BIGINT,
                    COALESCE(SUM(prompt_tokens), 0)::BIGINT, COALESCE(SUM(completion_tokens), 0)::BIGINT,
                    COALESCE(SUM(cached_tokens), 0)::BIGINT, COALESCE(SUM(reasoning_tokens), 0)::BIGINT,
                    SUM(cost::NUMERIC)::DOUBLE PRECISION, COUNT(cost), COALESCE(SUM(cache_write_tokens), 0)::BIGINT
             FROM usage
             WHERE ts >= $1 AND ts < $2 AND ($3::TEXT IS NULL OR key_name = $3::TEXT)
             GROUP BY g ORDER BY g"
        );
        let (from, to, key) = (q.from_ms, q.to_ms, q.key.clone());
        let groups = self.pg.run(|shared| async move {
            let client = shared.client().await?;
            let rows = client
                .query(&sql, &[&from, &to, &key])
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let costs: i64 = r.get(9);
                    let prompt_tokens = count(r.get(4));
                    let completion_tokens = count(r.get(5));
                    UsageGroup {
                        group: r.get(0),
                        requests: count(r.get(1)),
                        errors: count(r.get(2)),
                        estimated_requests: count(r.get(3)),
                        prompt_tokens,
                        completion_tokens,
                        cached_tokens: count(r.get(6)),
                        reasoning_tokens: count(r.get(7)),
                        cache_write_tokens: count(r.get(10)),
                        total_tokens: prompt_tokens + completion_tokens,
                        cost: if costs > 0 { r.get(8) } else { None },
                    }
                })
                .collect::<Vec<_>>())
        })?;
        Ok(UsageReport::new(q, groups))
    }

    /// The console's overview from the range's records, read in one query and folded by the
    /// same builder as SQLite's (PostgreSQL keeps no hourly roll-ups yet: a week of 100,000
    /// records is one range scan on `usage_ts`).
    fn overview(&self, q: &OverviewQuery) -> Result<Overview, StoreError> {
        let (from, to) = (q.from_ms, q.to_ms);
        let rows = self.pg.run(|shared| async move {
            let client = shared.client().await?;
            client
                .query(
                    "SELECT ts, outcome = 'ok', prompt_tokens, completion_tokens,
                            COALESCE(cost, 0), latency_ms, ttft_ms,
                            COALESCE(key_name, '(none)'),
                            COALESCE(provider || '/' || model, model, '(unknown)')
                     FROM usage WHERE ts >= $1 AND ts < $2",
                    &[&from, &to],
                )
                .await
                .map_err(|e| shared.error(&e))
        })?;
        let mut builder = OverviewBuilder::new(q);
        for r in &rows {
            let row = OverviewRow {
                ts: r.get(0),
                ok: r.get(1),
                prompt: count(r.get(2)),
                completion: count(r.get(3)),
                cost: r.get(4),
                latency: r.get(5),
                ttft: r.get(6),
            };
            builder.add(&row, r.get(7), r.get(8));
        }
        Ok(builder.finish())
    }
}
