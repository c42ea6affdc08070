//! Providers answer over HTTP/2 (HTTPS with ALPN), where a connection carries a bounded
//! number of streams at once: the gateway must not make requests wait for that bound.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use testkit::tls::TestCert;
use testkit::{Behavior, Echo, MockUpstream, TestGateway};

/// More streams than one HTTP/2 connection may carry (hyper's server allows 200 at once)
/// all reach an HTTPS upstream before the first of them ends: the gateway opens another
/// connection rather than queue them behind streams that last as long as a model writes.
/// (Before, 200 reached it and 50 waited for those to end.)
#[tokio::test]
async fn streams_beyond_one_http2_connection_bound_go_out_at_once() {
    let cert = TestCert::localhost();
    let mock = MockUpstream::start_tls("127.0.0.1:0", cert.server_config(&[b"h2"])).await;
    mock.set_default(Behavior::Echo(Echo {
        chunks: 1,
        delay: Duration::from_millis(1500),
        ..Echo::default()
    }));
    let gw = TestGateway::start(&format!(
        "providers:\n  up:\n    adapter: openai\n    base_url: \"https://127.0.0.1:{}/v1\"\n    \
         api_key: sk-upstream\n    tls: {{ ca_file: \"{}\" }}\n    models:\n      \"*\": {{}}\n",
        mock.addr().port(),
        cert.ca_file().display()
    ))
    .await;
    let mut body = json!({
        "model": "up/gpt-4o",
        "messages": [{"role": "user", "content": "hello"}],
    });
    // One answer first, so that the gateway holds an HTTP/2 connection to reuse (a burst on
    // none races a connection per request).
    assert_eq!(gw.client.chat(&body).await.status, 200);
    let (before, ended_before) = (mock.request_count(), mock.finished() + mock.cancelled());
    body["stream"] = json!(true);
    let n = 250;
    // How many streams had reached the upstream, and how many had ended, when the last
    // arrived there or the first ended.
    let watch = async {
        loop {
            let arrived = mock.request_count() - before;
            let ended = mock.finished() + mock.cancelled() - ended_before;
            if arrived >= n || ended > 0 {
                return (arrived, ended);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (answers, (arrived, ended)) =
        tokio::join!(join_all((0..n).map(|_| gw.client.chat(&body))), watch);
    assert_eq!(
        (arrived, ended),
        (n, 0),
        "requests that reached the upstream before a stream ended, and streams ended by then"
    );
    for a in &answers {
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.events().last().map(String::as_str), Some("[DONE]"));
    }
    assert!(mock.connections() > 1);
}
