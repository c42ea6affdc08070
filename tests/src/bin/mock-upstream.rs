//! A standalone mock OpenAI upstream, for benchmarks and client tests.
//!
//! `mock-upstream [--port N] [--port-file PATH] [--chunks N] [--chunk-delay-ms N]`
//! answers every chat completion like OpenAI (echoing the prompt), streamed or not.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use testkit::{Behavior, Echo, MockUpstream};

#[tokio::main]
async fn main() {
    let mut port = 0u16;
    let mut port_file = None;
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
            other => panic!("unknown argument {other}"),
        }
    }
    let mock = MockUpstream::start_on(&format!("127.0.0.1:{port}")).await;
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
