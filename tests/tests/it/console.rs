//! The console's server side over real sockets: signing in (cookie attributes, wrong keys
//! rate-limited, CSRF and cross-site refusals, sign-out), the admin endpoints it reads
//! (overview, usage and CSV, status without secrets, live events), `console.enabled: false`,
//! and the < 50 ms budget of the overview and usage endpoints over 100,000 usage records.
//! The page itself is driven in a real browser by tests/console/run.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use llm_bridge_core::Usage;
use llm_bridge_usage::{SqliteStore, UsageRecord, UsageSource, UsageStore};
use serde_json::{Value, json};
use testkit::{ADMIN_KEY, Answer, Client, MockUpstream, TEST_KEY, TestGateway, openai_provider};

fn config(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "providers:\n{}\nroutes:\n  smart: {{ strategy: fallback, targets: [up/m, up/other] }}\nproxy: {{ https: \"http://proxyuser:proxy-secret-pw@127.0.0.1:9\" }}\n{extra}",
        openai_provider("up", &mock.url(), "      m: {}\n      other: {}\n")
    )
}

/// `POST /console/session` with these headers.
async fn sign_in(client: &Client, key: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = client
        .request(Method::POST, "/console/session")
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    client
        .call(
            b.body(Full::new(Bytes::from(json!({"key": key}).to_string())))
                .unwrap(),
        )
        .await
}

