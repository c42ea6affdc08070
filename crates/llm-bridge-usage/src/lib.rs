//! Usage: every request leaves one [`UsageRecord`], written off the request path into the
//! embedded SQLite database, and queried back per key, model, provider or day.
//!
//! - [`count`]: token estimates with OpenAI's tokenizers (o200k, cl100k), used only when an
//!   upstream reports no usage or a stream was interrupted.
//! - [`UsageWriter`] / [`UsageSink`]: a bounded queue and one writer thread that batches
//!   records into a [`UsageStore`]; a failing store is retried, never fatal to a request.
//! - [`SqliteStore`] / [`UsageReader`]: the database (WAL, versioned migrations) and queries.

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

use std::path::PathBuf;

use serde::Deserialize;

pub use estimator::Estimator;
pub use overview::{Overview, OverviewBucket, OverviewQuery, TopEntry};
pub use query::{GroupBy, UsageGroup, UsageQuery, UsageReport};
pub use record::{UsageRecord, UsageSource};
pub use responses::{ResponseStore, SqliteResponses, StoredResponse};
pub use store::{SqliteStore, StoreError, UsageReader, UsageStore, migrate, open_database};
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
    /// The SQLite database (created with its folder on first start).
    #[serde(default = "default_database")]
    pub database: PathBuf,
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

fn default_database() -> PathBuf {
    PathBuf::from("data/llm-bridge.db")
}

fn default_queue_capacity() -> usize {
    100_000
}

fn default_flush_interval() -> llm_bridge_core::Seconds {
    llm_bridge_core::Seconds(0.2)
}
