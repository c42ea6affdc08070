//! llm-bridge as a library: a Rust service that routes chat requests itself, without the
//! server. It builds an OpenAI-compatible provider, a route that falls back from an upstream
//! that is down to one that answers, and asks it a question — complete and streamed.
//!
//! A tiny local upstream stands in for a real provider so that the example runs anywhere:
//!
//! ```sh
//! cargo run -p llm-bridge-router --example embed
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llm_bridge_core::{ChatProvider, ChatRequest, ProviderConfig};
use llm_bridge_http::{ClientOptions, UpstreamClient};
use llm_bridge_provider_openai::OpenAiProvider;
use llm_bridge_router::{Affinity, RouteConfig, Router, RouterConfig, Strategy, TargetSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = start_upstream().await?;

    // Two providers: one nobody listens to, one that answers.
    let provider = |name: &str,
                    base_url: String|
     -> Result<Arc<dyn ChatProvider>, Box<dyn std::error::Error>> {
        let config: ProviderConfig = serde_json::from_value(serde_json::json!({
            "adapter": "openai",
            "base_url": base_url,
            "api_key": "sk-example",
            "models": {"small": {"timeout": 5}},
        }))
        .map_err(|e| llm_bridge_core::Error::invalid_request(e.to_string()))?;
        let client = UpstreamClient::new(&ClientOptions::default())?;
        Ok(Arc::new(OpenAiProvider::new(name, &config, client)?))
    };
    let down = provider("down", "http://127.0.0.1:9/v1".into())?;
    let up = provider("up", format!("http://{upstream}/v1"))?;

    let mut config = RouterConfig::default();
    config.routes.insert(
        "assistant".into(),
        RouteConfig {
            strategy: Strategy::Fallback,
            targets: vec![
                TargetSpec::Name("down/small".into()),
                TargetSpec::Name("up/small".into()),
            ],
            retry: None,
            affinity: Affinity::default(),
        },
    );
    let router = Router::new(vec![down, up], config)?;

    let request = ChatRequest::from_value(serde_json::json!({
        "model": "assistant",
        "messages": [{"role": "user", "content": "What is a gateway?"}],
    }))?;
    let served = router.chat(request.clone()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&served.value.body)?;
    println!(
        "{} answered (after {} failed attempt(s)): {}",
        served.target(),
        served.retries,
        answer["choices"][0]["message"]["content"]
    );

    let mut streamed = request;
    streamed.set_stream(true);
    let served = router.chat_stream(streamed).await?;
    let mut text = String::new();
    let mut chunks = served.value;
    while let Some(chunk) = chunks.next().await {
        let chunk: serde_json::Value = serde_json::from_slice(&chunk?.data)?;
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    println!("streamed: {text}");
    assert_eq!(text, "A gateway puts every provider behind one API.");
    Ok(())
}

/// A stand-in upstream speaking OpenAI's chat completions API.
async fn start_upstream() -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await?
                        .to_bytes();
                    let request: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let words = ["A gateway ", "puts every provider ", "behind one API."];
                    let response = if request["stream"] == true {
                        let mut sse = String::new();
                        for w in words {
                            let chunk = serde_json::json!({"object": "chat.completion.chunk",
                                "choices": [{"index": 0, "delta": {"content": w}}]});
                            sse.push_str(&format!("data: {chunk}\n\n"));
                        }
                        sse.push_str("data: [DONE]\n\n");
                        hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(Full::new(Bytes::from(sse)))
                    } else {
                        let completion = serde_json::json!({"object": "chat.completion", "model": request["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": words.concat()}}]});
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(completion.to_string())))
                    };
                    Ok::<_, hyper::Error>(response.unwrap())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
