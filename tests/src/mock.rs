//! An in-process mock upstream on `127.0.0.1:0`: it records every request and answers
//! as scripted — like OpenAI by default (echoing the prompt), or with any status, body,
//! recorded event stream, delay, hang or mid-stream drop a test asks for.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the recorded body is JSON")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How an event stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ends normally.
    Close,
    /// The connection is cut without ending the body (a crash mid-stream).
    Drop,
    /// Nothing more is sent, and the body never ends.
    Hang,
}

/// How the mock answers a request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Like OpenAI's chat completions: JSON or a stream, echoing the last user message.
    Echo(Echo),
    /// A fixed answer.
    Reply {
        /// The status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// `content-type`.
        content_type: String,
        /// The body.
        body: Bytes,
    },
    /// A `text/event-stream` answer written piece by piece.
    Stream {
        /// The status.
        status: u16,
        /// The raw pieces written, one frame each (already SSE-framed).
        pieces: Vec<Bytes>,
        /// Pause before each piece.
        delay: Duration,
        /// How it ends.
        end: StreamEnd,
    },
    /// Never answers (no headers).
    Hang,
    /// Waits, then behaves as the inner behavior.
    Delay(Duration, Box<Behavior>),
}

/// Settings of the OpenAI-like echo.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Content chunks per stream.
    pub chunks: usize,
    /// Pause before each chunk of a stream.
    pub delay: Duration,
    /// Usage reported (prompt, completion); `None` reports no usage at all.
    pub usage: Option<(u64, u64)>,
    /// Extra fields put into every chunk's delta / the message (e.g. `reasoning_content`).
    pub extra_delta: Option<Value>,
}

impl Default for Echo {
    fn default() -> Self {
        Echo {
            chunks: 3,
            delay: Duration::ZERO,
            usage: Some((11, 7)),
            extra_delta: None,
        }
    }
}

impl Behavior {
    /// A JSON answer with a status.
    pub fn json(status: u16, body: Value) -> Behavior {
        Behavior::Reply {
            status,
            headers: Vec::new(),
            content_type: "application/json".into(),
            body: Bytes::from(body.to_string()),
        }
    }

