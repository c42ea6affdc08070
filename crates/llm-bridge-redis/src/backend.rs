//! The Redis backend: admissions over an async connection manager (reconnects by itself),
//! budget extensions over a blocking connection (they are asked for while a stream is
//! polled), settlements through a bounded queue to a writer thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm_bridge_auth::{
    Admission, Budget, Clock, Ledger, LimitsUnavailable, ManagedKey, OnUnavailable, Period,
    RateInfo, Refusal, Rejection, SharedAdmission, SharedLimits,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

/// How long a request holds its place before it is taken for dead.
const LEASE_MS: u64 = 15 * 60 * 1000;
/// Longest wait for Redis on the request path: beyond it Redis counts as unavailable
/// (`limits.on_unavailable`). Generous, because falling back lets a limit be exceeded.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Settlements waiting for the writer thread, at most.
const QUEUE: usize = 65_536;

/// What a key has spent: `(tokens, cost)` today, this month and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Today (UTC).
    pub day: (u64, f64),
    /// This month (UTC).
    pub month: (u64, f64),
    /// In the key's whole life.
    pub total: (u64, f64),
}

/// Reads what a key (by name) has spent from the usage records; blocking. Used to seed
/// budget counters that Redis lost.
pub type SpendSource = Arc<dyn Fn(&str) -> Result<Spent, String> + Send + Sync>;

/// Limits counted in Redis for every instance.
pub struct RedisLimits {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    script: Script,
    /// The admissions' connection; `None` until Redis was first reached.
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// When connecting was last tried (ms since start), so that a dead Redis costs one
    /// attempt per second, not one per request.
    tried_at: AtomicI64,
    /// The extensions' connection.
    blocking: Mutex<Option<redis::Connection>>,
    settle: SyncSender<Settlement>,
    spend: SpendSource,
    clock: Arc<dyn Clock>,
    on_unavailable: OnUnavailable,
    started: Instant,
    /// Ticket numbers: this instance's random high half, a counter in the low half.
    instance: u64,
    next: AtomicU64,
    /// Settlements lost because the queue was full or Redis refused them.
    lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisLimits").finish_non_exhaustive()
    }
}

enum Settlement {
    Settle {
        keys: Keys,
        ticket: u64,
        tokens: u64,
        cost: f64,
    },
    Release {
        keys: Keys,
        ticket: u64,
    },
}

/// The six Redis keys of one managed key.
#[derive(Clone)]
struct Keys([String; 6]);

impl Keys {
    fn of(key_id: &str) -> Keys {
        let k = |what: &str| format!("llmb:{{{key_id}}}:{what}");
        Keys([
            k("req"),
            k("tok"),
            k("tokn"),
            k("live"),
            k("livn"),
            k("spend"),
        ])
    }
}

impl RedisLimits {
    /// A backend for the Redis at `url` (`redis://[:password@]host:port/db`). Nothing is
    /// connected yet: a Redis that is down now is used as soon as it is up.
    pub fn new(
        url: &str,
        on_unavailable: OnUnavailable,
        clock: Arc<dyn Clock>,
        spend: SpendSource,
    ) -> Result<Arc<RedisLimits>, String> {
        let client =
            Client::open(url).map_err(|e| format!("limits.url is not a Redis URL: {e}"))?;
        let (tx, rx) = sync_channel(QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
        let script = Script::new(include_str!("limits.lua"));
        {
            let client = client.clone();
            let script = script.clone();
            let lost = lost.clone();
            std::thread::Builder::new()
                .name("limits-settle".into())
                .spawn(move || settle_loop(&client, &script, &rx, &lost))
                .map_err(|e| format!("cannot start the limits thread: {e}"))?;
        }
        Ok(Arc::new(RedisLimits {
            inner: Arc::new(Inner {
                client,
                script,
                manager: tokio::sync::Mutex::new(None),
                tried_at: AtomicI64::new(i64::MIN),
                blocking: Mutex::new(None),
                settle: tx,
                spend,
                clock,
                on_unavailable,
                started: Instant::now(),
                instance: u64::from(u32::from_le_bytes(random)) << 32,
                next: AtomicU64::new(0),
                lost,
            }),
        }))
    }

    /// Checks that Redis answers (for `llm-bridge check`).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.inner.connection().await.map_err(|e| e.0)?;
        tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map_err(|_| "Redis did not answer within 2 s".to_owned())?
            .map(drop)
            .map_err(|e| format!("Redis: {e}"))
    }

