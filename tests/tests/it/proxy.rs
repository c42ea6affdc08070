//! Outbound proxies end to end: the real gateway reaches an HTTPS mock upstream, whose
//! self-signed certificate is trusted through `tls.ca_file`, through in-process `CONNECT`
//! and SOCKS5 proxies that count their connections — and, in CI, through tinyproxy.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use llm_bridge::app::Environment;
use llm_bridge::{App, AppConfig};
use serde_json::{Value, json};
use testkit::proxy::{Target, TestProxy};
use testkit::tls::TestCert;
use testkit::{Answer, MockUpstream, TestGateway};

/// An HTTPS mock upstream on `addr` and the certificate it presents.
async fn https_upstream(addr: &str) -> (MockUpstream, TestCert) {
    let cert = TestCert::localhost();
    let mock = MockUpstream::start_tls(addr, cert.server_config(&[b"h2", b"http/1.1"])).await;
    (mock, cert)
}

/// A config with one provider `up` at `base_url`, with extra provider lines (indented by
/// four spaces) and top-level sections before `providers:`.
fn config(top: &str, base_url: &str, ca_file: Option<&Path>, lines: &str) -> String {
    let tls = ca_file
        .map(|f| format!("    tls: {{ ca_file: \"{}\" }}\n", f.display()))
        .unwrap_or_default();
    format!(
        "{top}providers:\n  up:\n    adapter: openai\n    base_url: \"{base_url}/v1\"\n    \
         api_key: sk-upstream\n{lines}{tls}    models:\n      \"*\": {{}}\n"
    )
}

async fn chat(gw: &TestGateway, stream: bool) -> Answer {
    gw.client
        .chat(&json!({
            "model": "up/gpt-4o",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": stream
        }))
        .await
}

/// A JSON chat and a stream both succeed, with the mock's echo.
async fn chat_and_stream(gw: &TestGateway) {
    let a = chat(gw, false).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["choices"][0]["message"]["content"], "echo: hello");
    let s = chat(gw, true).await;
    assert_eq!(s.status, 200, "{}", String::from_utf8_lossy(&s.body));
    let events = s.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "echo: hello");
}

fn error_message(a: &Answer) -> String {
    a.json()["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connect_proxy_carries_chat_and_stream() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::http(None).await;
    let port = mock.addr().port();
    let gw = TestGateway::start(&config(
        &format!("proxy: {{ https: \"{}\", http: \"\" }}\n", proxy.url()),
        &format!("https://localhost:{port}"),
        Some(cert.ca_file()),
        "    requires_proxy: true\n",
    ))
    .await;
    chat_and_stream(&gw).await;
    assert!(proxy.tunnels() >= 1, "the proxy made no tunnel");
    assert_eq!(proxy.connections(), proxy.tunnels());
    assert!(
        proxy
            .targets()
            .iter()
            .all(|t| *t == Target::Domain("localhost".into(), port)),
        "{:?}",
        proxy.targets()
    );
    assert_eq!(mock.request_count(), 2);
    // Pooled: both requests share the tunnel (HTTP/2 with the mock).
    assert_eq!(mock.connections(), proxy.tunnels());
}

#[tokio::test]
async fn connect_proxy_with_credentials_from_the_provider_override() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::http(Some(("alice", "s3cret"))).await;
    let base = format!("https://127.0.0.1:{}", mock.addr().port());
    let url = proxy.url_as("http", Some(("alice", "s3cret")));
    let gw = TestGateway::start(&config(
        // The section's proxy is wrong on purpose: the provider's own wins.
        "proxy: { https: \"http://127.0.0.1:9\" }\n",
        &base,
        Some(cert.ca_file()),
        &format!("    requires_proxy: true\n    proxy: \"{url}\"\n"),
    ))
    .await;
    chat_and_stream(&gw).await;
    assert!(proxy.tunnels() >= 1);
}

#[tokio::test]
async fn wrong_proxy_credentials_give_a_502_naming_the_proxy() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::http(Some(("alice", "s3cret"))).await;
    let url = proxy.url_as("http", Some(("alice", "wrong-pass")));
    let gw = TestGateway::start(&config(
        "",
        &format!("https://127.0.0.1:{}", mock.addr().port()),
        Some(cert.ca_file()),
        &format!("    proxy: \"{url}\"\n"),
    ))
    .await;
    for stream in [false, true] {
        let a = chat(&gw, stream).await;
        assert_eq!(a.status, 502);
        assert_eq!(a.json()["error"]["type"], "upstream_error");
        let message = error_message(&a);
        assert_eq!(
            message,
            format!(
                "could not connect through proxy {}: proxy refused CONNECT (407 Proxy Authentication Required)",
                proxy.url()
            )
        );
        assert!(!message.contains("wrong-pass") && !message.contains("alice"));
    }
    assert_eq!(proxy.tunnels(), 0);
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn https_proxy_is_reached_over_tls() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    // The proxy presents the same test certificate, trusted through the same file.
    let proxy = TestProxy::https(cert.server_config(&[b"http/1.1"]), None).await;
    let gw = TestGateway::start(&config(
        &format!("proxy: {{ https: \"{}\" }}\n", proxy.url()),
        &format!("https://127.0.0.1:{}", mock.addr().port()),
        Some(cert.ca_file()),
        "    requires_proxy: true\n",
    ))
    .await;
    chat_and_stream(&gw).await;
    assert!(proxy.tunnels() >= 1);
}

