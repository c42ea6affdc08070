//! The store contract: one suite, run against the embedded SQLite stores and the PostgreSQL
//! stores alike (PostgreSQL from `LLM_BRIDGE_TEST_POSTGRES_URL`, a database per test; the
//! PostgreSQL half is skipped with a notice when it is unset).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_bridge_auth::{
    Authenticator, KeyPolicy, KeyStore, ManagedKeys, SqliteKeyStore, SystemClock,
};
use llm_bridge_core::Usage;
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_postgres::{PgKeyStore, PgResponses, PgUsageReader, PgUsageStore, Postgres};
use llm_bridge_usage::{
    GroupBy, ResponseStore, SqliteResponses, SqliteStore, SqliteUsageReader, StoredResponse,
    UsageQuery, UsageReader, UsageRecord, UsageSource, UsageStore,
};
use testkit::postgres::TestDatabase;

/// One backend's stores. Each call of `instance` is a separate connection (for SQLite) or
/// pool and listener (for PostgreSQL): another gateway instance.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Backend {
    /// SQLite always, PostgreSQL when a test server is configured.
    fn all(test: &str) -> Vec<Backend> {
        let mut b = vec![Backend::Sqlite(tempfile::tempdir().unwrap())];
        if let Some(db) = TestDatabase::create(test) {
            b.push(Backend::Postgres(db));
        }
        b
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn instance(&self) -> Instance {
        match self {
            Backend::Sqlite(dir) => Instance::Sqlite(dir.path().join("llm-bridge.db")),
            Backend::Postgres(db) => {
                Instance::Postgres(Postgres::new(&db.url.clone().into()).unwrap())
            }
        }
    }
}

enum Instance {
    Sqlite(std::path::PathBuf),
    Postgres(Arc<Postgres>),
}

impl Instance {
    fn keys(&self) -> Arc<dyn KeyStore> {
        match self {
            Instance::Sqlite(p) => Arc::new(SqliteKeyStore::open(p).unwrap()),
            Instance::Postgres(pg) => Arc::new(PgKeyStore::new(pg.clone())),
        }
    }

    fn usage(&self) -> Box<dyn UsageStore> {
        match self {
            Instance::Sqlite(p) => Box::new(SqliteStore::open(p).unwrap()),
            Instance::Postgres(pg) => Box::new(PgUsageStore::open(pg.clone()).unwrap()),
        }
    }

    fn reader(&self) -> Arc<dyn UsageReader> {
        match self {
            Instance::Sqlite(p) => Arc::new(SqliteUsageReader::new(p.clone())),
            Instance::Postgres(pg) => Arc::new(PgUsageReader::new(pg.clone())),
        }
    }

    fn responses(&self, ttl: Duration) -> Arc<dyn ResponseStore> {
        match self {
            Instance::Sqlite(p) => Arc::new(SqliteResponses::open(p, ttl).unwrap()),
            Instance::Postgres(pg) => Arc::new(PgResponses::new(pg.clone(), ttl)),
        }
    }
}

const NOW: i64 = 1_795_694_400_000;