    /// Settlements lost (queue full or refused by Redis) since start.
    pub fn lost_settlements(&self) -> u64 {
        self.inner.lost.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    async fn connection(&self) -> Result<ConnectionManager, LimitsUnavailable> {
        let mut slot = self.manager.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let now = self.elapsed_ms();
        let last = self.tried_at.load(Ordering::Relaxed);
        if last != i64::MIN && now - last < 1000 {
            return Err(LimitsUnavailable("Redis is not reachable".into()));
        }
        self.tried_at.store(now, Ordering::Relaxed);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| LimitsUnavailable("Redis did not answer".into()))?
        .map_err(|e| LimitsUnavailable(format!("Redis: {e}")))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn run(&self, keys: &Keys, args: &[String]) -> Result<Vec<f64>, LimitsUnavailable> {
        let mut conn = self.connection().await?;
        let mut call = self.script.prepare_invoke();
        for k in &keys.0 {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        tokio::time::timeout(TIMEOUT, call.invoke_async::<Vec<f64>>(&mut conn))
            .await
            .map_err(|_| LimitsUnavailable("Redis did not answer within 2 s".into()))?
            .map_err(|e| LimitsUnavailable(format!("Redis: {e}")))
    }

    async fn admit(
        self: &Arc<Self>,
        key: &ManagedKey,
        estimate: u64,
    ) -> Result<Result<Admission, Rejection>, LimitsUnavailable> {
        let policy = &key.record.policy;
        let keys = Keys::of(&key.record.id);
        let ticket = self.instance | (self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        let opt = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
        let optf = |v: Option<f64>| v.map_or("-1".to_owned(), |v| v.to_string());
        let budgets = !policy.budget_tokens.is_unlimited() || !policy.budget_cost.is_unlimited();
        let args = vec![
            "admit".to_owned(),
            ticket.to_string(),
            estimate.to_string(),
            opt(policy.rpm),
            opt(policy.tpm),
            opt(policy.max_concurrent),
            opt(policy.budget_tokens.day),
            opt(policy.budget_tokens.month),
            opt(policy.budget_tokens.total),
            optf(policy.budget_cost.day),
            optf(policy.budget_cost.month),
            optf(policy.budget_cost.total),
            LEASE_MS.to_string(),
            if budgets { "1" } else { "0" }.to_owned(),
        ];
        let mut reply = self.run(&keys, &args).await?;
        if reply.first() == Some(&-1.0) {
            // Redis lost the budget counters (restarted): seed them from the usage records.
            self.seed(&keys, &key.record.name).await?;
            reply = self.run(&keys, &args).await?;
        }
        let [status, requests, tokens, wait, reserved, now] = reply[..] else {
            return Err(LimitsUnavailable(format!(
                "unexpected reply from the limits script: {reply:?}"
            )));
        };
        let (requests, tokens) = (requests.max(0.0) as u64, tokens.max(0.0) as u64);
        let rate = RateInfo {
            limit_requests: policy.rpm,
            remaining_requests: policy.rpm.map(|r| r.saturating_sub(requests)),
            limit_tokens: policy.tpm,
            remaining_tokens: policy.tpm.map(|t| t.saturating_sub(tokens)),
        };
        let (wait, now) = (wait as i64, now as i64);
        let refusal = match status as i64 {
            0 => {
                let ledger: Arc<dyn Ledger> = Arc::new(RedisLedger {
                    inner: self.clone(),
                    keys,
                });
                return Ok(Ok(Admission::new(
                    ledger,
                    self.clock.clone(),
                    ticket,
                    reserved.max(0.0) as u64,
                    policy.budget_tokens,
                    rate,
                )));
            }
            1 => Refusal::Requests(policy.rpm.unwrap_or(0), wait),
            2 => Refusal::Tokens(policy.tpm.unwrap_or(0), wait),
            3 => Refusal::Concurrency(policy.max_concurrent.unwrap_or(0)),
            n @ 10..=15 => Refusal::Budget {
                cost: n % 2 == 1,
                period: match n {
                    10 | 11 => Period::Total,
                    12 | 13 => Period::Month,
                    _ => Period::Day,
                },
            },
            n => {
                return Err(LimitsUnavailable(format!(
                    "unexpected status {n} from the limits script"
                )));
            }
        };
        Ok(Err(Rejection {
            error: Box::new(refusal.error(now)),
            rate: Some(rate).filter(RateInfo::is_limited),
        }))
    }

    async fn seed(&self, keys: &Keys, name: &str) -> Result<(), LimitsUnavailable> {
        let source = self.spend.clone();
        let name = name.to_owned();
        let spent = tokio::task::spawn_blocking(move || source(&name))
            .await
            .map_err(|e| LimitsUnavailable(format!("seeding budgets: {e}")))?
            .map_err(|e| LimitsUnavailable(format!("cannot read the spending to seed: {e}")))?;
        tracing::info!("seeding a key's budget counters in Redis from the usage records");
        let args = [
            "seed".to_owned(),
            spent.day.0.to_string(),
            spent.day.1.to_string(),
            spent.month.0.to_string(),
            spent.month.1.to_string(),
            spent.total.0.to_string(),
            spent.total.1.to_string(),
        ];
        self.run(keys, &args).await.map(drop)
    }

    /// A blocking call, for extensions asked for inside a stream's poll.
    fn run_blocking(&self, keys: &Keys, args: &[String]) -> Result<Vec<f64>, String> {
        let mut slot = self.blocking.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| e.to_string())?;
            conn.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| e.to_string())?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err("no connection".into());
        };
        let mut call = self.script.prepare_invoke();
        for k in &keys.0 {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        call.invoke::<Vec<f64>>(conn).map_err(|e| {
            // A broken connection is opened again next time.
            *slot = None;
            e.to_string()
        })
    }
}

impl SharedLimits for RedisLimits {
    fn admit<'a>(&'a self, key: &'a ManagedKey, estimate: u64) -> SharedAdmission<'a> {
        Box::pin(self.inner.admit(key, estimate))
    }
}

/// Settles one admitted request in Redis.
struct RedisLedger {
    inner: Arc<Inner>,
    keys: Keys,
}

impl Ledger for RedisLedger {
    fn extend(&self, ticket: u64, budget: &Budget<u64>, extra: u64, _now: i64) -> u64 {
        let opt = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
        let args = [
            "extend".to_owned(),
            ticket.to_string(),
            extra.to_string(),
            opt(budget.day),
            opt(budget.month),
            opt(budget.total),
        ];
        match self.inner.run_blocking(&self.keys, &args) {
            Ok(reply) => reply.first().map_or(0, |g| g.max(0.0) as u64),
            Err(e) => {
                tracing::debug!(error = %e, "Redis unavailable for a budget extension");
                // `local` keeps serving while Redis is away; `deny` stops at the reservation.
                match self.inner.on_unavailable {
                    OnUnavailable::Local => extra,
                    OnUnavailable::Deny => 0,
                }
            }
        }
    }

