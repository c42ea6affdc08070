//! Kept Responses answers in PostgreSQL, readable from every instance.

use std::sync::Arc;
use std::time::Duration;

use llm_bridge_usage::{ResponseStore, StoreError, StoredResponse};

use crate::Postgres;

/// Kept answers on PostgreSQL.
#[derive(Debug)]
pub struct PgResponses {
    pg: Arc<Postgres>,
    ttl_ms: i64,
}

impl PgResponses {
    /// Kept answers in this database, readable for `ttl`.
    pub fn new(pg: Arc<Postgres>, ttl: Duration) -> PgResponses {
        PgResponses {
            pg,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
        }
    }
}

impl ResponseStore for PgResponses {
    fn put(&self, r: StoredResponse) -> Result<(), StoreError> {
        let expires = r.created_ms.saturating_add(self.ttl_ms);
        self.pg.run(|shared| async move {
            let client = shared.client().await?;
            client
                .execute(
                    "INSERT INTO responses (id, created_ms, expires_ms, key_name, input, response)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET created_ms = excluded.created_ms,
                        expires_ms = excluded.expires_ms, key_name = excluded.key_name,
                        input = excluded.input, response = excluded.response",
                    &[
                        &r.id,
                        &r.created_ms,
                        &expires,
                        &r.key,
                        &r.input,
                        &r.response,
                    ],
                )
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(())
        })
    }

    fn get(&self, id: &str, now_ms: i64) -> Result<Option<StoredResponse>, StoreError> {
        let id = id.to_owned();
        self.pg.run(|shared| async move {
            let client = shared.client().await?;
            let row = client
                .query_opt(
                    "SELECT id, created_ms, key_name, input, response FROM responses
                     WHERE id = $1 AND expires_ms > $2",
                    &[&id, &now_ms],
                )
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(row.map(|row| StoredResponse {
                id: row.get(0),
                created_ms: row.get(1),
                key: row.get(2),
                input: row.get(3),
                response: row.get(4),
            }))
        })
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.pg.run(|shared| async move {
            let client = shared.client().await?;
            let n = client
                .execute("DELETE FROM responses WHERE id = $1", &[&id])
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(n > 0)
        })
    }

    fn prune(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.pg.run(|shared| async move {
            let client = shared.client().await?;
            let n = client
                .execute("DELETE FROM responses WHERE expires_ms <= $1", &[&now_ms])
                .await
                .map_err(|e| shared.error(&e))?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
