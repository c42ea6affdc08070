//! The stores the config's `usage.database` names: the embedded SQLite file or a shared
//! PostgreSQL database. Everything else (the gateway, `keys`, `usage`, `ManagedKeys`) sees
//! only the store traits.

use std::sync::Arc;
use std::time::Duration;

use llm_bridge_auth::{KeyStore, SqliteKeyStore};
use llm_bridge_postgres::{PgKeyStore, PgResponses, PgUsageReader, PgUsageStore, Postgres};
use llm_bridge_usage::{
    Database, ResponseStore, SqliteResponses, SqliteStore, SqliteUsageReader, StoreError,
    StoreOpener, UsageReader, UsageStore,
};

/// One database, opened lazily: nothing here connects until a store is used.
pub enum Stores {
    /// The embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (one pool shared by all its stores).
    Postgres(Arc<Postgres>),
}

impl Stores {
    /// The stores of `database`; fails only for a URL that cannot be parsed.
    pub fn new(database: &Database) -> Result<Stores, String> {
        Ok(match database {
            Database::Sqlite(path) => Stores::Sqlite(path.clone()),
            Database::Postgres(url) => Stores::Postgres(Postgres::new(url).map_err(|e| e.0)?),
        })
    }

    /// Whether this is a database server shared by instances (not a local file).
    pub fn is_shared(&self) -> bool {
        matches!(self, Stores::Postgres(_))
    }

    /// The key store.
    pub fn keys(&self) -> Result<Arc<dyn KeyStore>, String> {
        Ok(match self {
            Stores::Sqlite(path) => {
                Arc::new(SqliteKeyStore::open(path).map_err(|e| e.message().to_owned())?)
            }
            Stores::Postgres(pg) => Arc::new(PgKeyStore::new(pg.clone())),
        })
    }

    /// How often the key watcher checks for changes made elsewhere. PostgreSQL is also
    /// told by NOTIFY at once; this is its safety net.
    pub fn key_watch_interval(&self) -> Duration {
        match self {
            Stores::Sqlite(_) => Duration::from_millis(250),
            Stores::Postgres(_) => Duration::from_secs(1),
        }
    }

    /// Opens the usage writer's store (called again after failures).
    pub fn usage_opener(&self) -> StoreOpener {
        match self {
            Stores::Sqlite(path) => {
                let path = path.clone();
                Box::new(move || {
                    SqliteStore::open(&path).map(|s| Box::new(s) as Box<dyn UsageStore>)
                })
            }
            Stores::Postgres(pg) => {
                let pg = pg.clone();
                Box::new(move || {
                    PgUsageStore::open(pg.clone()).map(|s| Box::new(s) as Box<dyn UsageStore>)
                })
            }
        }
    }

    /// The usage reader.
    pub fn usage_reader(&self) -> Arc<dyn UsageReader> {
        match self {
            Stores::Sqlite(path) => Arc::new(SqliteUsageReader::new(path.clone())),
            Stores::Postgres(pg) => Arc::new(PgUsageReader::new(pg.clone())),
        }
    }

    /// Kept Responses answers, readable for `ttl`.
    pub fn responses(&self, ttl: Duration) -> Result<Arc<dyn ResponseStore>, StoreError> {
        Ok(match self {
            Stores::Sqlite(path) => Arc::new(SqliteResponses::open(path, ttl)?),
            Stores::Postgres(pg) => Arc::new(PgResponses::new(pg.clone(), ttl)),
        })
    }

    /// Opens the database and brings its schema up to date: what `llm-bridge check` reports.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Stores::Sqlite(path) => {
                SqliteKeyStore::open(path).map_err(|e| e.message().to_owned())?;
                SqliteStore::open(path).map_err(|e| e.0)?;
                SqliteResponses::open(path, Duration::from_secs(1)).map_err(|e| e.0)?;
                Ok(())
            }
            Stores::Postgres(pg) => pg.check().map_err(|e| e.0),
        }
    }

    /// Where the keys of a shared database leave the sealing key: PostgreSQL has no folder,
    /// so the key goes beside the default SQLite file and every instance must be given the
    /// same `LLM_BRIDGE_SEALING_KEY`.
    pub fn sealing_key_folder(&self) -> Option<&std::path::Path> {
        match self {
            Stores::Sqlite(path) => Some(path),
            Stores::Postgres(_) => None,
        }
    }
}
