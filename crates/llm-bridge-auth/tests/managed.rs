//! Managed keys against a real database file, with an injected clock.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use llm_bridge_auth::{
    Authenticator, Budget, Clock, KeyPolicy, KeyStore, ManagedKeys, ManualClock, Principal,
    SqliteKeyStore,
};
use llm_bridge_core::secrecy::ExposeSecret;

/// 2026-11-26T12:00:00Z
const NOON: i64 = 1_795_694_400_000;

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: ManualClock,
    auth: Authenticator,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db/keys.db");
    let clock = ManualClock::at(NOON);
    let managed = ManagedKeys::open(
        Arc::new(SqliteKeyStore::open(&path).unwrap()),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let auth = Authenticator::new(Vec::new(), Vec::new()).with_managed(managed);
    Setup {
        _dir: dir,
        path,
        clock,
        auth,
    }
}

fn create(s: &Setup, name: &str, policy: KeyPolicy) -> String {
    let store = SqliteKeyStore::open(&s.path).unwrap();
    let (_, key) = store.create(name, &policy, s.clock.now_ms()).unwrap();
    s.auth.managed().unwrap().load().unwrap();
    key.expose_secret().to_owned()
}

fn principal(s: &Setup, key: &str) -> Principal {
    s.auth.authenticate(Some(key)).unwrap()
}

#[test]
fn exactly_rpm_requests_pass_under_concurrency() {
    let s = setup();
    let key = create(
        &s,
        "team",
        KeyPolicy {
            rpm: Some(10),
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    let passed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                if let Ok(a) = s.auth.admit_local(&p, &["m/x"], 1, Some(0)) {
                    passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    a.settle(1, 0.0);
                }
            });
        }
    });
    assert_eq!(passed.into_inner(), 10);
    let refused = s.auth.admit_local(&p, &["m/x"], 1, Some(0)).unwrap_err();
    assert_eq!(refused.error.status(), 429);
    assert_eq!(refused.error.code(), Some("rate_limit_exceeded"));
    assert_eq!(refused.error.retry_after(), Some(Duration::from_secs(60)));
    let rate = refused.rate.unwrap();
    assert_eq!(
        (rate.limit_requests, rate.remaining_requests),
        (Some(10), Some(0))
    );
    // The window slides.
    s.clock.advance_ms(60_001);
    assert!(s.auth.admit_local(&p, &["m/x"], 1, Some(0)).is_ok());
}

#[test]
fn exactly_tpm_worth_of_requests_pass_under_concurrency_and_settle_with_real_usage() {
    let s = setup();
    let key = create(
        &s,
        "tok",
        KeyPolicy {
            tpm: Some(1000),
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    let admitted = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                if let Ok(a) = s.auth.admit_local(&p, &["m/x"], 100, Some(0)) {
                    admitted.lock().unwrap().push(a);
                }
            });
        }
    });
    let admitted = admitted.into_inner().unwrap();
    assert_eq!(
        admitted.len(),
        10,
        "1000 tokens per minute hold ten 100-token estimates"
    );
    let refused = s.auth.admit_local(&p, &["m/x"], 100, Some(0)).unwrap_err();
    assert_eq!(refused.error.status(), 429);
    assert_eq!(refused.rate.unwrap().remaining_tokens, Some(0));
    // Nine requests used nothing after all: their room comes back; the tenth used 250.
    let mut admitted = admitted.into_iter();
    let tenth = admitted.next_back().unwrap();
    for a in admitted {
        a.settle(0, 0.0);
    }
    tenth.settle(250, 0.0);
    let a = s.auth.admit_local(&p, &["m/x"], 100, Some(0)).unwrap();
    assert_eq!(a.rate().remaining_tokens, Some(650));
}

