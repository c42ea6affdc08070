//! Logs as an operator sees them: JSON lines at debug level, one access event per request
//! with the right fields, size-rotated files, and no secret anywhere.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use testkit::process::Spawned;
use testkit::{Behavior, Client, Echo, MockUpstream};

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

const ACCESS_KEY: &str = "sk-access-Zq9secret";
const ADMIN_KEY: &str = "sk-admin-Xw4secret";
const PROVIDER_KEY: &str = "sk-provider-Ty7secret";
const PROXY_PASSWORD: &str = "proxypass-Rk2secret";
const METRICS_TOKEN: &str = "metrics-Vb8secret";

#[tokio::test]
async fn json_logs_have_one_access_event_per_request_rotate_and_hold_no_secret() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs")).unwrap();
    std::fs::write(
        dir.path().join("configs/config.yaml"),
        format!(
            "providers:\n  up:\n    adapter: openai\n    base_url: {url}\n    models:\n      m: {{}}\n\
             proxy:\n  https: \"http://user:{PROXY_PASSWORD}@127.0.0.1:9\"\n\
             metrics: {{ token: {METRICS_TOKEN} }}\nretry: {{ attempts: 1 }}\n\
             logging:\n  format: json\n  level: debug\n  output:\n    console: true\n    file: {{ path: logs/llm-bridge.log, max_size: 6000, backup_count: 2 }}\n",
            url = mock.url()
        ),
    )
    .unwrap();
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[
            ("ACCESS_API_KEYS", ACCESS_KEY),
            ("ADMIN_API_KEYS", ADMIN_KEY),
            ("UP_API_KEY", PROVIDER_KEY),
        ],
    );
    let client = Client::new(&gw.url(), Some(ACCESS_KEY));
    let mut expected: BTreeMap<String, u16> = BTreeMap::new();
    let chat = |id: &str, body: Value, key: &str| {
        let request = client
            .with_key(Some(key))
            .request(http::Method::POST, "/v1/chat/completions")
            .header("x-request-id", id)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let c = client.clone();
        async move { c.call(request).await }
    };
    let msg = |text: &str| json!([{"role": "user", "content": text}]);
    for i in 0..20 {
        let id = format!("mix-json-{i}");
        let a = chat(
            &id,
            json!({"model": "up/m", "messages": msg("hi")}),
            ACCESS_KEY,
        )
        .await;
        assert_eq!(a.status, 200);
        expected.insert(id, 200);
    }
    let a = chat(
        "mix-stream",
        json!({"model": "up/m", "stream": true, "messages": msg("s")}),
        ACCESS_KEY,
    )
    .await;
    assert_eq!(a.status, 200);
    expected.insert("mix-stream".into(), 200);
    let a = chat(
        "mix-401",
        json!({"model": "up/m", "messages": msg("x")}),
        "sk-wrong",
    )
    .await;
    assert_eq!(a.status, 401);
    expected.insert("mix-401".into(), 401);
    let a = chat(
        "mix-404",
        json!({"model": "up/none", "messages": msg("x")}),
        ACCESS_KEY,
    )
    .await;
    assert_eq!(a.status, 404);
    expected.insert("mix-404".into(), 404);
    mock.push(Behavior::json(
        500,
        json!({"error": {"message": "upstream broke"}}),
    ));
    let a = chat(
        "mix-502",
        json!({"model": "up/m", "messages": msg("x")}),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(a.status, 502);
    expected.insert("mix-502".into(), 502);
    // A stream the client abandons.
    mock.push(Behavior::Echo(Echo {
        chunks: 100,
        delay: Duration::from_millis(20),
        ..Echo::default()
    }));
    let request = client
        .request(http::Method::POST, "/v1/chat/completions")
        .header("x-request-id", "mix-cancel")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "up/m", "stream": true, "messages": msg("long")}).to_string(),
        )))
        .unwrap();
    let response = client.send(request).await;
    let mut body = http_body_util::BodyStream::new(response.into_body());
    body.next().await.unwrap().unwrap();
    drop(body);
    mock.wait_cancelled(1).await;
    expected.insert("mix-cancel".into(), 200);
    for (id, path, key) in [
        ("mix-models", "/v1/models", ACCESS_KEY),
        ("mix-usage", "/v1/usage", ADMIN_KEY),
        ("mix-metrics", "/metrics", METRICS_TOKEN),
        ("mix-health", "/healthz", ACCESS_KEY),
    ] {
        let request = client
            .with_key(Some(key))
            .request(http::Method::GET, path)
            .header("x-request-id", id)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(client.call(request).await.status, 200, "{path}");
        expected.insert(id.into(), 200);
    }
    // Let the cancelled stream's estimate finish before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, console) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Rotation: at most backup_count old files, none larger than max_size.
    let logs = dir.path().join("logs");
    let mut files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["llm-bridge.log", "llm-bridge.log.1", "llm-bridge.log.2"],
        "the mix rotated the file"
    );
    let mut file_text = String::new();
    for f in files.iter().rev() {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.len() <= 6000, "{}: {} bytes", f.display(), text.len());
        file_text.push_str(&text);
    }

    // The console saw every line; the files kept the newest ones (the oldest rotated away).
    for (sink, text) in [("console", console.as_str()), ("file", file_text.as_str())] {
        let mut events: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut in_span = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{sink}: not JSON ({e}): {line}"));
            if v["span"]["request_id"].is_string() {
                in_span += 1;
            }
            if v["target"] == "llm_bridge::access" {
                events
                    .entry(v["request_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v);
            }
        }
        assert!(
            in_span > 0,
            "{sink}: lines inside a request carry its request_id"
        );
        for (id, list) in &events {
            assert_eq!(list.len(), 1, "{sink}: exactly one access event for {id}");
        }
        if sink == "console" {
            for (id, status) in &expected {
                let e = &events
                    .get(id)
                    .unwrap_or_else(|| panic!("no access event for {id}"))[0];
                assert_eq!(e["status"], *status, "{id}");
            }
            let ok = &events["mix-json-3"][0];
            for field in [
                "request_id",
                "key",
                "transport",
                "model",
                "provider",
                "upstream_model",
                "stream",
                "status",
                "outcome",
                "latency_ms",
                "upstream_ms",
                "ttft_ms",
                "prompt_tokens",
                "completion_tokens",
                "retries",
            ] {
                assert!(ok.get(field).is_some(), "access event lacks {field}: {ok}");
            }
            assert_eq!(ok["key"], "access-1");
            assert_eq!(ok["outcome"], "ok");
            assert_eq!(ok["prompt_tokens"], 11);
            assert!(ok.get("error").is_none());
            assert!(events["mix-stream"][0]["ttft_ms"].is_number());
            assert_eq!(events["mix-cancel"][0]["outcome"], "cancelled");
            assert_eq!(events["mix-502"][0]["key"], "admin-1");
            assert!(
                events["mix-502"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("upstream broke")
            );
            assert_eq!(events["mix-401"][0]["outcome"], "error");
            assert_eq!(events["mix-health"][0]["level"], "DEBUG");
            // Requests served outside the exchange name the key their handler authenticated.
            assert_eq!(events["mix-models"][0]["key"], "access-1");
            assert_eq!(events["mix-usage"][0]["key"], "admin-1");
            assert!(
                events["mix-health"][0].get("key").is_none(),
                "health checks use no key"
            );
        }
    }

    // No configured secret, anywhere, at any level.
    for secret in [
        ACCESS_KEY,
        ADMIN_KEY,
        PROVIDER_KEY,
        PROXY_PASSWORD,
        METRICS_TOKEN,
        "sk-wrong",
    ] {
        assert!(!console.contains(secret), "console leaks {secret}");
        assert!(!file_text.contains(secret), "log file leaks {secret}");
    }
}
