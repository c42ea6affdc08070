//! A real HTTP client (hyper) for talking to the gateway in tests.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// An answer read completely.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an event-stream body, in order.
    pub fn events(&self) -> Vec<String> {
        sse_data(&self.body)
    }

    /// `error.code` of an OpenAI error body.
    pub fn error_code(&self) -> Value {
        self.json()["error"]["code"].clone()
    }
}

/// The `data:` payloads of an event-stream text (lines end in `\n` or `\r\n`, as Gemini's do).
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// `(event name, data as JSON)` of a typed event stream (Anthropic's, OpenAI Responses'),
/// where every event names itself in an `event:` line.
pub fn sse_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

/// A client for one gateway.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:port`) sending `key` as a bearer token.
    pub fn new(base: &str, key: Option<&str>) -> Client {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Client {
            base: base.trim_end_matches('/').to_owned(),
            key: key.map(str::to_owned),
            inner: HyperClient::builder(TokioExecutor::new()).build(http),
        }
    }

    /// The same client with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Client {
        Client {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Builds a request to `path`.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            b = b.header("authorization", format!("Bearer {key}"));
        }
        b
    }

    /// Sends a request and returns the response with its body still to read.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> http::Response<Incoming> {
        tokio::time::timeout(Duration::from_secs(30), self.inner.request(request))
            .await
            .expect("the gateway answered within 30 s")
            .expect("the request reached the gateway")
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("the body arrived within 30 s")
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let request = self
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.call(request).await
    }

    /// `POST /v1/chat/completions`.
    pub async fn chat(&self, body: &Value) -> Answer {
        self.post("/v1/chat/completions", body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        let request = self
            .request(Method::GET, path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.call(request).await
    }
}