#[test]
fn budgets_reset_at_the_day_and_month_boundaries() {
    let s = setup();
    let key = create(
        &s,
        "budget",
        KeyPolicy {
            budget_tokens: Budget {
                day: Some(1000),
                month: Some(2500),
                total: None,
            },
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    // 2026-11-30, noon: spend the day's budget.
    assert_eq!(
        NOON + 4 * 86_400_000 + 12 * 3_600_000,
        1_796_083_200_000,
        "2026-12-01T00:00Z"
    );
    s.clock.set_ms(NOON + 4 * 86_400_000);
    s.auth
        .admit_local(&p, &["m/x"], 10, Some(0))
        .unwrap()
        .settle(1000, 0.0);
    let refused = s.auth.admit_local(&p, &["m/x"], 10, Some(0)).unwrap_err();
    assert_eq!(refused.error.status(), 429);
    assert_eq!(refused.error.code(), Some("insufficient_quota"));
    assert_eq!(
        refused.error.retry_after(),
        Some(Duration::from_secs(12 * 3600)),
        "until midnight UTC"
    );
    // One millisecond before midnight: still spent. At midnight: a new day.
    s.clock.set_ms(NOON + 4 * 86_400_000 + 12 * 3_600_000 - 1);
    assert!(s.auth.admit_local(&p, &["m/x"], 10, Some(0)).is_err());
    s.clock.advance_ms(1);
    // 2026-12-01: also a new month.
    s.auth
        .admit_local(&p, &["m/x"], 10, Some(0))
        .unwrap()
        .settle(900, 0.0);
    s.clock.advance_ms(86_400_000);
    s.auth
        .admit_local(&p, &["m/x"], 10, Some(0))
        .unwrap()
        .settle(900, 0.0);
    s.clock.advance_ms(86_400_000);
    s.auth
        .admit_local(&p, &["m/x"], 10, Some(0))
        .unwrap()
        .settle(800, 0.0);
    s.clock.advance_ms(86_400_000);
    let monthly = s.auth.admit_local(&p, &["m/x"], 10, Some(0)).unwrap_err();
    assert!(
        monthly.error.message().contains("monthly"),
        "{}",
        monthly.error.message()
    );
}

#[test]
fn cost_and_total_budgets() {
    let s = setup();
    let key = create(
        &s,
        "cost",
        KeyPolicy {
            budget_cost: Budget {
                total: Some(1.0),
                ..Budget::default()
            },
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    s.auth
        .admit_local(&p, &["m/x"], 1, Some(0))
        .unwrap()
        .settle(10, 0.6);
    s.auth
        .admit_local(&p, &["m/x"], 1, Some(0))
        .unwrap()
        .settle(10, 0.6);
    let refused = s.auth.admit_local(&p, &["m/x"], 1, Some(0)).unwrap_err();
    assert_eq!(refused.error.code(), Some("insufficient_quota"));
    assert_eq!(
        refused.error.retry_after(),
        None,
        "a total budget never comes back"
    );
}

#[test]
fn models_expiry_and_revocation() {
    let s = setup();
    let key = create(
        &s,
        "narrow",
        KeyPolicy {
            models: vec!["deepseek/*".into()],
            expires_at: Some(NOON + 1000),
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    assert!(
        s.auth
            .admit_local(&p, &["deepseek/deepseek-chat"], 1, Some(0))
            .is_ok()
    );
    let denied = s
        .auth
        .admit_local(&p, &["gpt-4o", "openai/gpt-4o"], 1, Some(0))
        .unwrap_err();
    assert_eq!(denied.error.status(), 403);
    assert!(
        s.auth
            .admit_local(&p, &["smart", "deepseek/deepseek-chat"], 1, Some(0))
            .is_ok(),
        "either name may match"
    );
    s.clock.advance_ms(1000);
    let expired = s.auth.authenticate(Some(&key)).unwrap_err();
    assert_eq!(
        (expired.status(), expired.message()),
        (401, "API key expired")
    );

    let other = create(&s, "other", KeyPolicy::default());
    assert!(s.auth.authenticate(Some(&other)).is_ok());
    let store = SqliteKeyStore::open(&s.path).unwrap();
    store.revoke("other", s.clock.now_ms()).unwrap();
    s.auth.managed().unwrap().load().unwrap();
    assert_eq!(
        s.auth.authenticate(Some(&other)).unwrap_err().message(),
        "API key revoked"
    );
    assert_eq!(
        s.auth
            .authenticate(Some("sk-llmb-nope"))
            .unwrap_err()
            .status(),
        401
    );
}

#[test]
fn the_database_holds_no_key_only_its_hash() {
    let s = setup();
    let key = create(&s, "secret", KeyPolicy::default());
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(s.path.parent().unwrap()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let needle = key.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the plaintext key is not stored"
    );
    let listed = SqliteKeyStore::open(&s.path).unwrap().list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_prefix, &key[..12]);
    assert!(!serde_json::to_string(&listed[0]).unwrap().contains(&key));
}

#[test]
fn a_change_by_another_process_is_picked_up_by_the_watcher() {
    let s = setup();
    let key = create(&s, "watched", KeyPolicy::default());
    s.auth
        .managed()
        .unwrap()
        .watch(Duration::from_millis(50))
        .unwrap();
    assert!(s.auth.authenticate(Some(&key)).is_ok());
    // Another connection (as `llm-bridge keys revoke` would be) revokes it.
    SqliteKeyStore::open(&s.path)
        .unwrap()
        .revoke("watched", s.clock.now_ms())
        .unwrap();
    let started = std::time::Instant::now();
    while s.auth.authenticate(Some(&key)).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "revocation takes effect within a second"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn budget_reservations_are_capped_by_what_is_left_and_extended_as_spent() {
    let s = setup();
    let key = create(
        &s,
        "reserve",
        KeyPolicy {
            budget_tokens: Budget {
                total: Some(100),
                ..Budget::default()
            },
            ..KeyPolicy::default()
        },
    );
    let p = principal(&s, &key);
    // 20 prompt tokens and no max_tokens: the default cap (4096) would be far more than the
    // budget, so the request reserves what is left, and nothing else fits beside it.
    let mut first = s.auth.admit_local(&p, &["m/x"], 20, None).unwrap();
    assert!(first.has_token_budget());
    assert_eq!(first.reserved(), 100);
    let refused = s.auth.admit_local(&p, &["m/x"], 1, Some(0)).unwrap_err();
    assert_eq!(refused.error.code(), Some("insufficient_quota"));
    assert_eq!(first.extend(50), 0, "nothing left to extend into");
    first.settle(30, 0.0);
    // 70 left: a request asking for 10 output tokens reserves 15, and may extend to 70.
    let mut second = s.auth.admit_local(&p, &["m/x"], 5, Some(10)).unwrap();
    assert_eq!(second.reserved(), 15);
    assert_eq!(second.extend(100), 55);
    assert_eq!(second.reserved(), 70);
    drop(second);
    // Dropped unsettled: its reservation is released.
    let third = s.auth.admit_local(&p, &["m/x"], 5, Some(10)).unwrap();
    assert_eq!(third.reserved(), 15);
    // A key without budgets reserves against nothing and extends freely.
    let free = create(&s, "free", KeyPolicy::default());
    let mut a = s
        .auth
        .admit_local(&principal(&s, &free), &["m/x"], 5, None)
        .unwrap();
    assert!(!a.has_token_budget());
    assert_eq!(a.extend(1_000_000), 1_000_000);
}
