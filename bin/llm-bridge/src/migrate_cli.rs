//! `llm-bridge migrate --from data/llm-bridge.db --to postgres://…`: moving from one instance
//! on SQLite to many on PostgreSQL. Keys (their hashes, policies and dates), every usage
//! record and the kept answers not yet expired are copied into an empty database; a database
//! that already holds any of them is refused, so running it twice cannot double the usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use llm_bridge_auth::{KeyStore, SqliteKeyStore};
use llm_bridge_postgres::{PgKeyStore, PgResponses, PgUsageStore, Postgres};
use llm_bridge_usage::{
    Database, ResponseStore, SqliteResponses, SqliteUsageReader, UsageStore, time,
};

use crate::config::AppConfig;

/// Flags of `migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The SQLite database to copy from.
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (`postgres://user@host/db`); it must be empty.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// Runs `migrate`.
#[allow(clippy::print_stdout)]
pub fn run(config: &AppConfig, args: &MigrateArgs) -> ExitCode {
    match execute(config, args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Usage records copied per statement.
const BATCH: usize = 1000;

fn execute(config: &AppConfig, args: &MigrateArgs) -> Result<String, String> {
    if !args.from.is_file() {
        return Err(format!("--from {}: no such file", args.from.display()));
    }
    let Database::Postgres(url) = Database::parse(&args.to) else {
        return Err(format!(
            "--to {}: expected a postgres:// URL",
            Database::parse(&args.to)
        ));
    };
    let pg = Postgres::new(&url).map_err(|e| e.0)?;
    let to = pg.display().to_owned();
    pg.check().map_err(|e| e.0)?;
    let held = pg.contents().map_err(|e| e.0)?;
    if !held.is_empty() {
        let what: Vec<String> = held.iter().map(|(t, n)| format!("{t}: {n} rows")).collect();
        return Err(format!(
            "{to} already holds data ({}): migrate copies only into an empty database, and copied nothing",
            what.join(", ")
        ));
    }
    let from = args.from.display().to_string();
    let partial = |e: String| {
        format!(
            "{e}\nthe copy stopped half-way: {to} now holds part of the data; empty it (or use a new database) before running migrate again"
        )
    };

    let source_keys = SqliteKeyStore::open(&args.from).map_err(|e| format!("{from}: {e}"))?;
    let target_keys = PgKeyStore::new(pg.clone());
    let keys = source_keys.list().map_err(|e| format!("{from}: {e}"))?;
    for key in &keys {
        target_keys
            .import(key)
            .map_err(|e| partial(e.message().to_owned()))?;
    }

    let reader = SqliteUsageReader::new(&args.from);
    let mut target_usage = PgUsageStore::new(pg.clone());
    let (mut after, mut records) = (0i64, 0usize);
    loop {
        let batch = reader
            .export(after, BATCH)
            .map_err(|e| partial(format!("{from}: {e}")))?;
        let Some((last, _)) = batch.last() else { break };
        after = *last;
        let batch: Vec<_> = batch.into_iter().map(|(_, r)| r).collect();
        target_usage.insert(&batch).map_err(|e| partial(e.0))?;
        records += batch.len();
    }

    let ttl = config.responses.ttl.duration();
    let source_responses =
        SqliteResponses::open(&args.from, ttl).map_err(|e| partial(format!("{from}: {e}")))?;
    let target_responses = PgResponses::new(pg.clone(), ttl);
    let kept = source_responses
        .export(time::now_ms())
        .map_err(|e| partial(format!("{from}: {e}")))?;
    let answers = kept.len();
    for r in kept {
        target_responses.put(r).map_err(|e| partial(e.0))?;
    }
    Ok(format!(
        "copied {} key(s), {records} usage record(s) and {} kept answer(s) from {from} to {to}\n",
        keys.len(),
        answers
    ))
}
