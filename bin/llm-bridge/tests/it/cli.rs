//! The binary as a user runs it: `check`, `models`, `--version`, `.env`, environment
//! overrides, the generated key, and SIGTERM.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::json;
use testkit::process::Spawned;
use testkit::{Client, MockUpstream};

const BINARY: &str = env!("CARGO_BIN_EXE_llm-bridge");

fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(BINARY);
    c.args(args)
        .current_dir(dir)
        .env_remove("ACCESS_API_KEYS")
        .env_remove("LLM_BRIDGE_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run llm-bridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &std::path::Path, yaml: &str) {
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    std::fs::write(dir.join("configs/config.yaml"), yaml).unwrap();
}

#[test]
fn check_reports_precise_config_errors_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "providers:\n  gemini:\n    adapter: openai\n    base_url: https://x\n    models:\n      x: { timeout: fast }\n",
    );
    let (code, _, err) = run(dir.path(), &["check"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("configs/config.yaml: providers.gemini.models.x.timeout: expected a number of seconds, found \"fast\""),
        "{err}"
    );

    write_config(
        dir.path(),
        "providers:\n  p:\n    adapter: carrier-pigeon\n    base_url: https://x\n",
    );
    let (code, _, err) = run(dir.path(), &["check"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("providers.p.adapter: unknown adapter \"carrier-pigeon\""),
        "{err}"
    );

    let (code, _, err) = run(dir.path(), &["--config", "missing.yaml", "check"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.yaml: config file not found"), "{err}");
}

#[test]
fn check_and_models_describe_what_would_be_served() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "providers:\n  deepseek:\n    adapter: openai\n    base_url: https://api.deepseek.com\n    models:\n      deepseek-chat: {}\n",
    );
    let (code, out, err) = run(dir.path(), &["check"], &[("DEEPSEEK_API_KEY", "sk-a,sk-b")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("provider deepseek: adapter openai, https://api.deepseek.com, 2 key(s)"),
        "{out}"
    );
    assert!(out.contains("deepseek/deepseek-chat"), "{out}");
    assert!(!out.contains("sk-a"), "keys are never printed");
    let (code, out, _) = run(dir.path(), &["models"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "deepseek/deepseek-chat");
    // Environment overrides reach the config.
    let (code, out, _) = run(
        dir.path(),
        &["check"],
        &[("LLM_BRIDGE__SERVER__PORT", "4321")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("listen: 127.0.0.1:4321"), "{out}");
    let (code, _, err) = run(dir.path(), &["check"], &[("LLM_BRIDGE__SERVER__PROT", "1")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("LLM_BRIDGE__SERVER__PROT") && err.contains("unknown key 'prot'"),
        "{err}"
    );
}

#[test]
fn version_names_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("llm-bridge {} (", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[tokio::test]
async fn serve_generates_a_key_when_none_is_configured_and_exits_0_on_sigterm() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: {}\n    api_key: k\n    models:\n      x: {{}}\n",
            mock.url()
        ),
    );
    let gw = Spawned::start(BINARY.as_ref(), dir.path(), &["--port", "0"], &[]);
    let output = gw.output();
    let key = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sk-llmb-"))
        .unwrap_or_else(|| panic!("a generated key is printed:\n{output}"))
        .to_owned();
    assert!(output.contains("no ACCESS_API_KEYS configured"));
    assert_eq!(
        output.matches(&key).count(),
        1,
        "printed once, never logged"
    );

    let client = Client::new(&gw.url(), Some(&key));
    let answer = client
        .chat(&json!({"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        Client::new(&gw.url(), Some("sk-other"))
            .get("/v1/models")
            .await
            .status,
        401
    );

    let (status, output) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("llm-bridge stopped"), "{output}");
    assert_eq!(output.matches(&key).count(), 1);
}

#[tokio::test]
async fn dotenv_is_read_and_the_real_environment_wins() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: {}\n    models:\n      x: {{}}\n",
            mock.url()
        ),
    );
    std::fs::write(
        dir.path().join(".env"),
        "ACCESS_API_KEYS=sk-from-dotenv\nM_API_KEY=sk-upstream-from-dotenv\n",
    )
    .unwrap();
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("M_API_KEY", "sk-upstream-from-env")],
    );
    let client = Client::new(&gw.url(), Some("sk-from-dotenv"));
    let answer = client
        .chat(&json!({"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(answer.status, 200, "{}", gw.output());
    assert_eq!(
        mock.last().header("authorization"),
        Some("Bearer sk-upstream-from-env")
    );
    assert!(!gw.output().contains("sk-from-dotenv"));
}

#[tokio::test]
async fn sigterm_mid_load_loses_no_usage_record_and_the_cli_reads_them() {
    let mock = MockUpstream::start().await;
    mock.set_default(testkit::Behavior::Echo(testkit::Echo {
        chunks: 10,
        delay: std::time::Duration::from_millis(30),
        ..testkit::Echo::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: {}\n    api_key: k\n    models:\n      x: {{}}\nserver: {{ drain_timeout: 20 }}\n",
            mock.url()
        ),
    );
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("ACCESS_API_KEYS", "sk-load")],
    );
    let client = Client::new(&gw.url(), Some("sk-load"));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(i * 10)).await;
            let body = json!({"model": "m/x", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "load"}]});
            let request = client
                .request(http::Method::POST, "/v1/chat/completions")
                .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            // Requests sent after shutdown began are refused: they do not count.
            let Ok(Ok(response)) = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http()
                    .request(request),
            )
            .await
            else {
                return false;
            };
            let ok = response.status() == 200;
            let body = http_body_util::BodyExt::collect(response.into_body()).await;
            ok && body.is_ok_and(|b| {
                let b = b.to_bytes();
                b.ends_with(b"data: [DONE]\n\n") || b.ends_with(b"}")
            })
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let (status, output) = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    let mut completed = 0;
    for t in tasks {
        if t.await.unwrap() {
            completed += 1;
        }
    }
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(
        completed > 0,
        "some requests completed before and during the drain"
    );
    let (code, out, err) = run(
        dir.path(),
        &["usage", "--since", "1h", "--by", "model", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["total"]["requests"], completed,
        "every completed request is recorded:\n{output}"
    );
    assert_eq!(report["total"]["errors"], 0);
    assert_eq!(report["data"][0]["group"], "m/x");
    let (code, table, _) = run(dir.path(), &["usage", "--since", "1h", "--by", "key"], &[]);
    assert_eq!(code, 0);
    assert!(table.contains("access-1"), "{table}");
    assert!(
        table.lines().next().unwrap().starts_with("usage from "),
        "{table}"
    );
}

