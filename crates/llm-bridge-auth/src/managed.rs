//! The in-memory view of the managed keys: lookups never touch the database. A watcher
//! thread notices changes made elsewhere (`llm-bridge keys …` while the server runs, the
//! admin API of another instance) through its [`KeyStore`] — SQLite's `data_version`,
//! PostgreSQL's NOTIFY — and reloads within a fraction of a second.

// foldhash, not std's SipHash: these maps are read on every request (digests and key
// names; seeded per process).
use foldhash::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use llm_bridge_core::Result;

use crate::clock::Clock;
use crate::limits::KeyState;
use crate::store::{KeyRecord, KeyStore};

/// A managed key, ready for the hot path.
#[derive(Debug)]
pub struct ManagedKey {
    /// Its stored record (policy, expiry, revocation).
    pub record: KeyRecord,
    /// Its live counters.
    pub state: Arc<KeyState>,
}

/// All managed keys, by the SHA-256 of the key.
pub struct ManagedKeys {
    store: Arc<dyn KeyStore>,
    by_digest: RwLock<HashMap<[u8; 32], Arc<ManagedKey>>>,
    /// Counters by key id, kept when a key's policy is reloaded.
    states: Mutex<HashMap<String, Arc<KeyState>>>,
    /// When keys were last used, waiting to be written.
    used: Mutex<HashMap<String, i64>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ManagedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedKeys")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl ManagedKeys {
    /// Loads the keys of `store`.
    pub fn open(store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        let keys = Arc::new(ManagedKeys {
            store,
            by_digest: RwLock::new(HashMap::default()),
            states: Mutex::new(HashMap::default()),
            used: Mutex::new(HashMap::default()),
            clock,
        });
        keys.load()?;
        Ok(keys)
    }

    /// No keys yet, for a store that cannot be read now (PostgreSQL down at start-up): the
    /// watcher loads them when it can.
    pub fn unloaded(store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(ManagedKeys {
            store,
            by_digest: RwLock::new(HashMap::default()),
            states: Mutex::new(HashMap::default()),
            used: Mutex::new(HashMap::default()),
            clock,
        })
    }

    /// Where the keys are kept (the admin API writes through it, then calls [`Self::load`]).
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The clock limits are counted with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the in-memory keys with the stored ones.
    pub fn load(&self) -> Result<()> {
        let records = self.store.list()?;
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = HashMap::with_capacity_and_hasher(records.len(), Default::default());
        for record in records {
            let state = states.entry(record.id.clone()).or_default().clone();
            map.insert(record.key_hash, Arc::new(ManagedKey { record, state }));
        }
        drop(states);
        *self.by_digest.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// The key with this digest.
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<Arc<ManagedKey>> {
        self.by_digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// The key with this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<ManagedKey>> {
        self.by_digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|k| k.record.name == name)
            .cloned()
    }

    /// Notes a use (written to the database by the watcher, not on the request path).
    pub fn note_use(&self, key: &ManagedKey) {
        let now = self.clock.now_ms();
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.record.id.clone(), now);
    }

    /// Adds spending recorded before this process started to a key's budgets.
    pub fn seed_spend(&self, name: &str, day: (u64, f64), month: (u64, f64), total: (u64, f64)) {
        if let Some(k) = self.by_name(name) {
            k.state.seed(self.clock.now_ms(), day, month, total);
        }
    }

    /// Starts the watcher thread: it checks the store's version at least every `every`
    /// (sooner when the store is told of a change) and reloads when it moved. It stops when
    /// the keys are dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Result<()> {
        let weak: Weak<ManagedKeys> = Arc::downgrade(self);
        let store = self.store.clone();
        // Read the version before the last load, so that no change can fall in between. A
        // store that cannot be read now is loaded by the watcher when it comes back.
        let mut seen = match store.version().and_then(|v| self.load().map(|()| v)) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "managed keys cannot be read now: loading them when the database is back");
                None
            }
        };
        std::thread::Builder::new()
            .name("key-watcher".into())
            .spawn(move || {
                let mut last_touch = Instant::now();
                let mut last_warning: Option<Instant> = None;
                let mut warn = |what: &str, e: &llm_bridge_core::Error| {
                    // Once per 10 s, not every poll, while the database is away.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "{what}");
                        last_warning = Some(Instant::now());
                    }
                };
                loop {
                    store.wait_for_change(every);
                    let Some(keys) = weak.upgrade() else { return };
                    match store.version() {
                        Ok(v) if seen != Some(v) => match keys.load() {
                            Ok(()) => {
                                tracing::info!("managed keys reloaded");
                                seen = Some(v);
                            }
                            Err(e) => warn("managed keys could not be reloaded", &e),
                        },
                        Ok(_) => {}
                        Err(e) => {
                            // After an outage, reload whatever the version says.
                            seen = None;
                            warn("key database unavailable: keeping the keys in memory", &e);
                            continue;
                        }
                    }
                    if last_touch.elapsed() >= Duration::from_secs(10) {
                        last_touch = Instant::now();
                        let used: Vec<(String, i64)> = keys
                            .used
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .drain()
                            .collect();
                        if !used.is_empty() {
                            if let Err(e) = store.touch(&used) {
                                tracing::debug!(error = %e, "could not record when keys were last used");
                            }
                        }
                    }
                }
            })
            .map_err(|e| {
                llm_bridge_core::Error::internal(format!("cannot start the key watcher: {e}"))
            })?;
        Ok(())
    }
}
