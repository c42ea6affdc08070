//! Where managed keys are kept: the [`KeyStore`] trait and the embedded SQLite store. Only
//! the SHA-256 of each key is stored; the key itself is shown once, when it is created.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use llm_bridge_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::policy::KeyPolicy;
use crate::secret::{digest, generate_key};

/// The versioned schema of the keys table; each entry runs once, in order.
const MIGRATIONS: &[&str] = &["CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key_hash BLOB NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        policy TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );"];

/// A managed key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    /// Stable identifier (`key_…`).
    pub id: String,
    /// Unique name, used in logs and usage records.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub key_prefix: String,
    /// What the key may do.
    #[serde(flatten)]
    pub policy: KeyPolicy,
    /// Created (milliseconds since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
    /// Last used (written every few seconds, not per request).
    pub last_used_at: Option<i64>,
    /// Revoked at, if revoked.
    pub revoked_at: Option<i64>,
    /// SHA-256 of the key.
    #[serde(skip)]
    pub key_hash: [u8; 32],
}

impl KeyRecord {
    /// Whether the key was revoked.
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

fn db_error(e: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("key database: {e}"))
}

/// Where managed keys are kept. Implementations: [`SqliteKeyStore`] (the embedded default)
/// and the PostgreSQL store of `llm-bridge-postgres`. Every method blocks: call them from
/// plain threads or `spawn_blocking`.
pub trait KeyStore: Send + Sync {
    /// Creates a key; returns its record and the key, which is never available again.
    fn create(&self, name: &str, policy: &KeyPolicy, now: i64)
    -> Result<(KeyRecord, SecretString)>;
    /// Every key, revoked ones included, by name.
    fn list(&self) -> Result<Vec<KeyRecord>>;
    /// One key by name (or id).
    fn get(&self, name: &str) -> Result<Option<KeyRecord>>;
    /// Replaces a key's policy.
    fn update(&self, name: &str, policy: &KeyPolicy, now: i64) -> Result<KeyRecord>;
    /// Revokes a key (kept, for the record and its usage).
    fn revoke(&self, name: &str, now: i64) -> Result<KeyRecord>;
    /// Notes when keys were last used (not a change other instances need to see).
    fn touch(&self, used: &[(String, i64)]) -> Result<()>;
    /// Adds a key exactly as stored elsewhere (id, hash, dates): moving keys between stores.
    fn import(&self, record: &KeyRecord) -> Result<()>;
    /// A number that changes whenever keys were created, changed or revoked by someone
    /// else (another process or instance): the cue to reload.
    fn version(&self) -> Result<i64>;
    /// Blocks until keys may have changed or `timeout` passed. Stores that are told of
    /// changes (PostgreSQL's NOTIFY) return early; the default just sleeps, so that
    /// [`KeyStore::version`] is polled.
    fn wait_for_change(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
    /// Where the keys live, for messages (never a password).
    fn describe(&self) -> String;
}

/// A new key, made and checked before it is stored: what every [`KeyStore`] writes.
#[derive(Debug)]
pub struct NewKey {
    /// Its id (`key_…`).
    pub id: String,
    /// The key itself, shown once.
    pub key: SecretString,
    /// SHA-256 of the key.
    pub key_hash: [u8; 32],
    /// The first characters of the key.
    pub key_prefix: String,
}

impl NewKey {
    /// Checks the name and generates a key, its id, hash and prefix.
    pub fn generate(name: &str) -> Result<NewKey> {
        validate_name(name)?;
        let key = generate_key();
        let mut raw = [0u8; 6];
        getrandom::fill(&mut raw).map_err(|e| Error::internal(format!("random source: {e}")))?;
        let id = format!(
            "key_{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let key_hash = digest(key.expose_secret());
        let key_prefix: String = key.expose_secret().chars().take(12).collect();
        Ok(NewKey {
            id,
            key,
            key_hash,
            key_prefix,
        })
    }
}

/// The error for a key name that is taken.
pub fn name_taken(name: &str) -> Error {
    Error::invalid_request(format!("a key named '{name}' exists already")).with_param("name")
}

/// The embedded SQLite key store (the usage database's `api_keys` table).
pub struct SqliteKeyStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteKeyStore {
    /// Opens (creating if needed, with its folder) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error)?;
        let known = MIGRATIONS.len() as i64;
        let current = migrate(&mut conn).map_err(db_error)?;
        if current > known {
            // A newer llm-bridge wrote this database; reading it could misread its keys.
            return Err(newer_schema(current, known));
        }
        Ok(SqliteKeyStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_with(conn: &Connection, name: &str) -> Result<Option<KeyRecord>> {
        conn.query_row(
            "SELECT * FROM api_keys WHERE name = ?1 OR id = ?1",
            [name],
            record,
        )
        .optional()
        .map_err(db_error)?
        .transpose()
    }
}

/// The error for a keys schema newer than this binary knows.
pub fn newer_schema(current: i64, known: i64) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!(
            "key database: the keys schema is version {current}, newer than this llm-bridge knows ({known}): upgrade llm-bridge"
        ),
    )
}

impl KeyStore for SqliteKeyStore {
    fn create(
        &self,
        name: &str,
        policy: &KeyPolicy,
        now: i64,
    ) -> Result<(KeyRecord, SecretString)> {
        let new = NewKey::generate(name)?;
        let conn = self.conn();
        if Self::get_with(&conn, name)?.is_some() {
            return Err(name_taken(name));
        }
        conn.execute(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, policy, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                new.id,
                name,
                &new.key_hash[..],
                new.key_prefix,
                policy_json(policy)?,
                now
            ],
        )
        .map_err(db_error)?;
        let record =
            Self::get_with(&conn, name)?.ok_or_else(|| Error::internal("the new key vanished"))?;
        Ok((record, new.key))
    }