#[tokio::test]
async fn keys_made_by_the_cli_work_on_a_running_server_and_revocation_lands_within_a_second() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "providers:\n  m:\n    adapter: openai\n    base_url: {}\n    api_key: k\n    models:\n      x: {{}}\n      y: {{}}\n",
            mock.url()
        ),
    );
    let gw = Spawned::start(
        BINARY.as_ref(),
        dir.path(),
        &["--port", "0"],
        &[("ACCESS_API_KEYS", "sk-static")],
    );
    let (code, out, err) = run(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci-bot",
            "--models",
            "m/x",
            "--rpm",
            "100",
            "--expires",
            "30d",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sk-llmb-"))
        .unwrap()
        .to_owned();
    assert!(
        out.contains("rpm=100") && out.contains("models=m/x"),
        "{out}"
    );

    // The running server picks the new key up from the database.
    let client = Client::new(&gw.url(), Some(&key));
    let body = json!({"model": "m/x", "messages": [{"role": "user", "content": "hi"}]});
    let mut status = 0;
    for _ in 0..100 {
        status = client.chat(&body).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let other = json!({"model": "m/y", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(client.chat(&other).await.status, 403);

    let (code, list, _) = run(dir.path(), &["keys", "list"], &[]);
    assert_eq!(code, 0);
    assert!(
        list.contains("ci-bot") && list.contains("active") && !list.contains(&key),
        "{list}"
    );
    let (code, _, _) = run(
        dir.path(),
        &[
            "keys", "update", "ci-bot", "--rpm", "none", "--tpm", "100000",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let (code, shown, _) = run(dir.path(), &["keys", "show", "ci-bot"], &[]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert!(shown["rpm"].is_null());
    assert_eq!(shown["tpm"], 100_000);

    let (code, _, _) = run(dir.path(), &["keys", "revoke", "ci-bot"], &[]);
    assert_eq!(code, 0);
    let revoked_at = std::time::Instant::now();
    loop {
        let a = client.chat(&body).await;
        if a.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "revocation took over a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Nowhere in the database is the key itself.
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
    }
    let (code, _, err) = run(dir.path(), &["keys", "create", "--name", "access-1"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("reserved"), "{err}");
    drop(gw);
}