#[test]
fn keys_are_created_read_changed_revoked_and_imported_alike() {
    for backend in Backend::all("keys contract") {
        let b = backend.name();
        let store = backend.instance().keys();
        let policy = KeyPolicy {
            rpm: Some(10),
            models: vec!["m/*".into()],
            ..KeyPolicy::default()
        };
        let (team, key) = store.create("team", &policy, NOW).unwrap();
        assert!(key.expose_secret().starts_with(&team.key_prefix), "{b}");
        assert_eq!(team.policy, policy, "{b}");
        assert_eq!((team.created_at, team.updated_at), (NOW, NOW), "{b}");
        assert!(!team.revoked(), "{b}");

        let taken = store
            .create("team", &KeyPolicy::default(), NOW)
            .unwrap_err();
        assert_eq!(taken.status(), 400, "{b}: {taken}");
        assert!(taken.message().contains("exists already"), "{b}: {taken}");
        let reserved = store
            .create("access-1", &KeyPolicy::default(), NOW)
            .unwrap_err();
        assert_eq!(reserved.status(), 400, "{b}");

        assert_eq!(
            store.get("team").unwrap().as_ref(),
            Some(&team),
            "{b}: by name"
        );
        assert_eq!(
            store.get(&team.id).unwrap().as_ref(),
            Some(&team),
            "{b}: by id"
        );
        assert_eq!(store.get("nobody").unwrap(), None, "{b}");

        store.create("Zed", &KeyPolicy::default(), NOW).unwrap();
        store.create("alpha", &KeyPolicy::default(), NOW).unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["Zed", "alpha", "team"], "{b}: byte order of names");

        let changed = KeyPolicy {
            tpm: Some(500),
            ..policy.clone()
        };
        let updated = store.update("team", &changed, NOW + 5).unwrap();
        assert_eq!(
            (updated.policy.tpm, updated.updated_at),
            (Some(500), NOW + 5),
            "{b}"
        );
        assert_eq!(
            store.update("nobody", &changed, NOW).unwrap_err().status(),
            404,
            "{b}"
        );

        let revoked = store.revoke("team", NOW + 10).unwrap();
        assert_eq!(revoked.revoked_at, Some(NOW + 10), "{b}");
        let again = store.revoke(&team.id, NOW + 20).unwrap();
        assert_eq!(again.revoked_at, Some(NOW + 10), "{b}: revoked once");
        assert_eq!(
            store.revoke("nobody", NOW).unwrap_err().status(),
            404,
            "{b}"
        );

        store.touch(&[(team.id.clone(), NOW + 30)]).unwrap();
        store.touch(&[(team.id.clone(), NOW + 25)]).unwrap();
        assert_eq!(
            store.get("team").unwrap().unwrap().last_used_at,
            Some(NOW + 30),
            "{b}: the latest use is kept"
        );

        // A key moved from another store keeps its hash, so the same key still works.
        let mut moved = store.get("team").unwrap().unwrap();
        moved.id = "key_moved".into();
        moved.name = "moved".into();
        moved.key_hash[0] ^= 1;
        store.import(&moved).unwrap();
        assert_eq!(store.get("moved").unwrap(), Some(moved), "{b}");
    }
}

