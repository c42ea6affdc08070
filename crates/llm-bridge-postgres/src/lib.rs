//! Keys, usage records and kept answers in PostgreSQL, shared by every instance of a
//! scaled-out gateway: [`PgKeyStore`] (`KeyStore`), [`PgUsageStore`] / [`PgUsageReader`]
//! (`UsageStore`, `UsageReader`) and [`PgResponses`] (`ResponseStore`).
//!
//! The store traits are synchronous and are called from plain threads, `spawn_blocking` and,
//! in one place, an async task. So the connections live on a small runtime owned by
//! [`Postgres`] (one worker thread): a call sends its query there and waits for the answer
//! on a channel. Nothing here calls `Runtime::block_on`, which panics inside a runtime, and
//! the runtime is shut down in the background when the last handle goes, so dropping a store
//! on an async thread is fine.
//!
//! Connections are made without TLS (`NoTls`): run PostgreSQL on a private network or
//! through a local TLS tunnel.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod keys;
mod migrations;
mod responses;
mod usage;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use llm_bridge_core::secrecy::{ExposeSecret, SecretString};
use llm_bridge_usage::{StoreError, redact_url};
use tokio_postgres::NoTls;

pub use keys::{KEY_CHANNEL, PgKeyStore};
pub use migrations::{KEYS_VERSION, RESPONSES_VERSION, USAGE_VERSION};
pub use responses::PgResponses;
pub use usage::{PgUsageReader, PgUsageStore};

/// How long a connection attempt or a wait for a pooled connection may take: a store
/// call (some run on request threads) fails after this rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A PostgreSQL database: a connection pool on its own small runtime, and the schema
/// migrations (run once, on first use).
pub struct Postgres {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

/// What the queries running on the runtime share.
struct Shared {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    display: String,
    migrated: AtomicBool,
    migrating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.shared.display)
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which panics on an async thread.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Postgres {
    /// A pool for the database at `url` (`postgres://user:password@host:port/db?…`). Nothing
    /// is connected yet: the first query connects and migrates (see [`Postgres::check`]).
    pub fn new(url: &SecretString) -> Result<Arc<Postgres>, StoreError> {
        let display = redact_url(url.expose_secret());
        let mut config: tokio_postgres::Config = url
            .expose_secret()
            .parse()
            .map_err(|e| StoreError(format!("{display}: not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("llm-bridge");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError(format!("{display}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the PostgreSQL runtime: {e}")))?;
        Ok(Arc::new(Postgres {
            runtime: Some(runtime),
            shared: Arc::new(Shared {
                pool,
                config,
                display,
                migrated: AtomicBool::new(false),
                migrating: tokio::sync::Mutex::new(()),
            }),
        }))
    }

    /// The URL without its password.
    pub fn display(&self) -> &str {
        &self.shared.display
    }

    /// Connects and brings the schema up to date: an error says what failed (unreachable,
    /// authentication, a schema newer than this llm-bridge knows).
    pub fn check(&self) -> Result<(), StoreError> {
        self.run(|shared| async move { shared.client().await.map(drop) })
    }

    /// Runs `job` on the pool's runtime and waits for its result; callable from any thread.
    fn run<T, F, Fut>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(rt) = self.runtime.as_ref() else {
            return Err(StoreError("the PostgreSQL runtime is gone".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = job(self.shared.clone());
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError("the PostgreSQL query was abandoned".into()))?
    }

    /// Starts `task` on the pool's runtime, not waiting for it.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = self.runtime.as_ref() {
            rt.spawn(task);
        }
    }

    /// Whether the tables hold any keys, usage records or kept answers: `llm-bridge migrate`
    /// fills only an empty database. Returns the non-empty tables with their row counts.
    pub fn contents(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        self.run(|shared| async move {
            let client = shared.client().await?;
            let mut found = Vec::new();
            for table in ["api_keys", "usage", "responses"] {
                let row = client
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .await
                    .map_err(|e| shared.error(&e))?;
                let n: i64 = row.get(0);
                if n > 0 {
                    found.push((table, n));
                }
            }
            Ok(found)
        })
    }
}

impl Shared {
    /// A pooled connection to a migrated database.
    async fn client(&self) -> Result<Object, StoreError> {
        let mut client = self.pool.get().await.map_err(|e| self.pool_error(&e))?;
        if !self.migrated.load(Ordering::Acquire) {
            let _one_at_a_time = self.migrating.lock().await;
            if !self.migrated.load(Ordering::Acquire) {
                migrations::run(&mut client)
                    .await
                    .map_err(|e| StoreError(format!("{}: {e}", self.display)))?;
                self.migrated.store(true, Ordering::Release);
            }
        }
        Ok(client)
    }

    fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError(format!("{}: {}", self.display, describe(e)))
    }

    fn pool_error(&self, e: &deadpool_postgres::PoolError) -> StoreError {
        let text = match e {
            deadpool_postgres::PoolError::Backend(e) => describe(e),
            deadpool_postgres::PoolError::Timeout(_) => {
                "timed out waiting for a connection (is PostgreSQL running and reachable?)".into()
            }
            other => other.to_string(),
        };
        StoreError(format!("{}: {text}", self.display))
    }
}

/// An error with what PostgreSQL or the socket said (tokio-postgres' own text is often just
/// "db error" or "error connecting to server").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
