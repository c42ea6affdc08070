//! The router against scripted providers, on tokio's paused clock: which target is tried
//! when, how long it waits, and what it remembers.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use llm_bridge_core::{
    ChatChunk, ChatProvider, ChatRequest, ChatResponse, ChunkStream, Error, ErrorKind,
    ModelCatalog, ModelConfig, Result, RetryConfig, Seconds,
};
use llm_bridge_router::{
    Affinity, CooldownConfig, RouteConfig, Router, RouterConfig, Strategy, TargetSpec, XorShift,
};
use tokio::time::Instant;

/// What a scripted provider does on its next call.
#[derive(Clone, Copy, Debug)]
enum Step {
    Ok,
    Fail(ErrorKind, Option<Duration>),
    /// Takes this long, then answers.
    Slow(Duration),
    /// A stream whose first item is this error.
    StreamFailsFirst(ErrorKind),
    /// A stream that fails after its first chunk.
    StreamFailsLater,
}

struct Scripted {
    name: String,
    catalog: ModelCatalog,
    script: Mutex<VecDeque<Step>>,
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Scripted {
    fn step(&self) -> Step {
        self.calls
            .lock()
            .unwrap()
            .push((self.name.clone(), Instant::now()));
        self.script.lock().unwrap().pop_front().unwrap_or(Step::Ok)
    }
}

fn answer(name: &str) -> ChatResponse {
    ChatResponse {
        body: Bytes::from(format!("{{\"served_by\":\"{name}\"}}")),
    }
}

fn fail(kind: ErrorKind, retry_after: Option<Duration>) -> Error {
    let e = Error::new(kind, "scripted failure");
    match retry_after {
        Some(d) => e.with_retry_after(d),
        None => e,
    }
}

#[async_trait]
impl ChatProvider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }
    async fn chat(&self, _: &str, _: ChatRequest) -> Result<ChatResponse> {
        match self.step() {
            Step::Ok => Ok(answer(&self.name)),
            Step::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(answer(&self.name))
            }
            Step::Fail(kind, after) => Err(fail(kind, after)),
            other => panic!("{other:?} is for streams"),
        }
    }
    async fn chat_stream(&self, _: &str, _: ChatRequest) -> Result<ChunkStream> {
        let chunk = || {
            Ok(ChatChunk {
                data: Bytes::from_static(b"{\"choices\":[]}"),
            })
        };
        let items: Vec<Result<ChatChunk>> = match self.step() {
            Step::Ok | Step::Slow(_) => vec![chunk(), chunk()],
            Step::Fail(kind, after) => return Err(fail(kind, after)),
            Step::StreamFailsFirst(kind) => vec![Err(fail(kind, None))],
            Step::StreamFailsLater => {
                vec![chunk(), Err(fail(ErrorKind::UpstreamUnavailable, None))]
            }
        };
        Ok(Box::pin(futures_util::stream::iter(items)))
    }
}

struct World {
    router: Router,
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
    providers: Vec<Arc<Scripted>>,
}

impl World {
    fn script(&self, provider: usize, steps: &[Step]) {
        self.providers[provider]
            .script
            .lock()
            .unwrap()
            .extend(steps.iter().cloned());
    }

    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

fn retry(attempts: u32, base: f64, max: f64) -> RetryConfig {
    RetryConfig {
        attempts,
        base_delay: Seconds(base),
        max_delay: Seconds(max),
        ..RetryConfig::default()
    }
}

fn world(
    names: &[&str],
    strategy: Strategy,
    retry_config: RetryConfig,
    cooldown: CooldownConfig,
) -> World {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let providers: Vec<Arc<Scripted>> = names
        .iter()
        .map(|n| {
            Arc::new(Scripted {
                name: (*n).into(),
                catalog: ModelCatalog::new(
                    [("m".to_owned(), ModelConfig::default())]
                        .into_iter()
                        .collect(),
                ),
                script: Mutex::new(VecDeque::new()),
                calls: calls.clone(),
            })
        })
        .collect();
    let mut config = RouterConfig {
        retry: retry_config,
        cooldown,
        ..RouterConfig::default()
    };
    config.routes.insert(
        "smart".into(),
        RouteConfig {
            strategy,
            targets: names
                .iter()
                .enumerate()
                .map(|(i, n)| TargetSpec::Weighted {
                    model: format!("{n}/m"),
                    weight: i as u32 + 1,
                })
                .collect(),
            retry: None,
            affinity: Affinity::default(),
        },
    );
    let router = Router::with_random(
        providers
            .iter()
            .map(|p| p.clone() as Arc<dyn ChatProvider>)
            .collect(),
        config,
        Arc::new(XorShift::seeded(7)),
    )
    .unwrap();
    World {
        router,
        calls,
        providers,
    }
}

fn request(model: &str, stream: bool) -> ChatRequest {
    ChatRequest::from_value(serde_json::json!({
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]
    }))
    .unwrap()
}

