//! The in-memory view of the managed keys: lookups never touch the database. A watcher
//! thread notices commits by other processes (`llm-bridge keys …` while the server runs)
//! through SQLite's `data_version` and reloads within a fraction of a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    path: PathBuf,
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
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ManagedKeys {
    /// Loads the keys of the database at `path` (created if missing).
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        let keys = Arc::new(ManagedKeys {
            path: path.to_path_buf(),
            by_digest: RwLock::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            clock,
        });
        let store = KeyStore::open(path)?;
        keys.load(&store)?;
        Ok(keys)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The clock limits are counted with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the in-memory keys with the stored ones.
    pub fn load(&self, store: &KeyStore) -> Result<()> {
        let records = store.list()?;
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = HashMap::with_capacity(records.len());
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

    /// Starts the watcher thread; it stops when the keys are dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Result<()> {
        let weak: Weak<ManagedKeys> = Arc::downgrade(self);
        let path = self.path.clone();
        // Read the version before the last load, so that no change can fall in between.
        let first = KeyStore::open(&path)?;
        let mut seen = Some(first.data_version()?);
        self.load(&first)?;
        let mut store = Some(first);
        std::thread::Builder::new().name("key-watcher".into()).spawn(move || {
            let mut last_touch = Instant::now();
            loop {
                std::thread::sleep(every);
                let Some(keys) = weak.upgrade() else { return };
                if store.is_none() {
                    store = KeyStore::open(&path)
                        .inspect_err(|e| tracing::warn!(error = %e, "key database unavailable: keeping the keys in memory"))
                        .ok();
                }
                let Some(s) = store.as_mut() else { continue };
                match s.data_version() {
                    Ok(v) if seen != Some(v) => {
                        if seen.is_some() {
                            match keys.load(s) {
                                Ok(()) => tracing::info!("managed keys reloaded"),
                                Err(e) => tracing::warn!(error = %e, "managed keys could not be reloaded"),
                            }
                        }
                        seen = Some(v);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "key database unavailable");
                        store = None;
                        continue;
                    }
                }
                if last_touch.elapsed() >= Duration::from_secs(10) {
                    last_touch = Instant::now();
                    let used: Vec<(String, i64)> =
                        keys.used.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
                    if !used.is_empty() {
                        if let Err(e) = s.touch(&used) {
                            tracing::debug!(error = %e, "could not record when keys were last used");
                        }
                        // Our own write moves data_version for other connections only; read
                        // it again so that it is not taken for someone else's change.
                        seen = s.data_version().ok();
                    }
                }
            }
        })
        .map_err(|e| llm_bridge_core::Error::internal(format!("cannot start the key watcher: {e}")))?;
        Ok(())
    }
}
