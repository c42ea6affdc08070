//! One contract, two backends: the limits of a managed key behave the same counted in this
//! process (`local`) and in Redis (`redis`, from `LLM_BRIDGE_TEST_REDIS_URL`; skipped with a
//! notice when it is unset, as on a machine without Redis).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use llm_bridge_auth::{
    Admission, Authenticator, Budget, Clock, KeyPolicy, KeyStore, ManagedKeys, OnUnavailable,
    Principal, SqliteKeyStore, SystemClock,
};
use llm_bridge_core::ErrorKind;
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_redis::{RedisLimits, Spent};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Redis,
}

struct Setup {
    _dir: tempfile::TempDir,
    auth: Authenticator,
    principal: Principal,
    key_id: String,
}

fn redis_url() -> Option<String> {
    let url = std::env::var("LLM_BRIDGE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!(
            "NOTICE: LLM_BRIDGE_TEST_REDIS_URL is unset: the Redis half of this test is skipped"
        );
    }
    url
}

/// A key with `policy`, admitted through `backend`; `None` when that backend is not here.
fn setup(backend: Backend, policy: KeyPolicy, spent: Spent) -> Option<Setup> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(SqliteKeyStore::open(&path).unwrap());
    let managed = ManagedKeys::open(store.clone(), clock.clone()).unwrap();
    let (record, secret) = store.create("team", &policy, clock.now_ms()).unwrap();
    managed.load().unwrap();
    let mut auth = Authenticator::new(Vec::new(), Vec::new()).with_managed(managed);
    if let Backend::Redis = backend {
        let url = redis_url()?;
        let source = Arc::new(move |_: &str| Ok(spent));
        let limits = RedisLimits::new(&url, OnUnavailable::Deny, clock, source).unwrap();
        auth = auth.with_shared_limits(limits, OnUnavailable::Deny);
    }
    let principal = auth.authenticate(Some(secret.expose_secret())).unwrap();
    Some(Setup {
        _dir: dir,
        auth,
        principal,
        key_id: record.id,
    })
}

impl Setup {
    async fn admit(&self, prompt: u64, max_output: u64) -> Result<Admission, ErrorKind> {
        self.auth
            .admit(&self.principal, &["m/x"], prompt, Some(max_output))
            .await
            .map_err(|r| r.error.kind())
    }
}

/// Settlements travel to Redis off the request path: wait until they have arrived.
async fn settled() {
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
}

async fn exactly_rpm_requests_pass_under_concurrency(backend: Backend) {
    let Some(s) = setup(
        backend,
        KeyPolicy {
            rpm: Some(25),
            ..KeyPolicy::default()
        },
        Spent::default(),
    ) else {
        return;
    };
    let tries = (0..100).map(|_| s.admit(1, 0));
    let results = futures_util::future::join_all(tries).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, 25, "{backend:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(ErrorKind::RateLimited)))
    );
    let refused = s
        .auth
        .admit(&s.principal, &["m/x"], 1, Some(0))
        .await
        .unwrap_err();
    assert!(
        refused.error.retry_after().is_some(),
        "{backend:?}: Retry-After"
    );
    let rate = refused.rate.unwrap();
    assert_eq!(rate.limit_requests, Some(25));
    assert_eq!(rate.remaining_requests, Some(0));
}

async fn requests_in_flight_are_capped_and_given_back(backend: Backend) {
    let Some(s) = setup(
        backend,
        KeyPolicy {
            max_concurrent: Some(2),
            ..KeyPolicy::default()
        },
        Spent::default(),
    ) else {
        return;
    };
    let first = s.admit(1, 0).await.unwrap();
    let second = s.admit(1, 0).await.unwrap();
    assert_eq!(s.admit(1, 0).await.unwrap_err(), ErrorKind::RateLimited);
    // Ending a request (settled or dropped) frees its place.
    first.settle(10, 0.0);
    drop(second);
    settled().await;
    let again = s.admit(1, 0).await.unwrap();
    let _also = s.admit(1, 0).await.unwrap();
    assert_eq!(s.admit(1, 0).await.unwrap_err(), ErrorKind::RateLimited);
    drop(again);
}

async fn tokens_per_minute_count_estimates_then_real_use(backend: Backend) {
    let Some(s) = setup(
        backend,
        KeyPolicy {
            tpm: Some(1000),
            ..KeyPolicy::default()
        },
        Spent::default(),
    ) else {
        return;
    };
    // Admitted while the window is below the limit: 0, 400, 800 in; 1200 out.
    let a = s.admit(400, 0).await.unwrap();
    let b = s.admit(400, 0).await.unwrap();
    let c = s.admit(400, 0).await.unwrap();
    assert_eq!(s.admit(400, 0).await.unwrap_err(), ErrorKind::RateLimited);
    // They really used 10 each: the window is at 30, room again.
    a.settle(10, 0.0);
    b.settle(10, 0.0);
    c.settle(10, 0.0);
    settled().await;
    let d = s.admit(400, 0).await.unwrap();
    assert_eq!(d.rate().remaining_tokens, Some(1000 - 430));
}