fn lenient() -> CooldownConfig {
    CooldownConfig {
        failures: 100,
        duration: Seconds(30.0),
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_retries_each_target_then_moves_on() {
    let w = world(
        &["a", "b", "c"],
        Strategy::Fallback,
        retry(2, 1.0, 8.0),
        lenient(),
    );
    w.script(
        0,
        &[
            Step::Fail(ErrorKind::UpstreamUnavailable, None),
            Step::Fail(ErrorKind::UpstreamTimeout, None),
        ],
    );
    w.script(
        1,
        &[
            Step::Fail(ErrorKind::UpstreamRateLimited, None),
            Step::Fail(ErrorKind::UpstreamUnavailable, None),
        ],
    );
    let served = w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(w.calls(), ["a", "a", "b", "b", "c"]);
    assert_eq!(served.target(), "c/m");
    assert_eq!(served.retries, 4);
    assert_eq!(served.route.as_deref(), Some("smart"));
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_stay_within_the_full_jitter_bounds() {
    let w = world(&["a"], Strategy::Fallback, retry(5, 1.0, 3.0), lenient());
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None); 4]);
    w.router.chat(request("a/m", false)).await.unwrap();
    let t = w.times();
    assert_eq!(t.len(), 5);
    for (n, ceiling) in [(0usize, 1.0), (1, 2.0), (2, 3.0), (3, 3.0)] {
        let waited = (t[n + 1] - t[n]).as_secs_f64();
        assert!(
            (0.0..=ceiling).contains(&waited),
            "wait {n}: {waited} s, ceiling {ceiling} s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_the_cap() {
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(2, 1.0, 8.0),
        lenient(),
    );
    w.script(
        0,
        &[Step::Fail(
            ErrorKind::UpstreamRateLimited,
            Some(Duration::from_secs(3)),
        )],
    );
    w.router.chat(request("smart", false)).await.unwrap();
    let t = w.times();
    assert_eq!(w.calls(), ["a", "a"]);
    assert_eq!(t[1] - t[0], Duration::from_secs(3));

    // Asked to wait beyond max_retry_after (10 s): straight to the next target.
    w.clear();
    w.script(
        0,
        &[Step::Fail(
            ErrorKind::UpstreamRateLimited,
            Some(Duration::from_secs(60)),
        )],
    );
    w.router.chat(request("smart", false)).await.unwrap();
    let t = w.times();
    assert_eq!(w.calls(), ["a", "b"]);
    assert_eq!(t[1] - t[0], Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_last_error_is_returned_when_every_attempt_fails() {
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(1, 1.0, 8.0),
        lenient(),
    );
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    w.script(
        1,
        &[Step::Fail(
            ErrorKind::UpstreamRateLimited,
            Some(Duration::from_secs(2)),
        )],
    );
    let e = w.router.chat(request("smart", false)).await.err().unwrap();
    assert_eq!(e.status(), 429);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried_and_target_errors_fall_back_without_retry() {
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(3, 1.0, 8.0),
        lenient(),
    );
    w.script(0, &[Step::Fail(ErrorKind::UpstreamRejected(400), None)]);
    assert_eq!(
        w.router
            .chat(request("smart", false))
            .await
            .err()
            .unwrap()
            .status(),
        400
    );
    assert_eq!(w.calls(), ["a"]);
    w.clear();
    w.script(0, &[Step::Fail(ErrorKind::UpstreamAuth, None)]);
    w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(
        w.calls(),
        ["a", "b"],
        "a rejected key is not retried, but another target is tried"
    );
}

#[tokio::test(start_paused = true)]
async fn streams_are_retried_before_the_first_chunk_never_after() {
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(2, 0.1, 1.0),
        lenient(),
    );
    w.script(0, &[Step::StreamFailsFirst(ErrorKind::UpstreamUnavailable)]);
    let served = w.router.chat_stream(request("smart", true)).await.unwrap();
    assert_eq!(w.calls(), ["a", "a"]);
    assert_eq!(served.value.count().await, 2);

    w.clear();
    w.script(0, &[Step::StreamFailsLater]);
    let served = w.router.chat_stream(request("smart", true)).await.unwrap();
    let items: Vec<_> = served.value.collect().await;
    assert_eq!(items.len(), 2);
    assert!(
        items[0].is_ok() && items[1].is_err(),
        "the error after the first chunk reaches the client"
    );
    assert_eq!(w.calls(), ["a"], "no retry once a chunk was out");
}

#[tokio::test(start_paused = true)]
async fn a_failing_target_cools_down_and_a_half_open_probe_brings_it_back() {
    let cooldown = CooldownConfig {
        failures: 2,
        duration: Seconds(10.0),
    };
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(1, 0.1, 1.0),
        cooldown,
    );
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None); 2]);
    w.router.chat(request("smart", false)).await.unwrap();
    w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(w.calls(), ["a", "b", "a", "b"]);
    // Open: a is skipped.
    w.clear();
    w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(w.calls(), ["b"]);
    // After the cooldown, one request probes a; it fails, so a rests again at once.
    tokio::time::advance(Duration::from_secs(10)).await;
    w.clear();
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    w.router.chat(request("smart", false)).await.unwrap();
    w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(w.calls(), ["a", "b", "b"]);
    // Next probe succeeds: closed again.
    tokio::time::advance(Duration::from_secs(10)).await;
    w.clear();
    for _ in 0..3 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    assert_eq!(w.calls(), ["a", "a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn a_cooled_down_fallback_is_not_lost_when_the_first_target_serves() {
    let cooldown = CooldownConfig {
        failures: 1,
        duration: Seconds(10.0),
    };
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(1, 0.1, 1.0),
        cooldown,
    );
    // b fails once (as the fallback) and rests.
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    w.script(1, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    assert!(w.router.chat(request("smart", false)).await.is_err());
    // a rests too now; both are tried anyway, a serves and closes again.
    tokio::time::advance(Duration::from_secs(11)).await;
    w.router.chat(request("smart", false)).await.unwrap();
    // b's cooldown is over, but a serves every request: b is never probed. Then a fails:
    // b must still be there to fall back to.
    for _ in 0..3 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    w.clear();
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    let served = w.router.chat(request("smart", false)).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&served.value.body).unwrap(),
        "{\"served_by\":\"b\"}"
    );
    assert_eq!(w.calls(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn when_every_target_rests_they_are_tried_anyway() {
    let cooldown = CooldownConfig {
        failures: 1,
        duration: Seconds(60.0),
    };
    let w = world(&["a"], Strategy::Fallback, retry(1, 0.1, 1.0), cooldown);
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    assert!(w.router.chat(request("a/m", false)).await.is_err());
    assert!(w.router.chat(request("a/m", false)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_all_attempts() {
    let mut r = retry(10, 4.0, 4.0);
    r.deadline = Seconds(5.0);
    let w = world(&["a"], Strategy::Fallback, r, lenient());
    w.script(0, &[Step::Fail(ErrorKind::UpstreamUnavailable, None); 10]);
    let started = Instant::now();
    assert!(w.router.chat(request("a/m", false)).await.is_err());
    assert!(started.elapsed() <= Duration::from_secs(5));
    assert!(w.calls().len() < 10);
}

#[tokio::test(start_paused = true)]
async fn round_robin_rotates_the_first_target() {
    let w = world(
        &["a", "b", "c"],
        Strategy::RoundRobin,
        retry(1, 0.1, 1.0),
        lenient(),
    );
    for _ in 0..6 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    assert_eq!(w.calls(), ["a", "b", "c", "a", "b", "c"]);
}

fn in_session(model: &str, session: &str) -> ChatRequest {
    ChatRequest::from_value(serde_json::json!({
        "model": model, "prompt_cache_key": session,
        "messages": [{"role": "user", "content": "x"}]
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_session_stays_on_its_target_while_it_is_healthy() {
    let w = world(
        &["a", "b", "c"],
        Strategy::RoundRobin,
        retry(1, 0.1, 1.0),
        lenient(),
    );
    for _ in 0..6 {
        w.router.chat(in_session("smart", "codex-1")).await.unwrap();
    }
    let calls = w.calls();
    assert!(calls.iter().all(|c| *c == calls[0]), "{calls:?}");
    // Another session is placed by the strategy, and then keeps its own target.
    w.clear();
    w.router.chat(in_session("smart", "codex-2")).await.unwrap();
    w.router.chat(in_session("smart", "codex-2")).await.unwrap();
    let second = w.calls();
    assert_eq!(second[0], second[1]);
    // The pinned target fails: the session moves on, and stays where it landed.
    w.clear();
    let pinned = calls[0].clone();
    let index = ["a", "b", "c"].iter().position(|n| *n == pinned).unwrap();
    w.script(index, &[Step::Fail(ErrorKind::UpstreamUnavailable, None)]);
    w.router.chat(in_session("smart", "codex-1")).await.unwrap();
    w.router.chat(in_session("smart", "codex-1")).await.unwrap();
    let moved = w.calls();
    assert_eq!(moved[0], pinned);
    assert_ne!(moved[1], pinned);
    assert_eq!(moved[2], moved[1], "{moved:?}");
    // Without a session, round robin as before.
    w.clear();
    for _ in 0..3 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    let spread = w.calls();
    assert!(
        spread[0] != spread[1] || spread[1] != spread[2],
        "{spread:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_routes_split_by_weight() {
    let w = world(
        &["a", "b"],
        Strategy::Weighted,
        retry(1, 0.1, 1.0),
        lenient(),
    );
    for _ in 0..3000 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    let b = w.calls().iter().filter(|c| *c == "b").count() as f64;
    // Weights 1 and 2: b gets two thirds (σ ≈ 26 at n = 3000).
    assert!((b - 2000.0).abs() < 120.0, "{b}");
}

#[tokio::test(start_paused = true)]
async fn least_latency_learns_the_fastest_and_keeps_exploring() {
    let w = world(
        &["a", "b"],
        Strategy::LeastLatency,
        retry(1, 0.1, 1.0),
        lenient(),
    );
    w.script(0, &[Step::Slow(Duration::from_millis(500)); 1000]);
    w.script(1, &[Step::Slow(Duration::from_millis(50)); 1000]);
    for _ in 0..300 {
        w.router.chat(request("smart", false)).await.unwrap();
    }
    let calls = w.calls();
    let a = calls.iter().filter(|c| *c == "a").count();
    assert_eq!(
        &calls[..2],
        ["a", "b"],
        "each unmeasured target gets a first sample"
    );
    assert!(a >= 3, "exploration keeps sampling the slow one: {a}");
    assert!(a < 45, "but most requests go to the fast one: {a}");
}

#[tokio::test(start_paused = true)]
async fn names_resolve_and_models_list_aliases_first() {
    let w = world(
        &["a", "b"],
        Strategy::Fallback,
        retry(1, 0.1, 1.0),
        lenient(),
    );
    assert_eq!(w.router.resolve("a/m").unwrap().ids(), ["a/m"]);
    assert_eq!(w.router.resolve("smart").unwrap().ids(), ["a/m", "b/m"]);
    assert_eq!(
        w.router.resolve("a/zzz").unwrap_err().code(),
        Some("model_not_found")
    );
    assert_eq!(
        w.router.resolve("m").unwrap_err().status(),
        404,
        "listed by two providers: ambiguous"
    );
    let ids: Vec<String> = w.router.models().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["smart", "a/m", "b/m"]);
}

#[test]
fn routes_are_validated() {
    let mut config = RouterConfig::default();
    config.routes.insert(
        "bad".into(),
        RouteConfig {
            strategy: Strategy::Fallback,
            targets: vec![TargetSpec::Name("nobody/m".into())],
            retry: None,
            affinity: Affinity::default(),
        },
    );
    let e = Router::new(Vec::new(), config).err().unwrap();
    assert_eq!(e.path(), "routes.bad");
    assert!(
        e.to_string().starts_with("routes.bad: target 'nobody/m'"),
        "{e}"
    );
}
