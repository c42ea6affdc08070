//! Managed keys in PostgreSQL. Every change (create, update, revoke, import) moves the
//! `key_changes` counter and NOTIFYs [`KEY_CHANNEL`] in its own transaction, so the
//! notification is sent exactly when the change is visible. Each watching instance keeps one
//! LISTEN connection and checks the counter when notified, and at its polling interval in
//! case a notification was lost (a dropped connection).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use llm_bridge_auth::{
    KeyPolicy, KeyRecord, KeyStore, NewKey, key_not_found, name_taken, policy_json,
};
use llm_bridge_core::secrecy::SecretString;
use llm_bridge_core::{Error, ErrorKind, Result};
use llm_bridge_usage::StoreError;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::Postgres;

/// The channel key changes are announced on.
pub const KEY_CHANNEL: &str = "llm_bridge_keys";

/// The key store on PostgreSQL.
pub struct PgKeyStore {
    pg: Arc<Postgres>,
    /// Counts notifications (and listener reconnections, after which a change may have been
    /// missed).
    signal: Arc<Signal>,
    listener: OnceLock<()>,
    last_seen: AtomicU64,
}

impl std::fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("url", &self.pg.display())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Signal {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    fn notify(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }
}

impl PgKeyStore {
    /// The key store in this database.
    pub fn new(pg: Arc<Postgres>) -> PgKeyStore {
        PgKeyStore {
            pg,
            signal: Arc::new(Signal::default()),
            listener: OnceLock::new(),
            last_seen: AtomicU64::new(0),
        }
    }

    fn start_listener(&self) {
        self.listener.get_or_init(|| {
            let config = self.pg.shared.config.clone();
            let signal = self.signal.clone();
            let display = self.pg.display().to_owned();
            self.pg.spawn(listen(config, signal, display));
        });
    }
}

/// Keeps a LISTEN connection open, reconnecting after a second when it drops; every
/// notification (and every new connection) bumps `signal`.
async fn listen(config: tokio_postgres::Config, signal: Arc<Signal>, database: String) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let sql = format!("LISTEN {KEY_CHANNEL}");
                let subscribe = client.batch_execute(&sql);
                tokio::pin!(subscribe);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        done = &mut subscribe, if !subscribed => match done {
                            Ok(()) => {
                                subscribed = true;
                                // Changes made while we were not listening: check now.
                                signal.notify();
                            }
                            Err(e) => {
                                tracing::debug!(error = %crate::describe(&e), "LISTEN failed");
                                break;
                            }
                        },
                        message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => signal.notify(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(database = %database, error = %crate::describe(&e), "key change listener disconnected");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(e) => {
                tracing::debug!(database = %database, error = %crate::describe(&e), "key change listener cannot connect");
            }
        }
        signal.notify();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn internal(e: StoreError) -> Error {
    Error::new(ErrorKind::Internal, format!("key database: {e}"))
}

fn record(row: &Row) -> std::result::Result<KeyRecord, StoreError> {
    let hash: Vec<u8> = row.get("key_hash");
    let policy: String = row.get("policy");
    KeyRecord::from_stored(
        row.get("id"),
        row.get("name"),
        &hash,
        row.get("key_prefix"),
        &policy,
        row.get("created_at"),
        row.get("updated_at"),
        row.get("last_used_at"),
        row.get("revoked_at"),
    )
    .map_err(|e| StoreError(e.message().to_owned()))
}

/// Moves the change counter and announces the change (delivered at commit).
async fn announce(
    tx: &tokio_postgres::Transaction<'_>,
    shared: &crate::Shared,
) -> std::result::Result<(), StoreError> {
    tx.batch_execute(&format!(
        "UPDATE key_changes SET version = version + 1 WHERE id = 1; NOTIFY {KEY_CHANNEL};"
    ))
    .await
    .map_err(|e| shared.error(&e))
}

const SELECT: &str = "SELECT id, name, key_hash, key_prefix, policy, created_at, updated_at, last_used_at, revoked_at FROM api_keys";

impl KeyStore for PgKeyStore {
    fn create(
        &self,
        name: &str,
        policy: &KeyPolicy,
        now: i64,
    ) -> Result<(KeyRecord, SecretString)> {
        let new = NewKey::generate(name)?;
        let policy = policy_json(policy)?;
        let (id, hash, prefix, name_owned) = (
            new.id.clone(),
            new.key_hash.to_vec(),
            new.key_prefix.clone(),
            name.to_owned(),
        );
        let created = self
            .pg
            .run(|shared| async move {
                let mut client = shared.client().await?;
                let err = |e: tokio_postgres::Error| shared.error(&e);
                let tx = client.transaction().await.map_err(err)?;
                let taken = tx
                    .query_opt(
                        "SELECT 1 FROM api_keys WHERE name = $1 OR id = $1",
                        &[&name_owned],
                    )
                    .await
                    .map_err(err)?
                    .is_some();
                if taken {
                    return Ok(None);
                }
                let inserted = tx
                    .query_opt(
                        "INSERT INTO api_keys (id, name, key_hash, key_prefix, policy, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $6)
                             ON CONFLICT DO NOTHING
                             RETURNING id",
                        &[&id, &name_owned, &hash, &prefix, &policy, &now],
                    )
                    .await
                    .map_err(err)?;
                if inserted.is_none() {
                    // Another instance created the same name between our check and insert.
                    return Ok(None);
                }
                announce(&tx, &shared).await?;
                let row = tx
                    .query_one(&format!("{SELECT} WHERE id = $1"), &[&id])
                    .await
                    .map_err(err)?;
                let r = record(&row)?;
                tx.commit().await.map_err(err)?;
                Ok(Some(r))
            })
            .map_err(internal)?;
        match created {
            Some(record) => Ok((record, new.key)),
            None => Err(name_taken(name)),
        }
    }

