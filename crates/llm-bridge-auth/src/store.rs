//! Managed keys in the embedded database: only the SHA-256 of each key is stored; the key
//! itself is shown once, when it is created.

use std::path::Path;
use std::time::Duration;

use llm_bridge_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::keys::{digest, generate_key};
use crate::policy::KeyPolicy;

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

/// The keys table.
pub struct KeyStore {
    conn: Connection,
}

impl KeyStore {
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
            return Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "key database: the keys schema is version {current}, newer than this llm-bridge knows ({known}): upgrade llm-bridge"
                ),
            ));
        }
        Ok(KeyStore { conn })
    }

    /// Creates a key; returns its record and the key, which is never available again.
    pub fn create(
        &mut self,
        name: &str,
        policy: &KeyPolicy,
        now: i64,
    ) -> Result<(KeyRecord, SecretString)> {
        validate_name(name)?;
        if self.get(name)?.is_some() {
            return Err(
                Error::invalid_request(format!("a key named '{name}' exists already"))
                    .with_param("name"),
            );
        }
        let key = generate_key();
        let mut raw = [0u8; 6];
        getrandom::fill(&mut raw).map_err(|e| Error::internal(format!("random source: {e}")))?;
        let id = format!(
            "key_{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let hash = digest(key.expose_secret());
        let prefix: String = key.expose_secret().chars().take(12).collect();
        self.conn
            .execute(
                "INSERT INTO api_keys (id, name, key_hash, key_prefix, policy, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, name, &hash[..], prefix, policy_json(policy)?, now],
            )
            .map_err(db_error)?;
        let record = self
            .get(name)?
            .ok_or_else(|| Error::internal("the new key vanished"))?;
        Ok((record, key))
    }

    /// Every key, revoked ones included, by name.
    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM api_keys ORDER BY name")
            .map_err(db_error)?;
        let rows = stmt.query_map([], record).map_err(db_error)?;
        rows.map(|r| r.map_err(db_error)?).collect()
    }

    /// One key by name (or id).
    pub fn get(&self, name: &str) -> Result<Option<KeyRecord>> {
        self.conn
            .query_row(
                "SELECT * FROM api_keys WHERE name = ?1 OR id = ?1",
                [name],
                record,
            )
            .optional()
            .map_err(db_error)?
            .transpose()
    }

    /// Replaces a key's policy.
    pub fn update(&mut self, name: &str, policy: &KeyPolicy, now: i64) -> Result<KeyRecord> {
        let changed = self
            .conn
            .execute(
                "UPDATE api_keys SET policy = ?2, updated_at = ?3 WHERE name = ?1 OR id = ?1",
                params![name, policy_json(policy)?, now],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(not_found(name));
        }
        self.get(name)?.ok_or_else(|| not_found(name))
    }

    /// Revokes a key (kept, for the record and its usage).
    pub fn revoke(&mut self, name: &str, now: i64) -> Result<KeyRecord> {
        let changed = self
            .conn
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2), updated_at = ?2 WHERE name = ?1 OR id = ?1",
                params![name, now],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(not_found(name));
        }
        self.get(name)?.ok_or_else(|| not_found(name))
    }

    /// Notes when keys were last used.
    pub fn touch(&mut self, used: &[(String, i64)]) -> Result<()> {
        let tx = self.conn.transaction().map_err(db_error)?;
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

    /// Changes whenever another connection commits: the cue to reload.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db_error)
    }
}

fn not_found(name: &str) -> Error {
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

fn policy_json(policy: &KeyPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|e| Error::internal(format!("policy: {e}")))
}

fn record(row: &Row<'_>) -> rusqlite::Result<Result<KeyRecord>> {
    let hash: Vec<u8> = row.get("key_hash")?;
    let policy: String = row.get("policy")?;
    let Ok(key_hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
        return Ok(Err(Error::internal(
            "key database: a key hash is not 32 bytes",
        )));
    };
    let policy = match serde_json::from_str(&policy) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Err(Error::internal(format!(
                "key database: a policy is unreadable: {e}"
            ))));
        }
    };
    Ok(Ok(KeyRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        key_prefix: row.get("key_prefix")?,
        policy,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        last_used_at: row.get("last_used_at")?,
        revoked_at: row.get("revoked_at")?,
        key_hash,
    }))
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
        drop(KeyStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE schema_migrations SET version = version + 1 WHERE component = 'keys'",
            [],
        )
        .unwrap();
        drop(conn);
        let Err(e) = KeyStore::open(&path) else {
            panic!("a newer schema was accepted")
        };
        assert!(
            e.message().contains("newer than this llm-bridge knows"),
            "{e}"
        );
    }
}