#[test]
fn a_key_created_or_revoked_on_one_instance_applies_on_another_within_a_second() {
    for backend in Backend::all("key changes across instances") {
        let b = backend.name();
        // PostgreSQL's safety-net poll is 30 s here: only NOTIFY can make it in time.
        let every = match backend {
            Backend::Sqlite(_) => Duration::from_millis(250),
            Backend::Postgres(_) => Duration::from_secs(30),
        };
        let (one, two) = (backend.instance(), backend.instance());
        let watched = |i: &Instance| {
            let m = ManagedKeys::open(i.keys(), Arc::new(SystemClock)).unwrap();
            m.watch(every).unwrap();
            Authenticator::new(Vec::new(), Vec::new()).with_managed(m)
        };
        let (auth_one, auth_two) = (watched(&one), watched(&two));
        // Let the PostgreSQL listeners subscribe.
        std::thread::sleep(Duration::from_millis(300));

        let store_one = auth_one.managed().unwrap().store().clone();
        let (_, key) = store_one
            .create("shared", &KeyPolicy::default(), NOW)
            .unwrap();
        let key = key.expose_secret().to_owned();
        // As the admin API does: the writing instance reloads at once.
        auth_one.managed().unwrap().load().unwrap();
        assert!(auth_one.authenticate(Some(&key)).is_ok(), "{b}");
        let within_a_second = |what: &str, ok: &dyn Fn() -> bool| {
            let started = Instant::now();
            while !ok() {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "{b}: {what} within a second"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        within_a_second("a new key accepted on the other instance", &|| {
            auth_two.authenticate(Some(&key)).is_ok()
        });
        let store_two = auth_two.managed().unwrap().store().clone();
        store_two.revoke("shared", NOW).unwrap();
        within_a_second("a revocation applied on the other instance", &|| {
            auth_one.authenticate(Some(&key)).is_err()
        });
        assert_eq!(
            auth_one.authenticate(Some(&key)).unwrap_err().message(),
            "API key revoked",
            "{b}"
        );
    }
}

#[test]
fn a_database_with_a_newer_schema_is_refused() {
    let Some(db) = TestDatabase::create("newer schema refused") else {
        return;
    };
    let pg = Postgres::new(&db.url.clone().into()).unwrap();
    pg.check().unwrap();
    drop(pg);
    db.execute("UPDATE schema_migrations SET version = version + 1 WHERE component = 'usage'")
        .unwrap();
    let pg = Postgres::new(&db.url.clone().into()).unwrap();
    let e = pg.check().unwrap_err();
    assert!(
        e.0.contains("usage schema is version 2, newer than this llm-bridge knows (1)"),
        "{e}"
    );
    let keys = PgKeyStore::new(pg.clone());
    assert!(
        keys.list()
            .unwrap_err()
            .message()
            .contains("newer than this llm-bridge knows"),
        "nothing is read from it either"
    );
}

fn record(i: i64, key: Option<&str>, provider: Option<&str>, model: &str) -> UsageRecord {
    UsageRecord {
        // Spread over three UTC days.
        time_ms: NOW + i * 7_000_000,
        request_id: format!("req-{i}"),
        key: key.map(str::to_owned),
        provider: provider.map(str::to_owned),
        model: Some(model.into()),
        upstream_model: Some(model.into()),
        route: (i % 3 == 0).then(|| "fast".to_owned()),
        transport: if i % 4 == 0 { "ws" } else { "http" }.into(),
        stream: i % 2 == 0,
        status: if i % 5 == 0 { 502 } else { 200 },
        outcome: if i % 5 == 0 { "error" } else { "ok" }.into(),
        usage: Usage {
            cached_tokens: (i % 3) as u64,
            reasoning_tokens: (i % 2) as u64 * 4,
            cache_write_tokens: (i % 4) as u64,
            ..Usage::new(10 + i as u64, 3 * i as u64)
        },
        usage_source: if i % 6 == 0 {
            UsageSource::Estimated
        } else {
            UsageSource::Upstream
        },
        latency_ms: 1.25 * i as f64,
        ttft_ms: (i % 2 == 0).then_some(0.5),
        cost: (i % 3 != 1).then_some(0.25 * i as f64),
    }
}

fn records() -> Vec<UsageRecord> {
    let keys = [Some("alice"), Some("Bob"), None, Some("carol")];
    let providers = [Some("openai"), Some("deepseek"), None];
    let models = ["gpt-4o", "chat", "x"];
    (0..30)
        .map(|i| {
            let i_ = i as usize;
            record(i, keys[i_ % 4], providers[i_ % 3], models[(i_ / 2) % 3])
        })
        .collect()
}

#[test]
fn usage_reports_are_the_same_on_both_backends() {
    let queries: Vec<UsageQuery> = [
        GroupBy::Key,
        GroupBy::Model,
        GroupBy::Provider,
        GroupBy::Day,
        GroupBy::None,
    ]
    .into_iter()
    .flat_map(|group_by| {
        [None, Some("alice".to_owned()), Some("nobody".to_owned())]
            .into_iter()
            .map(move |key| UsageQuery {
                from_ms: NOW + 7_000_000,
                to_ms: NOW + 29 * 7_000_000,
                group_by,
                key,
            })
    })
    .collect();
    let mut reports = Vec::new();
    for backend in Backend::all("usage reports") {
        let instance = backend.instance();
        let mut store = instance.usage();
        let all = records();
        // Two batches, as the writer would send them.
        store.insert(&all[..17]).unwrap();
        store.insert(&all[17..]).unwrap();
        let reader = instance.reader();
        let answers: Vec<_> = queries.iter().map(|q| reader.query(q).unwrap()).collect();
        // What the records say, independently of any backend.
        let by_key = &answers[0];
        let expected: Vec<&UsageRecord> = all
            .iter()
            .filter(|r| r.time_ms >= NOW + 7_000_000 && r.time_ms < NOW + 29 * 7_000_000)
            .collect();
        assert_eq!(
            by_key.total.requests,
            expected.len() as u64,
            "{}",
            backend.name()
        );
        assert_eq!(
            by_key.total.prompt_tokens,
            expected.iter().map(|r| r.usage.prompt_tokens).sum::<u64>()
        );
        let groups: Vec<&str> = by_key.data.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(
            groups,
            ["(none)", "Bob", "alice", "carol"],
            "{}",
            backend.name()
        );
        let days: Vec<&str> = answers[9].data.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(
            days,
            ["2026-11-26", "2026-11-27", "2026-11-28"],
            "{}",
            backend.name()
        );
        assert!(answers[2].data.is_empty(), "a key with no records");
        reports.push((backend.name(), answers, backend));
    }
    if let [(_, sqlite, _), (_, postgres, _)] = &reports[..] {
        for (q, (s, p)) in queries.iter().zip(sqlite.iter().zip(postgres)) {
            assert_eq!(s, p, "{q:?}");
        }
    }
}

#[test]
fn kept_answers_are_put_read_expired_pruned_and_deleted_alike() {
    for backend in Backend::all("kept answers") {
        let b = backend.name();
        let store = backend.instance().responses(Duration::from_secs(60));
        let r = StoredResponse {
            id: "resp_1".into(),
            created_ms: 1_000,
            key: "team".into(),
            input: r#"[{"role":"user","content":"hi"}]"#.into(),
            response: r#"{"id":"resp_1","output":[]}"#.into(),
        };
        store.put(r.clone()).unwrap();
        assert_eq!(store.get("resp_1", 2_000).unwrap(), Some(r.clone()), "{b}");
        let replaced = StoredResponse {
            response: r#"{"id":"resp_1","output":[1]}"#.into(),
            ..r.clone()
        };
        store.put(replaced.clone()).unwrap();
        assert_eq!(store.get("resp_1", 2_000).unwrap(), Some(replaced), "{b}");
        assert_eq!(store.get("resp_1", 61_000).unwrap(), None, "{b}: expired");
        // Another instance reads what this one kept: at once on PostgreSQL, within moments
        // on SQLite (whose writer thread writes behind; this instance reads it at once).
        let other = backend.instance().responses(Duration::from_secs(60));
        let written = std::time::Instant::now();
        while other.get("resp_1", 2_000).unwrap().is_none() {
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "{b}: never written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(store.prune(61_000).unwrap(), 1, "{b}");
        store.put(r).unwrap();
        assert!(store.delete("resp_1").unwrap(), "{b}");
        assert!(!store.delete("resp_1").unwrap(), "{b}");
        assert_eq!(store.get("resp_1", 2_000).unwrap(), None, "{b}");
    }
}

#[test]
fn a_store_call_on_an_async_thread_and_a_store_dropped_there_do_not_panic() {
    let Some(db) = TestDatabase::create("store on an async thread") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = db.url.clone();
    rt.block_on(async move {
        // As at the end of a Responses stream: a synchronous store call on a runtime thread.
        let pg = Postgres::new(&url.into()).unwrap();
        let store = PgResponses::new(pg, Duration::from_secs(60));
        let r = StoredResponse {
            id: "resp_async".into(),
            created_ms: 1_000,
            key: "k".into(),
            input: "[]".into(),
            response: "{}".into(),
        };
        store.put(r.clone()).unwrap();
        assert_eq!(store.get("resp_async", 2_000).unwrap(), Some(r));
        drop(store);
    });
}

/// A TCP relay to PostgreSQL that can be cut (live connections closed, new ones refused)
/// and restored: PostgreSQL going away and coming back, without touching the server.
struct Relay {
    addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    _rt: tokio::runtime::Runtime,
}

impl Relay {
    fn start(target: String) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let mut cuts = cut2.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            up,
            cut,
            _rt: rt,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// `url` with its `host:port` replaced.
fn via(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    let start = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + url[start..].find('/').unwrap();
    let target = url[start..end].to_owned();
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
}

#[test]
fn records_wait_while_postgres_is_away_and_are_written_when_it_returns() {
    let Some(db) = TestDatabase::create("postgres outage") else {
        return;
    };
    let placeholder: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (_, target) = via(&db.url, placeholder);
    let relay = Relay::start(target);
    let (url, _) = via(&db.url, relay.addr);
    let pg = Postgres::new(&url.into()).unwrap();
    let (writer, sink) = llm_bridge_usage::UsageWriter::start(
        Box::new(move || {
            PgUsageStore::open(pg.clone()).map(|s| Box::new(s) as Box<dyn UsageStore>)
        }),
        100,
        Duration::from_millis(50),
    )
    .unwrap();
    let wait_for = |what: &str, ok: &dyn Fn() -> bool, limit: Duration| {
        let started = Instant::now();
        while !ok() {
            assert!(started.elapsed() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let rows = || {
        db.query_text("SELECT COUNT(*)::TEXT FROM usage")
            .unwrap()
            .unwrap()
    };
    sink.record(record(1, Some("a"), Some("p"), "m"));
    wait_for(
        "the first record is written",
        &|| sink.written() == 1,
        Duration::from_secs(5),
    );

    relay.set_up(false);
    sink.record(record(2, Some("a"), Some("p"), "m"));
    sink.record(record(3, Some("a"), Some("p"), "m"));
    wait_for(
        "the failure is noticed",
        &|| !sink.healthy(),
        Duration::from_secs(10),
    );
    assert_eq!(sink.queue_depth(), 2, "both records wait in memory");
    assert_eq!(rows(), "1");

    relay.set_up(true);
    wait_for(
        "the waiting records are written when PostgreSQL is back",
        &|| sink.written() == 3,
        Duration::from_secs(15),
    );
    assert!(sink.healthy());
    assert_eq!(sink.dropped(), 0);
    assert_eq!(rows(), "3");
    assert!(writer.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_key_changed_while_an_instance_lost_postgres_applies_there_when_it_is_back() {
    let Some(db) = TestDatabase::create("key watcher outage") else {
        return;
    };
    let placeholder: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (_, target) = via(&db.url, placeholder);
    let relay = Relay::start(target);
    let (url, _) = via(&db.url, relay.addr);
    let cut_off = Postgres::new(&url.into()).unwrap();
    let managed =
        ManagedKeys::open(Arc::new(PgKeyStore::new(cut_off)), Arc::new(SystemClock)).unwrap();
    // A long safety-net poll: the reconnected listener must trigger the reload.
    managed.watch(Duration::from_secs(30)).unwrap();
    let auth = Authenticator::new(Vec::new(), Vec::new()).with_managed(managed);
    std::thread::sleep(Duration::from_millis(300));

    relay.set_up(false);
    let direct = PgKeyStore::new(Postgres::new(&db.url.clone().into()).unwrap());
    let (_, key) = direct.create("late", &KeyPolicy::default(), NOW).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(auth.authenticate(Some(key.expose_secret())).is_err());
    relay.set_up(true);
    let started = Instant::now();
    while auth.authenticate(Some(key.expose_secret())).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the key made during the outage is loaded once PostgreSQL is back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