/// The address `localhost` resolves to first, where the gateway's own lookup connects.
async fn localhost() -> String {
    let first = tokio::net::lookup_host("localhost:0")
        .await
        .unwrap()
        .next()
        .unwrap();
    first.to_string()
}

#[tokio::test]
async fn socks5_resolves_the_upstream_name_locally() {
    let (mock, cert) = https_upstream(&localhost().await).await;
    let proxy = TestProxy::socks5(None).await;
    let gw = TestGateway::start(&config(
        "",
        &format!("https://localhost:{}", mock.addr().port()),
        Some(cert.ca_file()),
        // A provider's own proxy needs no requires_proxy.
        &format!("    proxy: \"{}\"\n", proxy.url_as("socks5", None)),
    ))
    .await;
    chat_and_stream(&gw).await;
    assert!(proxy.tunnels() >= 1);
    assert!(
        proxy
            .targets()
            .iter()
            .all(|t| *t == Target::Address(mock.addr())),
        "{:?}",
        proxy.targets()
    );
}

#[tokio::test]
async fn socks5h_lets_the_proxy_resolve_and_authenticates() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::socks5(Some(("alice", "s3cret"))).await;
    let port = mock.addr().port();
    let gw = TestGateway::start(&config(
        &format!(
            "proxy: {{ https: \"{}\" }}\n",
            proxy.url_as("socks5h", Some(("alice", "s3cret")))
        ),
        &format!("https://localhost:{port}"),
        Some(cert.ca_file()),
        "    requires_proxy: true\n",
    ))
    .await;
    chat_and_stream(&gw).await;
    assert!(proxy.tunnels() >= 1);
    assert!(
        proxy
            .targets()
            .iter()
            .all(|t| *t == Target::Domain("localhost".into(), port)),
        "{:?}",
        proxy.targets()
    );
}

#[tokio::test]
async fn wrong_socks_credentials_give_a_502_naming_the_proxy() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::socks5(Some(("alice", "s3cret"))).await;
    let gw = TestGateway::start(&config(
        "",
        &format!("https://localhost:{}", mock.addr().port()),
        Some(cert.ca_file()),
        &format!(
            "    proxy: \"{}\"\n",
            proxy.url_as("socks5h", Some(("alice", "wrong-pass")))
        ),
    ))
    .await;
    let a = chat(&gw, false).await;
    assert_eq!(a.status, 502);
    let message = error_message(&a);
    assert_eq!(
        message,
        format!(
            "could not connect through proxy socks5h://{}: the SOCKS5 proxy rejected the user name or password",
            proxy.addr()
        )
    );
    assert!(!message.contains("wrong-pass") && !message.contains("alice"));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn environment_proxy_applies_unless_no_proxy_exempts_the_host() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::http(None).await;
    let yaml = config(
        "",
        &format!("https://localhost:{}", mock.addr().port()),
        Some(cert.ca_file()),
        "",
    );
    // No proxy in the config: HTTPS_PROXY applies to every provider.
    let gw = TestGateway::start_with(&yaml, &[("HTTPS_PROXY", &proxy.url())]).await;
    chat_and_stream(&gw).await;
    let tunnels = proxy.tunnels();
    assert!(tunnels >= 1);
    drop(gw);

    // NO_PROXY (here in lower case, as many shells set it) sends it direct.
    let gw = TestGateway::start_with(
        &yaml,
        &[
            ("https_proxy", &proxy.url()),
            ("no_proxy", "example.com, localhost"),
        ],
    )
    .await;
    chat_and_stream(&gw).await;
    assert_eq!(proxy.tunnels(), tunnels, "NO_PROXY was not honoured");
    assert_eq!(mock.request_count(), 4);

    // `proxy: none` on the provider opts out too.
    let yaml = config(
        "",
        &format!("https://localhost:{}", mock.addr().port()),
        Some(cert.ca_file()),
        "    proxy: none\n",
    );
    let gw = TestGateway::start_with(&yaml, &[("HTTPS_PROXY", &proxy.url())]).await;
    chat_and_stream(&gw).await;
    assert_eq!(proxy.tunnels(), tunnels);
}

