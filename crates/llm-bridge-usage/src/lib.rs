//! Usage: every request leaves one [`UsageRecord`], written off the request path into the
//! embedded SQLite database, and queried back per key, model, provider or day.
//!
//! - [`count`]: token estimates with OpenAI's tokenizers (o200k, cl100k), used only when an
//!   upstream reports no usage or a stream was interrupted.
//! - [`UsageWriter`] / [`UsageSink`]: a bounded queue and one writer thread that batches
//!   records into a [`UsageStore`]; a failing store is retried, never fatal to a request.
//! - [`UsageStore`] / [`UsageReader`] / [`ResponseStore`]: where records and kept answers
//!   go, as traits; [`SqliteStore`] / [`SqliteUsageReader`] / [`SqliteResponses`] are the
//!   embedded database (WAL, versioned migrations), `llm-bridge-postgres` the shared one.
//! - [`Database`]: which of the two the config names.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod count;
mod estimator;
mod overview;
mod query;
mod record;
mod responses;
mod store;
pub mod time;
mod writer;

use std::path::{Path, PathBuf};

use llm_bridge_core::secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use estimator::Estimator;
pub use overview::{
    Builder as OverviewBuilder, Overview, OverviewBucket, OverviewQuery, Row as OverviewRow,
    TopEntry,
};
pub use query::{GroupBy, UsageGroup, UsageQuery, UsageReport};
pub use record::{UsageRecord, UsageSource};
pub use responses::{ResponseStore, SqliteResponses, StoredResponse};
pub use store::{
    SqliteStore, SqliteUsageReader, StoreError, UsageReader, UsageStore, migrate, open_database,
};
pub use writer::{StoreOpener, UsageSink, UsageWriter};

/// The `responses` section: answers kept for OpenAI Responses' `store`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesConfig {
    /// How long kept answers stay readable (`GET /v1/responses/{id}`, `previous_response_id`)
    /// before they are pruned.
    #[serde(default = "default_responses_ttl")]
    pub ttl: llm_bridge_core::Seconds,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            ttl: default_responses_ttl(),
        }
    }
}

fn default_responses_ttl() -> llm_bridge_core::Seconds {
    llm_bridge_core::Seconds(30.0 * 86_400.0)
}

/// The `usage` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Record usage at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where keys, usage records and kept answers live: a SQLite file (created with its
    /// folder on first start) or a `postgres://` URL.
    #[serde(default = "default_database")]
    pub database: Database,
    /// Most records that may wait in memory while the database is unavailable.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How long records gather before they are written in one transaction; a crash loses at
    /// most this much.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: llm_bridge_core::Seconds,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            database: default_database(),
            queue_capacity: default_queue_capacity(),
            flush_interval: default_flush_interval(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_database() -> Database {
    Database::Sqlite(PathBuf::from("data/llm-bridge.db"))
}

/// The database of keys, usage records and kept answers: an embedded SQLite file, or a
/// PostgreSQL server shared by several instances. Its URL may hold a password: it is kept
/// secret and shown without it.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL.
    Postgres(SecretString),
}

impl Database {
    /// A SQLite path or, when it starts with `postgres://` or `postgresql://`, a PostgreSQL URL.
    pub fn parse(text: &str) -> Database {
        let t = text.trim();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            Database::Postgres(SecretString::from(t.to_owned()))
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }
}

impl From<String> for Database {
    fn from(text: String) -> Self {
        Database::parse(&text)
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl std::fmt::Display for Database {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(url) => f.write_str(&redact_url(url.expose_secret())),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// A URL with the password of its `user:password@` part replaced by `***`, and the query
/// (which may carry `password=`) left out.
pub fn redact_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

fn default_queue_capacity() -> usize {
    100_000
}

fn default_flush_interval() -> llm_bridge_core::Seconds {
    llm_bridge_core::Seconds(0.2)
}