    /// A JSON answer with extra headers.
    pub fn json_with_headers(status: u16, body: Value, headers: &[(&str, &str)]) -> Behavior {
        Behavior::Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            content_type: "application/json".into(),
            body: Bytes::from(body.to_string()),
        }
    }

    /// Any bytes with a content type.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Behavior {
        Behavior::Reply {
            status,
            headers: Vec::new(),
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// An event stream of `data:` events (each string is one event's data).
    pub fn sse(data: &[&str], delay: Duration, end: StreamEnd) -> Behavior {
        Behavior::Stream {
            status: 200,
            pieces: data
                .iter()
                .map(|d| Bytes::from(format!("data: {d}\n\n")))
                .collect(),
            delay,
            end,
        }
    }

    /// A recorded event stream replayed as is, one event per frame.
    pub fn replay(recorded: &str, delay: Duration) -> Behavior {
        let pieces = recorded
            .split_inclusive("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(|p| Bytes::from(p.to_owned()))
            .collect();
        Behavior::Stream {
            status: 200,
            pieces,
            delay,
            end: StreamEnd::Close,
        }
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    /// Requests received, kept or not.
    received: AtomicUsize,
    /// Keep no requests (see [`MockUpstream::forget_requests`]).
    forget: std::sync::atomic::AtomicBool,
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Option<Behavior>>,
    cancelled: AtomicUsize,
    finished: AtomicUsize,
    connections: AtomicUsize,
    /// Killed: every request on a kept-alive connection is cut off.
    dead: std::sync::atomic::AtomicBool,
}

/// A running mock upstream. Stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts a mock answering like OpenAI (echo) unless told otherwise.
    pub async fn start() -> MockUpstream {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts a mock on a given address.
    pub async fn start_on(addr: &str) -> MockUpstream {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the mock upstream");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, state.clone()));
        MockUpstream { addr, state, task }
    }

    /// Starts a mock speaking HTTPS on `addr` (HTTP/2 or HTTP/1.1, as ALPN decides), with
    /// this server config (see [`crate::tls::TestCert`]).
    pub async fn start_tls(addr: &str, tls: Arc<rustls::ServerConfig>) -> MockUpstream {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the mock upstream");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve_tls(listener, state.clone(), tls.into()));
        MockUpstream { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Dies: stops accepting connections, and cuts off every request on the ones already open.
    pub fn kill(&self) {
        self.state.dead.store(true, Ordering::SeqCst);
        self.task.abort();
    }

    /// Answers the next request (after those already scripted) this way.
    pub fn push(&self, behavior: Behavior) {
        self.state.script.lock().expect("lock").push_back(behavior);
    }

    /// Answers every request not otherwise scripted this way.
    pub fn set_default(&self, behavior: Behavior) {
        *self.state.default.lock().expect("lock") = Some(behavior);
    }

    /// Keeps no request from now on: [`MockUpstream::requests`] stays as it is, and
    /// [`MockUpstream::request_count`] still counts. For a mock that runs long under load (the
    /// `mock-upstream` binary): kept, 3 million requests of a benchmark took 24 GB.
    pub fn forget_requests(&self) {
        self.state.forget.store(true, Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The last request received.
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the mock received a request")
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Responses whose body was dropped (the client went away) before it ended.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Responses whose body was sent to the end.
    pub fn finished(&self) -> usize {
        self.state.finished.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until `cancelled()` reaches `n` (or panics after 5 s).
    pub async fn wait_cancelled(&self, n: usize) {
        for _ in 0..500 {
            if self.cancelled() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} cancelled responses, saw {}", self.cancelled());
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_tls(listener: TcpListener, state: Arc<State>, tls: tokio_rustls::TlsAcceptor) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // A client that does not trust the certificate gives up here.
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, std::io::Error> {
    if state.dead.load(Ordering::SeqCst) {
        // An error from the service makes hyper drop the connection without an answer.
        return Err(std::io::Error::other("mock upstream is dead"));
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    if !state.forget.load(Ordering::Relaxed) {
        state.requests.lock().expect("lock").push(recorded.clone());
    }
    state.received.fetch_add(1, Ordering::SeqCst);
    let behavior = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .or_else(|| state.default.lock().expect("lock").clone())
        .unwrap_or_else(|| Behavior::Echo(Echo::default()));
    Ok(respond(state, &recorded, behavior).await)
}

async fn respond(
    state: Arc<State>,
    recorded: &Recorded,
    mut behavior: Behavior,
) -> Response<MockBody> {
    loop {
        match behavior {
            Behavior::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                behavior = *inner;
            }
            Behavior::Hang => {
                let _guard = CancelGuard(state.clone());
                std::future::pending::<()>().await;
            }
            Behavior::Reply {
                status,
                headers,
                content_type,
                body,
            } => {
                let mut r = Response::new(MockBody::once(state, body));
                *r.status_mut() = StatusCode::from_u16(status).expect("valid status");
                r.headers_mut()
                    .insert("content-type", content_type.parse().expect("header"));
                for (k, v) in headers {
                    r.headers_mut().insert(
                        http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                        v.parse().expect("header value"),
                    );
                }
                return r;
            }
            Behavior::Stream {
                status,
                pieces,
                delay,
                end,
            } => {
                let mut r = Response::new(MockBody::stream(state, pieces, delay, end));
                *r.status_mut() = StatusCode::from_u16(status).expect("valid status");
                r.headers_mut()
                    .insert("content-type", "text/event-stream".parse().expect("header"));
                return r;
            }
            Behavior::Echo(echo) => return echo_answer(state, recorded, &echo),
        }
    }
}

struct CancelGuard(Arc<State>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn echo_answer(state: Arc<State>, recorded: &Recorded, echo: &Echo) -> Response<MockBody> {
    // Requests in Gemini's or Anthropic's own format get answers in that format (see
    // gemini.rs, anthropic.rs).
    if let Some((content_type, pieces)) = crate::embeddings::echo(recorded)
        .or_else(|| crate::gemini::echo(recorded, echo))
        .or_else(|| crate::anthropic::echo(recorded, echo))
    {
        return Response::builder()
            .header("content-type", content_type)
            .body(MockBody::stream(
                state,
                pieces,
                echo.delay,
                StreamEnd::Close,
            ))
            .expect("response");
    }
    let request: Value = serde_json::from_slice(&recorded.body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let text = format!("echo: {last}");
    let usage = echo.usage.map(|(p, c)| {
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    });
    if request["stream"] != Value::Bool(true) {
        let mut message = json!({"role": "assistant", "content": text, "refusal": null});
        if let (Some(extra), Some(m)) = (&echo.extra_delta, message.as_object_mut()) {
            if let Some(extra) = extra.as_object() {
                m.extend(extra.clone());
            }
        }
        let mut body = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_727_346_168u64,
            "model": model, "system_fingerprint": "fp_mock", "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}],
        });
        if let Some(u) = usage {
            body["usage"] = u;
        }
        return Response::builder()
            .header("content-type", "application/json")
            .body(MockBody::once(state, Bytes::from(body.to_string())))
            .expect("response");
    }
    let include_usage = request["stream_options"]["include_usage"] == Value::Bool(true);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_727_346_168u64,
            "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut pieces = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let words: Vec<String> = split_words(&text, echo.chunks.max(1));
    for w in &words {
        let mut delta = json!({"content": w});
        if let (Some(extra), Some(d)) = (&echo.extra_delta, delta.as_object_mut()) {
            if let Some(extra) = extra.as_object() {
                d.extend(extra.clone());
            }
        }
        pieces.push(chunk(delta, Value::Null));
    }
    pieces.push(chunk(json!({}), json!("stop")));
    if include_usage {
        if let Some(u) = usage {
            let c = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_727_346_168u64,
                "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": u,
            });
            pieces.push(format!("data: {c}\n\n"));
        }
    }
    pieces.push("data: [DONE]\n\n".to_owned());
    let pieces = pieces.into_iter().map(Bytes::from).collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(MockBody::stream(
            state,
            pieces,
            echo.delay,
            StreamEnd::Close,
        ))
        .expect("response")
}

/// Splits text into `n` pieces (the last takes the rest), so that a stream has `n` chunks.
fn split_words(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n).max(1);
    let mut out: Vec<String> = chars.chunks(per).map(|c| c.iter().collect()).collect();
    while out.len() < n {
        out.push(String::new());
    }
    out
}

/// The mock's response body: one piece, or pieces with pauses, ending as scripted; it
/// counts responses finished and cancelled.
pub struct MockBody {
    state: Arc<State>,
    pieces: VecDeque<Bytes>,
    delay: Duration,
    pause: Option<Pause>,
    /// Nothing sent yet: the next pause is the time to the first token.
    first: bool,
    end: StreamEnd,
    done: bool,
}

/// A pause before a piece. The first one ends on time ([`Alarm`]): tokio's timer ends a
/// pause on its next millisecond tick, which moved a stream's first chunk by up to a
/// millisecond with the phase of the request's arrival, and the bench measures the tenths
/// of a millisecond a proxy adds to it. The rest keep tokio's timer, which costs less.
enum Pause {
    Tick(Pin<Box<Sleep>>),
    OnTime(Alarm),
}

impl MockBody {
    fn once(state: Arc<State>, body: Bytes) -> Self {
        MockBody {
            state,
            pieces: VecDeque::from([body]),
            delay: Duration::ZERO,
            pause: None,
            first: true,
            end: StreamEnd::Close,
            done: false,
        }
    }

    fn stream(state: Arc<State>, pieces: Vec<Bytes>, delay: Duration, end: StreamEnd) -> Self {
        MockBody {
            state,
            pieces: pieces.into(),
            delay,
            pause: None,
            first: true,
            end,
            done: false,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let closing = this.pieces.is_empty() && this.end == StreamEnd::Close;
        if !this.delay.is_zero() && !closing {
            // A pause before every piece and before a drop, so that each write reaches
            // the client on its own.
            let (delay, first) = (this.delay, this.first);
            let pause = this.pause.get_or_insert_with(|| {
                if first {
                    Pause::OnTime(Alarm::after(delay))
                } else {
                    Pause::Tick(Box::pin(tokio::time::sleep(delay)))
                }
            });
            let ended = match pause {
                Pause::Tick(sleep) => sleep.as_mut().poll(cx).is_ready(),
                Pause::OnTime(alarm) => alarm.poll(cx).is_ready(),
            };
            if !ended {
                return Poll::Pending;
            }
            this.pause = None;
        }
        this.first = false;
        if this.pieces.is_empty() {
            return match this.end {
                StreamEnd::Close => {
                    this.done = true;
                    this.state.finished.fetch_add(1, Ordering::SeqCst);
                    Poll::Ready(None)
                }
                StreamEnd::Drop => {
                    this.done = true;
                    this.state.finished.fetch_add(1, Ordering::SeqCst);
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "mock upstream drops the connection",
                    ))))
                }
                StreamEnd::Hang => Poll::Pending,
            };
        }
        let piece = this.pieces.pop_front().expect("not empty");
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A pause that ends within tens of microseconds of its deadline: one thread per process
/// sleeps until the earliest deadline asked for and wakes whoever asked.
struct Alarm {
    deadline: Instant,
}

impl Alarm {
    fn after(delay: Duration) -> Alarm {
        Alarm {
            deadline: Instant::now() + delay,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        // Asked again at every poll that finds it early, so that the latest waker is woken.
        static ALARMS: OnceLock<Mutex<std::sync::mpsc::Sender<Wake>>> = OnceLock::new();
        let alarms = ALARMS.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("mock-alarms".into())
                .spawn(move || ring_alarms(&rx))
                .expect("alarm thread");
            Mutex::new(tx)
        });
        let wake = Wake {
            deadline: self.deadline,
            waker: cx.waker().clone(),
        };
        if alarms.lock().expect("alarms").send(wake).is_err() {
            // Never: the thread runs for the process's life. Polled again rather than hang.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// A waker to wake at a deadline; ordered by deadline.
struct Wake {
    deadline: Instant,
    waker: std::task::Waker,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.deadline.cmp(&other.deadline)
    }
}

/// The alarm thread: sleeps until the earliest deadline or the next request, and wakes the
/// wakers whose deadlines have come.
fn ring_alarms(requests: &std::sync::mpsc::Receiver<Wake>) {
    use std::cmp::Reverse;
    use std::sync::mpsc::RecvTimeoutError;
    let mut due = std::collections::BinaryHeap::<Reverse<Wake>>::new();
    loop {
        let next = match due.peek() {
            None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse(w)) => {
                requests.recv_timeout(w.deadline.saturating_duration_since(Instant::now()))
            }
        };
        match next {
            Ok(wake) => due.push(Reverse(wake)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while due.peek().is_some_and(|Reverse(w)| w.deadline <= now) {
            if let Some(Reverse(w)) = due.pop() {
                w.waker.wake();
            }
        }
    }
}