#[tokio::test]
async fn a_dead_proxy_gives_a_quick_502() {
    let (mock, cert) = https_upstream("127.0.0.1:0").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw = TestGateway::start(&config(
        &format!("proxy: {{ https: \"http://user:s3cret@127.0.0.1:{port}\" }}\n"),
        &format!("https://localhost:{}", mock.addr().port()),
        Some(cert.ca_file()),
        "    requires_proxy: true\n",
    ))
    .await;
    for stream in [false, true] {
        let started = Instant::now();
        let a = chat(&gw, stream).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(a.status, 502);
        let message = error_message(&a);
        assert!(
            message.starts_with(&format!(
                "could not connect through proxy http://127.0.0.1:{port}: cannot reach the proxy"
            )),
            "{message}"
        );
        assert!(
            !message.contains("s3cret") && !message.contains("user:"),
            "{message}"
        );
    }
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn the_upstream_certificate_is_verified_through_the_proxy() {
    let (mock, _cert) = https_upstream("127.0.0.1:0").await;
    let proxy = TestProxy::http(None).await;
    let gw = TestGateway::start(&config(
        &format!("proxy: {{ https: \"{}\" }}\n", proxy.url()),
        &format!("https://localhost:{}", mock.addr().port()),
        None,
        "    requires_proxy: true\n",
    ))
    .await;
    let a = chat(&gw, false).await;
    assert_eq!(a.status, 502);
    let message = error_message(&a);
    assert!(message.contains("certificate"), "{message}");
    // The tunnel was made; the gateway refused the upstream it led to.
    assert!(proxy.tunnels() >= 1);
    assert_eq!(mock.request_count(), 0);
}

fn build_error(yaml: &str, vars: &[(&str, &str)]) -> String {
    let config = AppConfig::from_yaml(yaml).unwrap();
    let mut env = Environment::default();
    for (k, v) in vars {
        env.vars.insert((*k).into(), (*v).to_owned().into());
    }
    match App::build(&config, &env) {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn configuration_mistakes_are_startup_errors() {
    let base = "https://api.example.com";
    let e = build_error(&config("", base, None, "    requires_proxy: true\n"), &[]);
    assert_eq!(
        e,
        "providers.up.requires_proxy: true, but no proxy is configured for https:// upstreams: \
         set proxy.https, providers.up.proxy or HTTPS_PROXY"
    );
    let e = build_error(
        &config("", base, None, "    proxy: \"socks4://u:s3cret@h:1\"\n"),
        &[],
    );
    assert!(
        e.starts_with("providers.up.proxy: unsupported proxy scheme 'socks4'"),
        "{e}"
    );
    assert!(!e.contains("s3cret"));
    let e = build_error(&config("proxy: { https: \"h:1\" }\n", base, None, ""), &[]);
    assert!(e.starts_with("proxy.https: expected a URL"), "{e}");
    let e = build_error(&config("", base, None, ""), &[("HTTPS_PROXY", "ftp://h")]);
    assert!(e.starts_with("environment variable HTTPS_PROXY"), "{e}");
    let e = build_error(
        &config("", base, Some(Path::new("/nonexistent/ca.pem")), ""),
        &[],
    );
    assert!(
        e.starts_with("providers.up.tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
    let e = build_error(
        &config("tls: { ca_file: /nonexistent/ca.pem }\n", base, None, ""),
        &[],
    );
    assert!(e.starts_with("tls.ca_file: cannot read"), "{e}");
}

/// Through a real proxy: tinyproxy, started by `.ci/run` with `BasicAuth` and given here as
/// `LLM_BRIDGE_TINYPROXY=http://user:password@127.0.0.1:port`, allowing `CONNECT` only to
/// `LLM_BRIDGE_TINYPROXY_UPSTREAM_PORT`, where the mock listens.
#[tokio::test]
#[ignore = "needs tinyproxy: run by .ci/run"]
async fn tinyproxy() {
    let url = std::env::var("LLM_BRIDGE_TINYPROXY").expect("LLM_BRIDGE_TINYPROXY is set");
    let port: u16 = std::env::var("LLM_BRIDGE_TINYPROXY_UPSTREAM_PORT")
        .expect("LLM_BRIDGE_TINYPROXY_UPSTREAM_PORT is set")
        .parse()
        .unwrap();
    let (mock, cert) = https_upstream(&format!("127.0.0.1:{port}")).await;
    let base = format!("https://127.0.0.1:{port}");
    let gw = TestGateway::start(&config(
        &format!("proxy: {{ https: \"{url}\" }}\n"),
        &base,
        Some(cert.ca_file()),
        "    requires_proxy: true\n",
    ))
    .await;
    chat_and_stream(&gw).await;
    assert_eq!(mock.request_count(), 2);

    // Without the credentials, tinyproxy answers 407 and the gateway a 502 naming it.
    let (credentials, host_port) = url
        .trim_start_matches("http://")
        .rsplit_once('@')
        .expect("credentials in the URL");
    let bare = format!("http://{host_port}");
    let gw = TestGateway::start(&config(
        "",
        &base,
        Some(cert.ca_file()),
        &format!("    proxy: \"{bare}\"\n"),
    ))
    .await;
    let a = chat(&gw, false).await;
    assert_eq!(a.status, 502);
    let message = error_message(&a);
    assert!(
        message.contains(&format!("could not connect through proxy {bare}")),
        "{message}"
    );
    assert!(message.contains("407"), "{message}");
    assert!(!message.contains(credentials), "{message}");
    assert_eq!(mock.request_count(), 2);
}
