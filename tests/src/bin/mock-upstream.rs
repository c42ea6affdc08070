//! A standalone mock OpenAI upstream, for benchmarks and client tests.
//!
//! `mock-upstream [--port N] [--port-file PATH] [--chunks N] [--chunk-delay-ms N]
//! [--tls-ca-file PATH]` answers every chat completion like OpenAI (echoing the prompt),
//! streamed or not. With `--tls-ca-file` it speaks HTTPS, HTTP/2 or HTTP/1.1 as ALPN decides
//! (as the providers do), with a certificate made at start for `127.0.0.1`, whose PEM it
//! writes to PATH (for a gateway's `tls.ca_file`).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use testkit::{Behavior, Echo, MockUpstream};

#[tokio::main]
async fn main() {
    let mut port = 0u16;
    let mut port_file = None;
    let mut ca_file = None;
    let mut echo = Echo::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value().parse().expect("--port N"),
            "--port-file" => port_file = Some(value()),
            "--chunks" => echo.chunks = value().parse().expect("--chunks N"),
            "--chunk-delay-ms" => {
                echo.delay = Duration::from_millis(value().parse().expect("--chunk-delay-ms N"));
            }
            "--tls-ca-file" => ca_file = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    let addr = format!("127.0.0.1:{port}");
    // Kept for the process's life: the certificate's files live as long as it.
    let cert = ca_file.map(|path| {
        let cert = testkit::tls::TestCert::localhost();
        std::fs::copy(cert.ca_file(), &path).expect("write the CA file");
        cert
    });
    let mock = match &cert {
        Some(cert) => {
            MockUpstream::start_tls(&addr, cert.server_config(&[b"h2", b"http/1.1"])).await
        }
        None => MockUpstream::start_on(&addr).await,
    };
    mock.set_default(Behavior::Echo(echo));
    // A benchmark sends it millions of requests: keep none.
    mock.forget_requests();
    let port = mock.addr().port();
    if let Some(path) = port_file {
        std::fs::write(&path, port.to_string()).expect("write the port file");
    }
    println!("mock-upstream listening on {}", mock.url());
    let _ = tokio::signal::ctrl_c().await;
}