    fn settle(&self, ticket: u64, _reserved: u64, tokens: u64, cost: f64, _now: i64) {
        self.queue(Settlement::Settle {
            keys: self.keys.clone(),
            ticket,
            tokens,
            cost,
        });
    }

    fn release(&self, ticket: u64, _reserved: u64) {
        self.queue(Settlement::Release {
            keys: self.keys.clone(),
            ticket,
        });
    }
}

impl RedisLedger {
    fn queue(&self, s: Settlement) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.inner.settle.try_send(s)
        {
            self.inner.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread: settlements in order, over one blocking connection, reopened after a
/// failure. A settlement Redis cannot take is lost (counted): its lease ends by itself.
fn settle_loop(client: &Client, script: &Script, rx: &Receiver<Settlement>, lost: &AtomicU64) {
    let mut conn: Option<redis::Connection> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(999));
        if conn.is_none() {
            conn = client
                .get_connection_with_timeout(TIMEOUT)
                .ok()
                .filter(|c| c.set_read_timeout(Some(TIMEOUT)).is_ok());
        }
        let Some(c) = conn.as_mut() else {
            lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        };
        // One pipeline per batch: one round trip for many settlements.
        let mut pipe = redis::pipe();
        for s in &batch {
            let (keys, args) = match s {
                Settlement::Settle {
                    keys,
                    ticket,
                    tokens,
                    cost,
                } => (
                    keys,
                    vec![
                        "settle".to_owned(),
                        ticket.to_string(),
                        tokens.to_string(),
                        cost.to_string(),
                    ],
                ),
                Settlement::Release { keys, ticket } => {
                    (keys, vec!["release".to_owned(), ticket.to_string()])
                }
            };
            let mut call = script.prepare_invoke();
            for k in &keys.0 {
                call.key(k);
            }
            for a in args {
                call.arg(a);
            }
            pipe.invoke_script(&call).ignore();
        }
        if let Err(e) = pipe.query::<()>(c) {
            // Redis restarted and forgot the script (NOSCRIPT): load it, try once more.
            // Only then: after other errors some settlements may have been applied.
            if e.code() == Some("NOSCRIPT")
                && script.prepare_invoke().load(c).is_ok()
                && pipe.query::<()>(c).is_ok()
            {
                continue;
            }
            tracing::debug!(error = %e, lost = batch.len(), "settlements not written to Redis");
            lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            conn = None;
        }
    }
}