    fn list(&self) -> Result<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT * FROM api_keys ORDER BY name")
            .map_err(db_error)?;
        let rows = stmt.query_map([], record).map_err(db_error)?;
        rows.map(|r| r.map_err(db_error)?).collect()
    }

    fn get(&self, name: &str) -> Result<Option<KeyRecord>> {
        Self::get_with(&self.conn(), name)
    }

    fn update(&self, name: &str, policy: &KeyPolicy, now: i64) -> Result<KeyRecord> {
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE api_keys SET policy = ?2, updated_at = ?3 WHERE name = ?1 OR id = ?1",
                params![name, policy_json(policy)?, now],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(key_not_found(name));
        }
        Self::get_with(&conn, name)?.ok_or_else(|| key_not_found(name))
    }

    fn revoke(&self, name: &str, now: i64) -> Result<KeyRecord> {
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2), updated_at = ?2 WHERE name = ?1 OR id = ?1",
                params![name, now],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(key_not_found(name));
        }
        Self::get_with(&conn, name)?.ok_or_else(|| key_not_found(name))
    }

    fn touch(&self, used: &[(String, i64)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1")
                .map_err(db_error)?;
            for (id, at) in used {
                stmt.execute(params![id, at]).map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }

    fn import(&self, r: &KeyRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (id, name, key_hash, key_prefix, policy, created_at, updated_at, last_used_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.id,
                    r.name,
                    &r.key_hash[..],
                    r.key_prefix,
                    policy_json(&r.policy)?,
                    r.created_at,
                    r.updated_at,
                    r.last_used_at,
                    r.revoked_at
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    /// SQLite's `data_version`: it moves when another connection commits (this store's own
    /// writes do not move it; their caller reloads).
    fn version(&self) -> Result<i64> {
        self.conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_error)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The error for a key that does not exist.
pub fn key_not_found(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no key named '{name}'"))
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    // Static keys are called access-N and admin-N: a managed key must not share their
    // records.
    let reserved = ["access-", "admin-"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if reserved {
        return Err(Error::invalid_request(format!(
            "'{name}' is reserved for keys from ACCESS_API_KEYS / ADMIN_API_KEYS"
        ))
        .with_param("name"));
    }
    if ok {
        Ok(())
    } else {
        Err(
            Error::invalid_request("a key name is 1 to 64 letters, digits, '-', '_', '.' or '@'")
                .with_param("name"),
        )
    }
}

/// A policy as stored (JSON).
pub fn policy_json(policy: &KeyPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|e| Error::internal(format!("policy: {e}")))
}

impl KeyRecord {
    /// A record from its stored columns, checking the hash and the policy.
    #[allow(clippy::too_many_arguments)]
    pub fn from_stored(
        id: String,
        name: String,
        key_hash: &[u8],
        key_prefix: String,
        policy: &str,
        created_at: i64,
        updated_at: i64,
        last_used_at: Option<i64>,
        revoked_at: Option<i64>,
    ) -> Result<KeyRecord> {
        let key_hash = <[u8; 32]>::try_from(key_hash)
            .map_err(|_| Error::internal("key database: a key hash is not 32 bytes"))?;
        let policy = serde_json::from_str(policy)
            .map_err(|e| Error::internal(format!("key database: a policy is unreadable: {e}")))?;
        Ok(KeyRecord {
            id,
            name,
            key_prefix,
            policy,
            created_at,
            updated_at,
            last_used_at,
            revoked_at,
            key_hash,
        })
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<Result<KeyRecord>> {
    let hash: Vec<u8> = row.get("key_hash")?;
    let policy: String = row.get("policy")?;
    Ok(KeyRecord::from_stored(
        row.get("id")?,
        row.get("name")?,
        &hash,
        row.get("key_prefix")?,
        &policy,
        row.get("created_at")?,
        row.get("updated_at")?,
        row.get("last_used_at")?,
        row.get("revoked_at")?,
    ))
}

/// The `keys` component's migrations, tracked in the same `schema_migrations` table as the
/// other components of the database. Returns the version found before migrating.
fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )?;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM schema_migrations WHERE component = 'keys'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version) VALUES ('keys', ?1)
             ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            [i64::try_from(i + 1).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_from_a_newer_llm_bridge_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        drop(SqliteKeyStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE schema_migrations SET version = version + 1 WHERE component = 'keys'",
            [],
        )
        .unwrap();
        drop(conn);
        let Err(e) = SqliteKeyStore::open(&path) else {
            panic!("a newer schema was accepted")
        };
        assert!(
            e.message().contains("newer than this llm-bridge knows"),
            "{e}"
        );
    }
}
