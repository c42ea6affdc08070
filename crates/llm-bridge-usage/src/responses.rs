//! Answers a dialect keeps on the gateway (OpenAI Responses' `store`): the request's input
//! items and the answer object, by the answer's id, for `GET /v1/responses/{id}` and
//! `previous_response_id`, until they expire (`responses.ttl`).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{StoreError, migrate, open_database, release_page_cache};

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
    /// Keeps an answer (replacing one of the same id). Taken whole: a store queues or sends
    /// it without copying the conversation it holds.
    fn put(&self, response: StoredResponse) -> Result<(), StoreError>;
    /// The answer with this id, if kept and not expired.
    fn get(&self, id: &str, now_ms: i64) -> Result<Option<StoredResponse>, StoreError>;
    /// Forgets an answer; whether there was one.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Forgets every answer that expired before `now_ms`; how many.
    fn prune(&self, now_ms: i64) -> Result<usize, StoreError>;

    /// Whether `put` may wait (on a disk or a server): then callers make it off the async
    /// threads. A store that only queues the answer for a writer says `false`.
    fn put_blocks(&self) -> bool {
        true
    }

    /// Writes what is queued, if the store queues (at shutdown, after the last request).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
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

/// How long the writer lets kept answers gather before it writes them. Woken for every answer
/// (it committed every one or two under load), the store took 14 µs more system time per
/// `/v1/responses` request than `store: false` at 64 connections.
const GATHER: Duration = Duration::from_millis(20);

/// How long the writer waits with nothing to write before the connection gives back its page
/// cache (see [`release_page_cache`]).
const QUIET: Duration = Duration::from_secs(1);

/// Kept answers in the embedded SQLite database (the usage database), written behind: `put`
/// queues the answer and a writer thread inserts what is queued in one transaction, so that
/// no request waits for a disk write (the synchronous insert was 45% of a translated
/// Responses request's CPU time). The writer lets a batch gather for 20 ms first: a crash
/// of the process loses at most that much. Queued answers are read like written ones;
/// `prune`, `export` and dropping the store write them first.
pub struct SqliteResponses {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    conn: Mutex<Connection>,
    ttl_ms: i64,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// How many times the writer gave back the page cache (for the tests).
    #[cfg(test)]
    released: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Queue {
    answers: Vec<StoredResponse>,
    closing: bool,
}

impl SqliteResponses {
    /// Opens (creating if needed) the table in the database at `path`; answers are kept
    /// for `ttl`.
    pub fn open(path: &Path, ttl: Duration) -> Result<Self, StoreError> {
        let mut conn = open_database(path, Duration::from_secs(2))?;
        migrate(&mut conn, "responses", MIGRATIONS)?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            #[cfg(test)]
            released: std::sync::atomic::AtomicUsize::new(0),
        });
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("llmb-responses".into())
            .spawn(move || for_writer.run_writer())
            .map_err(|e| StoreError(format!("could not start the answers writer: {e}")))?;
        Ok(SqliteResponses {
            shared,
            writer: Some(writer),
        })
    }

    /// Every kept answer not expired at `now_ms`, oldest first: for moving them to another
    /// store (`llm-bridge migrate`).
    pub fn export(&self, now_ms: i64) -> Result<Vec<StoredResponse>, StoreError> {
        let conn = self.shared.write_queued()?;
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
}

impl Shared {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes whatever is queued, and returns the connection still held, so that what the
    /// caller reads or deletes next sees every answer kept so far. The connection is taken
    /// before the queue: a reader that misses an answer in the queue waits here for it.
    fn write_queued(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        let mut conn = self.conn();
        let answers = std::mem::take(&mut self.queue().answers);
        if answers.is_empty() {
            return Ok(conn);
        }
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO responses (id, created_ms, expires_ms, key_name, input, response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for r in &answers {
                insert.execute(params![
                    r.id,
                    r.created_ms,
                    r.created_ms.saturating_add(self.ttl_ms),
                    r.key,
                    r.input,
                    r.response
                ])?;
            }
        }
        tx.commit()?;
        Ok(conn)
    }