async fn concurrent_requests_cannot_overspend_a_token_budget(backend: Backend) {
    let Some(s) = setup(
        backend,
        KeyPolicy {
            budget_tokens: Budget {
                total: Some(1000),
                ..Budget::default()
            },
            ..KeyPolicy::default()
        },
        Spent::default(),
    ) else {
        return;
    };
    // Each reserves 100: ten fit, the rest are refused while they run.
    let results = futures_util::future::join_all((0..30).map(|_| s.admit(60, 40))).await;
    let (admitted, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(admitted.len(), 10, "{backend:?}");
    assert!(
        refused
            .iter()
            .all(|r| matches!(r, Err(ErrorKind::QuotaExceeded)))
    );
    let mut admitted: Vec<Admission> = admitted.into_iter().map(Result::unwrap).collect();
    assert!(admitted.iter().all(|a| a.reserved() == 100));
    // A running request asks for more: only what is left is granted.
    let mut last = admitted.pop().unwrap();
    assert_eq!(
        last.extend(50),
        0,
        "nothing left while nine others hold 900"
    );
    // They spend 50 each: 450 spent, 550 free again.
    for a in admitted {
        a.settle(50, 0.0);
    }
    settled().await;
    assert_eq!(
        last.extend(1000),
        450,
        "{backend:?}: 1000 - 450 spent - 100 held"
    );
    last.settle(550, 0.0);
    settled().await;
    assert_eq!(s.admit(1, 0).await.unwrap_err(), ErrorKind::QuotaExceeded);
}

macro_rules! both {
    ($($name:ident),*) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Local).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}

both!(
    exactly_rpm_requests_pass_under_concurrency,
    requests_in_flight_are_capped_and_given_back,
    tokens_per_minute_count_estimates_then_real_use,
    concurrent_requests_cannot_overspend_a_token_budget
);

/// Redis restarted (here: the key's counters deleted): the budget is seeded again from the
/// usage records before the next request is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_counters_lost_by_redis_are_seeded_from_the_records() {
    let spent = Spent {
        day: (900, 0.0),
        month: (900, 0.0),
        total: (900, 0.0),
    };
    let Some(s) = setup(
        Backend::Redis,
        KeyPolicy {
            budget_tokens: Budget {
                total: Some(1000),
                ..Budget::default()
            },
            ..KeyPolicy::default()
        },
        spent,
    ) else {
        return;
    };
    // 900 spent before: a request reserving 100 fits, a second does not.
    let first = s.admit(50, 50).await.unwrap();
    assert_eq!(s.admit(50, 50).await.unwrap_err(), ErrorKind::QuotaExceeded);
    drop(first);
    settled().await;
    let url = std::env::var("LLM_BRIDGE_TEST_REDIS_URL").unwrap();
    let mut conn = ::redis::Client::open(url)
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = ::redis::cmd("DEL")
        .arg(format!("llmb:{{{}}}:spend", s.key_id))
        .query(&mut conn)
        .unwrap();
    let again = s.admit(50, 50).await.unwrap();
    assert_eq!(again.reserved(), 100);
    assert_eq!(
        s.admit(50, 50).await.unwrap_err(),
        ErrorKind::QuotaExceeded,
        "seeded, not zero"
    );
}

/// Redis away: `deny` refuses limited keys with a 503, `local` counts in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_is_503_with_deny_and_local_counting_with_local() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(SqliteKeyStore::open(&path).unwrap());
    let managed = ManagedKeys::open(store.clone(), clock.clone()).unwrap();
    let policy = KeyPolicy {
        rpm: Some(2),
        ..KeyPolicy::default()
    };
    let (_, secret) = store.create("team", &policy, clock.now_ms()).unwrap();
    managed.load().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/0", closed.local_addr().unwrap());
    drop(closed);
    for on_unavailable in [OnUnavailable::Deny, OnUnavailable::Local] {
        let source = Arc::new(|_: &str| Ok(Spent::default()));
        let limits = RedisLimits::new(&url, on_unavailable, clock.clone(), source).unwrap();
        let auth = Authenticator::new(Vec::new(), Vec::new())
            .with_managed(managed.clone())
            .with_shared_limits(limits, on_unavailable);
        let p = auth.authenticate(Some(secret.expose_secret())).unwrap();
        let mut kinds = Vec::new();
        for _ in 0..3 {
            kinds.push(
                auth.admit(&p, &["m/x"], 1, Some(0))
                    .await
                    .map(drop)
                    .map_err(|r| r.error.kind()),
            );
        }
        match on_unavailable {
            OnUnavailable::Deny => {
                assert!(
                    kinds.iter().all(|k| *k == Err(ErrorKind::Unavailable)),
                    "{kinds:?}"
                )
            }
            OnUnavailable::Local => assert_eq!(
                kinds,
                vec![Ok(()), Ok(()), Err(ErrorKind::RateLimited)],
                "the process's own counters"
            ),
        }
        assert_eq!(auth.shared_limits_unavailable(), 3);
    }
}