/// A request with the session cookie (and whatever else).
async fn with_cookie(
    client: &Client,
    method: Method,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut b = client
        .request(method, path)
        .header("cookie", format!("llmb_console={cookie}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    client.call(b.body(Full::new(body)).unwrap()).await
}

fn cookie_of(answer: &Answer) -> (String, String) {
    let set = answer
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    let token = set
        .strip_prefix("llmb_console=")
        .and_then(|r| r.split(';').next())
        .unwrap()
        .to_owned();
    (token, set)
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_sign_out() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config(&mock, "")).await;
    let anon = gw.client.with_key(None);

    // The page and its assets, with no wildcard CORS and a strict CSP.
    let page = anon.get("/console").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("/console/app.js"));
    assert!(page.header("access-control-allow-origin").is_none());
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    for asset in ["/console/app.js", "/console/app.css"] {
        let a = anon.get(asset).await;
        assert_eq!(a.status, 200, "{asset}");
        assert!(a.header("access-control-allow-origin").is_none());
    }
    assert_eq!(anon.get("/console/session").await.status, 401);

    // An access key is not an admin key.
    let refused = sign_in(&anon, TEST_KEY, &[]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.header("set-cookie").is_none());
    // A cross-site sign-in is refused before the key is even looked at.
    let cross = sign_in(&anon, ADMIN_KEY, &[("origin", "http://evil.example")]).await;
    assert_eq!(cross.status, 403);
    assert_eq!(cross.error_code(), "cross_site_request");

    // The admin key opens a session: an HttpOnly, SameSite=Strict cookie with an expiry.
    let ok = sign_in(&anon, ADMIN_KEY, &[]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let (cookie, set) = cookie_of(&ok);
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Max-Age=43200"), "{set}");
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    assert!(!set.contains(ADMIN_KEY));
    let csrf = ok.json()["csrf_token"].as_str().unwrap().to_owned();
    assert!(csrf.len() >= 32);
    // Behind a TLS-terminating proxy the cookie is Secure.
    let tls = sign_in(&anon, ADMIN_KEY, &[("x-forwarded-proto", "https")]).await;
    assert!(cookie_of(&tls).1.contains("; Secure"));

    // Reading with the cookie works; the session endpoint gives the CSRF token back.
    let session = with_cookie(&anon, Method::GET, "/console/session", &cookie, &[], None).await;
    assert_eq!(session.json()["csrf_token"], csrf.as_str());
    let keys = with_cookie(&anon, Method::GET, "/admin/keys", &cookie, &[], None).await;
    assert_eq!(keys.status, 200);
    assert!(keys.header("access-control-allow-origin").is_none());
    // A wrong cookie is no session.
    let forged = with_cookie(&anon, Method::GET, "/admin/keys", "0000", &[], None).await;
    assert_eq!(forged.status, 401);

    // Changes need the CSRF token, and no other site's Origin.
    let body = json!({"name": "from-console", "rpm": 5});
    let no_token = with_cookie(
        &anon,
        Method::POST,
        "/admin/keys",
        &cookie,
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(no_token.status, 403);
    assert_eq!(no_token.error_code(), "csrf_token_invalid");
    let cross_site = with_cookie(
        &anon,
        Method::POST,
        "/admin/keys",
        &cookie,
        &[("x-csrf-token", &csrf), ("origin", "http://evil.example")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(cross_site.error_code(), "cross_site_request");
    let fetch_site = with_cookie(
        &anon,
        Method::POST,
        "/admin/keys",
        &cookie,
        &[("x-csrf-token", &csrf), ("sec-fetch-site", "cross-site")],
        Some(body.clone()),
    )
    .await;
    assert_eq!(fetch_site.status, 403);
    let host = gw.url().trim_start_matches("http://").to_owned();
    let origin = format!("http://{host}");
    let created = with_cookie(
        &anon,
        Method::POST,
        "/admin/keys",
        &cookie,
        &[("x-csrf-token", &csrf), ("origin", &origin)],
        Some(body),
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert!(
        created.json()["key"]
            .as_str()
            .unwrap()
            .starts_with("sk-llmb-")
    );
    let listed = with_cookie(&anon, Method::GET, "/admin/keys", &cookie, &[], None).await;
    assert_eq!(listed.json()["data"][0]["name"], "from-console");

    // Sign out: the cookie is cleared and the session is gone.
    let out = with_cookie(
        &anon,
        Method::DELETE,
        "/console/session",
        &cookie,
        &[("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = with_cookie(&anon, Method::GET, "/admin/keys", &cookie, &[], None).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.error_code(), "not_signed_in");

    // Wrong keys are rate-limited per client address: five a minute, then 429 even for
    // the right key.
    for _ in 0..4 {
        assert_eq!(sign_in(&anon, "sk-wrong", &[]).await.status, 401);
    }
    let limited = sign_in(&anon, ADMIN_KEY, &[]).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config(&mock, "console: { enabled: false }\n")).await;
    let anon = gw.client.with_key(None);
    assert_eq!(anon.get("/console").await.status, 404);
    assert_eq!(sign_in(&anon, ADMIN_KEY, &[]).await.status, 404);
    // The admin API itself stays, for bearer admin keys.
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    assert_eq!(admin.get("/admin/overview").await.status, 200);
    assert_eq!(gw.client.get("/admin/overview").await.status, 403);
}

#[tokio::test]
async fn overview_usage_status_and_live_events() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config(&mock, "")).await;
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    // Not for access keys.
    assert_eq!(gw.client.get("/admin/status").await.status, 403);
    assert_eq!(gw.client.get("/admin/events").await.status, 403);

    // Listen to live events with a filter, then make requests.
    let request = admin
        .request(Method::GET, "/admin/events?model=up/m&status=2xx")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = admin.send(request).await;
    assert_eq!(events.status(), 200);
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = events.into_body();
    let chat = json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.client.chat(&chat).await.status, 200);
    let unknown = json!({"model": "up/nope", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.client.chat(&unknown).await.status, 404);
    assert_eq!(gw.client.chat(&chat).await.status, 200);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches("event: access").count() < 2 && Instant::now() < deadline {
        let frame = tokio::time::timeout(Duration::from_secs(10), events.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let data: Vec<Value> = testkit::sse_data(text.as_bytes())
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data.len(), 2, "{text}");
    let key_name = data[0]["key"].as_str().unwrap().to_owned();
    for e in &data {
        assert_eq!(e["status"], 200, "the 404 is filtered out: {text}");
        assert_eq!(e["key"], key_name.as_str());
        assert_eq!(e["model"], "up/m");
        assert!(e["prompt_tokens"].as_u64().unwrap() > 0);
    }
    drop(events);

    // The records reach the overview and usage once written.
    let mut overview = Value::Null;
    for _ in 0..100 {
        overview = admin.get("/admin/overview?range=hour").await.json();
        if overview["total"]["requests"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(overview["total"]["requests"], 3, "{overview}");
    assert_eq!(overview["total"]["errors"], 1);
    assert_eq!(overview["buckets"].as_array().unwrap().len(), 12);
    assert!(overview["total"]["latency_p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(overview["top_keys"][0]["name"], key_name.as_str());
    assert_eq!(overview["top_models"][0]["name"], "up/m");
    assert_eq!(overview["top_models"][0]["requests"], 2);
    assert_eq!(admin.get("/admin/overview?range=year").await.status, 400);

    let usage = admin
        .get("/admin/usage?group_by=model&from=1d")
        .await
        .json();
    assert_eq!(usage["total"]["requests"], 3);
    let csv = admin
        .get("/admin/usage?group_by=key&from=1d&format=csv")
        .await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = String::from_utf8_lossy(&csv.body).into_owned();
    assert!(csv.starts_with("group,requests,errors,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{key_name},3,1,"))),
        "{csv}"
    );

    // Status: models, key prefixes only, routes with health, proxies without credentials.
    let status = admin.get("/admin/status").await;
    let text = String::from_utf8_lossy(&status.body).into_owned();
    assert!(
        !text.contains("sk-upstream-up"),
        "a provider key leaked: {text}"
    );
    assert!(
        !text.contains("proxy-secret-pw"),
        "a proxy password leaked: {text}"
    );
    assert!(!text.contains("proxyuser"), "a proxy user leaked: {text}");
    let status = status.json();
    let up = &status["providers"][0];
    assert_eq!(up["name"], "up");
    assert_eq!(up["models"], json!(["m", "other"]));
    assert_eq!(up["key_prefixes"], json!(["sk-…"]));
    assert_eq!(up["targets"][0]["target"], "up/m");
    assert_eq!(up["targets"][0]["state"], "ready");
    assert_eq!(up["targets"][0]["requests_last_hour"], 2);
    assert_eq!(status["routes"][0]["alias"], "smart");
    assert_eq!(status["routes"][0]["targets"][1]["target"], "up/other");
    assert_eq!(status["proxies"][0]["url"], "http://127.0.0.1:9");
    assert_eq!(status["proxies"][0]["has_credentials"], true);
}

fn record(i: u64, now: i64) -> UsageRecord {
    let keys = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let models = ["gpt-4o", "gpt-4o-mini", "deepseek-chat", "gemini-2.5-flash"];
    // Six days: the week's overview ends at the next 6-hour boundary.
    let span = 6 * 86_400_000;
    UsageRecord {
        time_ms: now - span + (i as i64 * span / 100_000),
        request_id: format!("req_{i:08}"),
        key: Some(keys[(i % 8) as usize].to_owned()),
        provider: Some(if i % 3 == 0 { "deepseek" } else { "openai" }.to_owned()),
        model: Some(models[(i % 4) as usize].to_owned()),
        upstream_model: None,
        route: None,
        transport: "http".into(),
        stream: i % 2 == 0,
        status: if i % 50 == 0 { 502 } else { 200 },
        outcome: if i % 50 == 0 { "error" } else { "ok" }.into(),
        usage: Usage::new(100 + i % 900, 20 + i % 300),
        usage_source: UsageSource::Upstream,
        latency_ms: 200.0 + (i % 1000) as f64,
        ttft_ms: (i % 2 == 0).then_some(80.0 + (i % 400) as f64),
        cost: Some(0.0001 * (i % 10) as f64),
    }
}

/// Every overview and usage answer within 50 ms over 100,000 records spread over the week
/// (the median of five runs after a warm-up, measured from the client).
#[tokio::test]
async fn overview_and_usage_answer_within_50_ms_over_100k_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("usage.db");
    let now = llm_bridge_usage::time::now_ms();
    {
        let mut store = SqliteStore::open(&db).unwrap();
        let records: Vec<UsageRecord> = (0..100_000).map(|i| record(i, now)).collect();
        for chunk in records.chunks(10_000) {
            store.insert(chunk).unwrap();
        }
    }
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config(
        &mock,
        &format!("usage: {{ database: \"{}\" }}\n", db.display()),
    ))
    .await;
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    let week = admin.get("/admin/overview?range=week").await.json();
    assert_eq!(
        week["total"]["requests"], 100_000,
        "every record is counted"
    );
    assert_eq!(week["total"]["errors"], 2_000);
    assert_eq!(week["top_keys"].as_array().unwrap().len(), 5);
    let all = admin.get("/admin/usage?group_by=key&from=30d").await.json();
    assert_eq!(all["total"]["requests"], 100_000);
    assert_eq!(all["data"].as_array().unwrap().len(), 8);

    let mut report = Vec::new();
    for path in [
        "/admin/overview?range=hour",
        "/admin/overview?range=day",
        "/admin/overview?range=week",
        "/admin/usage?group_by=key&from=30d",
        "/admin/usage?group_by=model&from=30d",
        "/admin/usage?group_by=provider&from=30d",
        "/admin/usage?group_by=day&from=30d",
        "/admin/usage?group_by=day&from=30d&format=csv",
        "/admin/status",
    ] {
        assert_eq!(admin.get(path).await.status, 200, "{path}");
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let answer = admin.get(path).await;
            times.push(started.elapsed());
            assert_eq!(answer.status, 200);
        }
        times.sort();
        let median = times[2];
        report.push(format!("{path}: {:.1} ms", median.as_secs_f64() * 1000.0));
        assert!(
            median < Duration::from_millis(50),
            "{path} took {median:?} (median of 5) over 100,000 records"
        );
    }
    println!("{}", report.join("\n"));
}

/// An open live view does not hold up a graceful shutdown: its stream ends when shutdown
/// begins, not at the drain timeout.
#[tokio::test]
async fn an_open_live_view_ends_at_shutdown() {
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(&config(&mock, "server: { drain_timeout: 20 }\n")).await;
    let admin = gw.client.with_key(Some(ADMIN_KEY));
    let request = admin
        .request(Method::GET, "/admin/events")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut events = admin.send(request).await.into_body();
    let first = events.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b": connected\n\n");
    let started = Instant::now();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = events.frame().await {} });
    gw.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for the live view",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the event stream ended")
        .unwrap();
}