    fn run_writer(&self) {
        // Whether the connection has written since it last gave back its page cache: it does
        // after a quiet second.
        let mut warm = false;
        loop {
            let closing = {
                let mut queue = self.queue();
                while queue.answers.is_empty() && !queue.closing {
                    if !warm {
                        queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    let (q, waited) = self
                        .wake
                        .wait_timeout(queue, QUIET)
                        .unwrap_or_else(|e| e.into_inner());
                    queue = q;
                    if waited.timed_out() && queue.answers.is_empty() {
                        drop(queue);
                        release_page_cache(&self.conn());
                        llm_bridge_core::memory::quiet();
                        #[cfg(test)]
                        self.released
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        warm = false;
                        queue = self.queue();
                    }
                }
                queue.closing
            };
            warm = true;
            if !closing {
                // Let a batch gather: one transaction for what arrives meanwhile, instead of
                // a wake-up and a commit for every answer or two.
                std::thread::sleep(GATHER);
            }
            if let Err(e) = self.write_queued() {
                tracing::error!(error = %e, "could not keep answers (SQLite)");
            }
            if closing && self.queue().answers.is_empty() {
                return;
            }
        }
    }
}

impl Drop for SqliteResponses {
    fn drop(&mut self) {
        self.shared.queue().closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl ResponseStore for SqliteResponses {
    fn put(&self, r: StoredResponse) -> Result<(), StoreError> {
        let first = {
            let mut queue = self.shared.queue();
            queue.answers.push(r);
            queue.answers.len() == 1
        };
        // Only the first answer of a batch can find the writer waiting.
        if first {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    fn put_blocks(&self) -> bool {
        false
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.shared.write_queued().map(drop)
    }

    fn get(&self, id: &str, now_ms: i64) -> Result<Option<StoredResponse>, StoreError> {
        let alive = |r: &StoredResponse| r.created_ms.saturating_add(self.shared.ttl_ms) > now_ms;
        let queued = self
            .shared
            .queue()
            .answers
            .iter()
            .rev()
            .find(|r| r.id == id)
            .cloned();
        if let Some(r) = queued {
            return Ok(Some(r).filter(alive));
        }
        Ok(self
            .shared
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
            .shared
            .write_queued()?
            .execute("DELETE FROM responses WHERE id = ?1", [id])?
            > 0)
    }

    fn prune(&self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self
            .shared
            .write_queued()?
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
        store.put(r.clone()).unwrap();
        assert_eq!(store.get("resp_1", 2_000).unwrap(), Some(r.clone()));
        assert_eq!(store.get("resp_1", 61_000).unwrap(), None, "expired");
        assert_eq!(store.prune(61_000).unwrap(), 1);
        store.put(r).unwrap();
        assert!(store.delete("resp_1").unwrap());
        assert!(!store.delete("resp_1").unwrap());
        assert_eq!(store.get("resp_1", 2_000).unwrap(), None);
        // The usage tables and this one share the database and its migrations table.
        crate::SqliteStore::open(&dir.path().join("u.db")).unwrap();
    }

    /// The `i`th of a run of small answers kept by one key.
    fn answer(i: usize) -> StoredResponse {
        StoredResponse {
            id: format!("resp_{i}"),
            created_ms: 1_000,
            key: "team".into(),
            input: "[]".into(),
            response: format!(r#"{{"id":"resp_{i}"}}"#),
        }
    }

    #[test]
    fn the_writer_gives_back_its_page_cache_once_after_each_burst() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteResponses::open(&dir.path().join("u.db"), Duration::from_secs(60)).unwrap();
        let released = || {
            store
                .shared
                .released
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        std::thread::sleep(QUIET + QUIET / 2);
        assert_eq!(released(), 0, "gave back before anything was written");
        for burst in 1..=2 {
            for i in 0..5 {
                store.put(answer(10 * burst + i)).unwrap();
                std::thread::sleep(QUIET / 10);
            }
            assert_eq!(released(), burst - 1, "gave back during a burst");
            std::thread::sleep(QUIET + QUIET / 2);
            assert_eq!(released(), burst, "gave back once after the burst");
            std::thread::sleep(QUIET + QUIET / 2);
            assert_eq!(released(), burst, "gave back again while idle");
        }
        // What was written before the cache went is still there.
        assert_eq!(store.get("resp_10", 2_000).unwrap(), Some(answer(10)));
        assert_eq!(store.get("resp_24", 2_000).unwrap(), Some(answer(24)));
    }

    #[test]
    fn queued_answers_are_read_at_once_written_in_batches_and_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let store = SqliteResponses::open(&path, Duration::from_secs(60)).unwrap();
        assert!(!store.put_blocks());
        // Each answer can be read the moment it is kept, whether queued or written.
        for i in 0..500 {
            store.put(answer(i)).unwrap();
            assert_eq!(
                store.get(&format!("resp_{i}"), 2_000).unwrap(),
                Some(answer(i))
            );
        }
        // A deletion right after the put wins over the queued insert.
        store.put(answer(500)).unwrap();
        assert!(store.delete("resp_500").unwrap());
        assert_eq!(store.get("resp_500", 2_000).unwrap(), None);
        store.put(answer(501)).unwrap();
        drop(store);
        // Dropping the store wrote the queue: all there, from another connection.
        let conn = Connection::open(&path).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM responses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 501);
    }
}