    fn list(&self) -> Result<Vec<KeyRecord>> {
        self.pg
            .run(|shared| async move {
                let client = shared.client().await?;
                let rows = client
                    .query(&format!("{SELECT} ORDER BY name COLLATE \"C\""), &[])
                    .await
                    .map_err(|e| shared.error(&e))?;
                rows.iter().map(record).collect()
            })
            .map_err(internal)
    }

    fn get(&self, name: &str) -> Result<Option<KeyRecord>> {
        let name = name.to_owned();
        self.pg
            .run(|shared| async move {
                let client = shared.client().await?;
                let row = client
                    .query_opt(&format!("{SELECT} WHERE name = $1 OR id = $1"), &[&name])
                    .await
                    .map_err(|e| shared.error(&e))?;
                row.as_ref().map(record).transpose()
            })
            .map_err(internal)
    }

    fn update(&self, name: &str, policy: &KeyPolicy, now: i64) -> Result<KeyRecord> {
        let policy = policy_json(policy)?;
        self.change(
            name,
            "UPDATE api_keys SET policy = $2, updated_at = $3 WHERE name = $1 OR id = $1 RETURNING id",
            Some(policy),
            now,
        )
    }

    fn revoke(&self, name: &str, now: i64) -> Result<KeyRecord> {
        self.change(
            name,
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2), updated_at = $2 WHERE name = $1 OR id = $1 RETURNING id",
            None,
            now,
        )
    }

    fn touch(&self, used: &[(String, i64)]) -> Result<()> {
        let (ids, times): (Vec<String>, Vec<i64>) = used.iter().cloned().unzip();
        self.pg
            .run(|shared| async move {
                let client = shared.client().await?;
                client
                    .execute(
                        "UPDATE api_keys AS k SET last_used_at = GREATEST(COALESCE(k.last_used_at, 0), u.at)
                         FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(id, at) WHERE k.id = u.id",
                        &[&ids, &times],
                    )
                    .await
                    .map_err(|e| shared.error(&e))?;
                Ok(())
            })
            .map_err(internal)
    }

    fn import(&self, r: &KeyRecord) -> Result<()> {
        let policy = policy_json(&r.policy)?;
        let r = r.clone();
        self.pg
            .run(|shared| async move {
                let mut client = shared.client().await?;
                let err = |e: tokio_postgres::Error| shared.error(&e);
                let tx = client.transaction().await.map_err(err)?;
                tx.execute(
                    "INSERT INTO api_keys (id, name, key_hash, key_prefix, policy, created_at, updated_at, last_used_at, revoked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &r.id,
                        &r.name,
                        &r.key_hash.to_vec(),
                        &r.key_prefix,
                        &policy,
                        &r.created_at,
                        &r.updated_at,
                        &r.last_used_at,
                        &r.revoked_at,
                    ],
                )
                .await
                .map_err(err)?;
                announce(&tx, &shared).await?;
                tx.commit().await.map_err(err)
            })
            .map_err(internal)
    }

    /// The `key_changes` counter: every create, update, revoke or import moves it.
    fn version(&self) -> Result<i64> {
        self.pg
            .run(|shared| async move {
                let client = shared.client().await?;
                let row = client
                    .query_one("SELECT version FROM key_changes WHERE id = 1", &[])
                    .await
                    .map_err(|e| shared.error(&e))?;
                Ok(row.get::<_, i64>(0))
            })
            .map_err(internal)
    }

    /// Returns when a NOTIFY arrives (or the listener reconnects), or after `timeout`.
    fn wait_for_change(&self, timeout: Duration) {
        self.start_listener();
        let seen = self.last_seen.load(Ordering::Relaxed);
        let count = self.signal.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .signal
            .changed
            .wait_timeout_while(count, timeout, |c| *c == seen)
            .unwrap_or_else(|e| e.into_inner());
        self.last_seen.store(*count, Ordering::Relaxed);
    }

    fn describe(&self) -> String {
        self.pg.display().to_owned()
    }
}

impl PgKeyStore {
    /// Runs an `UPDATE … RETURNING id` of one key (`$1` its name or id, then `policy` if
    /// given, then `now`), announces it, and returns the new record.
    fn change(
        &self,
        name: &str,
        sql: &'static str,
        policy: Option<String>,
        now: i64,
    ) -> Result<KeyRecord> {
        let name_owned = name.to_owned();
        let changed = self
            .pg
            .run(|shared| async move {
                let mut client = shared.client().await?;
                let err = |e: tokio_postgres::Error| shared.error(&e);
                let tx = client.transaction().await.map_err(err)?;
                let row = match &policy {
                    Some(p) => tx.query_opt(sql, &[&name_owned, p, &now]).await,
                    None => tx.query_opt(sql, &[&name_owned, &now]).await,
                }
                .map_err(err)?;
                let Some(row) = row else { return Ok(None) };
                let id: String = row.get(0);
                announce(&tx, &shared).await?;
                let row = tx
                    .query_one(&format!("{SELECT} WHERE id = $1"), &[&id])
                    .await
                    .map_err(err)?;
                let r = record(&row)?;
                tx.commit().await.map_err(err)?;
                Ok(Some(r))
            })
            .map_err(internal)?;
        changed.ok_or_else(|| key_not_found(name))
    }
}
