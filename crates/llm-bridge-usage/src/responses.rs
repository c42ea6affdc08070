//! Answers a dialect keeps on the gateway (OpenAI Responses' `store`): the request's input
//! items and the answer object, by the answer's id, for `GET /v1/responses/{id}` and
//! `previous_response_id`, until they expire (`responses.ttl`).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{StoreError, migrate, open_database};

/// One kept exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The answer's id (`resp_…`).
    pub id: String,
    /// When it was made (milliseconds since the epoch).
    pub created_ms: i64,
    /// The name of the key that made it: only that key (or an admin) may read it.
    pub key: String,
    /// The request's input items, as a JSON array.
    pub input: String,
    /// The answer object, as JSON.
    pub response: String,
}

/// Where kept answers live.
pub trait ResponseStore: Send + Sync {
    /// Keeps an answer (replacing one of the same id).
    fn put(&self, response: &StoredResponse) -> Result<(), StoreError>;
    /// The answer with this id, if kept and not expired.
    fn get(&self, id: &str, now_ms: i64) -> Result<Option<StoredResponse>, StoreError>;
    /// Forgets an answer; whether there was one.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Forgets every answer that expired before `now_ms`; how many.
    fn prune(&self, now_ms: i64) -> Result<usize, StoreError>;
}

const MIGRATIONS: &[&str] = &[
    // 1: kept answers, with their expiry for pruning.
    "CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        key_name TEXT NOT NULL,
        input TEXT NOT NULL,
        response TEXT NOT NULL
    );
    CREATE INDEX responses_expires ON responses (expires_ms);",
];

/// Kept answers in the embedded SQLite database (the usage database).
pub struct SqliteResponses {
    conn: Mutex<Connection>,
    ttl_ms: i64,
}

impl SqliteResponses {
    /// Opens (creating if needed) the table in the database at `path`; answers are kept
    /// for `ttl`.
    pub fn open(path: &Path, ttl: Duration) -> Result<Self, StoreError> {
        let mut conn = open_database(path, Duration::from_secs(2))?;
        migrate(&mut conn, "responses", MIGRATIONS)?;
        Ok(SqliteResponses {
            conn: Mutex::new(conn),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
        })
    }

    /// Every kept answer not expired at `now_ms`, oldest first: for moving them to another
    /// store (`llm-bridge migrate`).
    pub fn export(&self, now_ms: i64) -> Result<Vec<StoredResponse>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, created_ms, key_name, input, response FROM responses
             WHERE expires_ms > ?1 ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([now_ms], |row| {
            Ok(StoredResponse {
                id: row.get(0)?,
                created_ms: row.get(1)?,
                key: row.get(2)?,
                input: row.get(3)?,
                response: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResponseStore for SqliteResponses {
    fn put(&self, r: &StoredResponse) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO responses (id, created_ms, expires_ms, key_name, input, response)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.id,
                r.created_ms,
                r.created_ms.saturating_add(self.ttl_ms),
                r.key,
                r.input,
                r.response
            ],
        )?;
        Ok(())
    }

    fn get(&self, id: &str, now_ms: i64) -> Result<Option<StoredResponse>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, created_ms, key_name, input, response FROM responses
                 WHERE id = ?1 AND expires_ms > ?2",
                params![id, now_ms],
                |row| {
                    Ok(StoredResponse {
                        id: row.get(0)?,
                        created_ms: row.get(1)?,
                        key: row.get(2)?,
                        input: row.get(3)?,
                        response: row.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM responses WHERE id = ?1", [id])?
            > 0)
    }

    fn prune(&self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM responses WHERE expires_ms <= ?1", [now_ms])?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn answers_are_kept_read_deleted_and_pruned_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteResponses::open(&dir.path().join("u.db"), Duration::from_secs(60)).unwrap();
        let r = StoredResponse {
            id: "resp_1".into(),
            created_ms: 1_000,
            key: "team".into(),
            input: r#"[{"role":"user","content":"hi"}]"#.into(),
            response: r#"{"id":"resp_1","output":[]}"#.into(),
        };
        store.put(&r).unwrap();
        assert_eq!(store.get("resp_1", 2_000).unwrap(), Some(r.clone()));
        assert_eq!(store.get("resp_1", 61_000).unwrap(), None, "expired");
        assert_eq!(store.prune(61_000).unwrap(), 1);
        store.put(&r).unwrap();
        assert!(store.delete("resp_1").unwrap());
        assert!(!store.delete("resp_1").unwrap());
        assert_eq!(store.get("resp_1", 2_000).unwrap(), None);
        // The usage tables and this one share the database and its migrations table.
        crate::SqliteStore::open(&dir.path().join("u.db")).unwrap();
    }
}
