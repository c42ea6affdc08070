//! The load generator of `cargo xtask bench`: HTTP/1.1 over hyper, one connection per worker,
//! latencies recorded per request, results printed as one JSON object.
//!
//! ```text
//! loadgen closed --url URL [--key K] --connections N --seconds S [--stream] [--body JSON]
//! loadgen open   --url URL [--key K] --rate R --seconds S [--connections N] [--body JSON]
//! loadgen hold   --url URL [--key K] --streams N --seconds S [--body JSON]
//! ```
//!
//! `closed`: N connections each send the next request when the last answer ended.
//! `open`: requests start on a fixed schedule; a request that cannot start on time (no free
//! connection) is still timed from its scheduled start, so queueing shows in the latencies
//! (coordinated-omission correction).
//! `hold`: opens N streams at once and keeps them open (reading) for S seconds, for memory
//! measurements; prints when all are open, then the summary.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Clone)]
struct Target {
    host: String,
    authority: String,
    path: String,
    key: Option<String>,
    body: Bytes,
    stream: bool,
}

#[derive(Default)]
struct Sample {
    latency_us: Vec<u32>,
    ttft_us: Vec<u32>,
    errors: u64,
    streams_intact: u64,
    streams_broken: u64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().cloned().unwrap_or_default();
    let url = arg(&args, "--url").expect("--url");
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let stream = args.iter().any(|a| a == "--stream") || mode == "hold";
    let model = arg(&args, "--model").unwrap_or_else(|| "bench/m".into());
    let body = arg(&args, "--body").unwrap_or_else(|| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "Say something short about gateways."}]})
        .to_string()
    });
    let target = Target {
        host: authority.to_owned(),
        authority: authority.to_owned(),
        path: format!("/{}", path.trim_start_matches('/')),
        key: arg(&args, "--key"),
        body: Bytes::from(body),
        stream,
    };
    let seconds: f64 = arg(&args, "--seconds").map_or(5.0, |s| s.parse().expect("--seconds"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match mode.as_str() {
            "closed" => {
                let n: usize = arg(&args, "--connections").map_or(1, |s| s.parse().unwrap());
                closed(target, n, Duration::from_secs_f64(seconds)).await
            }
            "open" => {
                let rate: f64 = arg(&args, "--rate").map_or(100.0, |s| s.parse().unwrap());
                let n: usize = arg(&args, "--connections").map_or(64, |s| s.parse().unwrap());
                open(target, rate, n, Duration::from_secs_f64(seconds)).await
            }
            "hold" => {
                let n: usize = arg(&args, "--streams").map_or(100, |s| s.parse().unwrap());
                hold(target, n, Duration::from_secs_f64(seconds)).await
            }
            other => panic!("unknown mode '{other}': closed, open or hold"),
        }
    });
    println!("{result}");
}

async fn connect(t: &Target) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(&t.host).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on a connection: (latency, time to first chunk, stream intact).
async fn one(
    t: &Target,
    sender: &mut http1::SendRequest<Full<Bytes>>,
    start: Instant,
) -> Result<(u32, Option<u32>, bool), ()> {
    sender.ready().await.map_err(|_| ())?;
    let mut req = hyper::Request::post(&t.path)
        .header("host", &t.authority)
        .header("content-type", "application/json");
    if let Some(k) = &t.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req.body(Full::new(t.body.clone())).map_err(|_| ())?;
    let response = sender.send_request(req).await.map_err(|_| ())?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await;
        // The first failure is worth a line: a benchmark of errors measures nothing.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let text = body.map(|b| b.to_bytes()).unwrap_or_default();
            eprintln!(
                "loadgen: {} {status}: {}",
                t.path,
                String::from_utf8_lossy(&text[..text.len().min(300)])
            );
        }
        return Err(());
    }
    let mut body = response.into_body();
    let mut ttft = None;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Ok(data) = frame.into_data() {
            if ttft.is_none() && t.stream {
                ttft = Some(micros(start.elapsed()));
            }
            if t.stream {
                text.extend_from_slice(&data);
            }
        }
    }
    let intact = !t.stream || stream_intact(&text);
    Ok((micros(start.elapsed()), ttft, intact))
}

/// Every event JSON, content chunks in order, exactly one `[DONE]` at the end.
fn stream_intact(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .collect();
    let Some((last, chunks)) = events.split_last() else {
        return false;
    };
    *last == "[DONE]"
        && !chunks.is_empty()
        && chunks.iter().all(|c| {
            serde_json::from_str::<serde_json::Value>(c)
                .is_ok_and(|v| v.get("choices").is_some() && v.get("error").is_none())
        })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn closed(t: Target, connections: usize, duration: Duration) -> serde_json::Value {
    let sample = Arc::new(Mutex::new(Sample::default()));
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (t, sample) = (t.clone(), sample.clone());
        workers.push(tokio::spawn(async move {
            let mut local = Sample::default();
            let mut sender = None;
            while Instant::now() < end {
                if sender.is_none() {
                    sender = connect(&t).await.ok();
                }
                let Some(s) = sender.as_mut() else {
                    local.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match one(&t, s, Instant::now()).await {
                    Ok((lat, ttft, intact)) => record(&mut local, lat, ttft, intact, t.stream),
                    Err(()) => {
                        local.errors += 1;
                        sender = None;
                    }
                }
            }
            merge(&sample, local).await;
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    summary(&sample, started.elapsed()).await
}

async fn open(t: Target, rate: f64, connections: usize, duration: Duration) -> serde_json::Value {
    let sample = Arc::new(Mutex::new(Sample::default()));
    let pool = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..connections {
        if let Ok(c) = connect(&t).await {
            pool.lock().await.push(c);
        }
    }
    let free = Arc::new(tokio::sync::Semaphore::new(pool.lock().await.len()));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let total = (duration.as_secs_f64() * rate) as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        // Timed from when the schedule's timer fired, not from the schedule: tokio's timer
        // fires on its next millisecond tick, up to a millisecond late, and that lateness is
        // this program's, not the path's. Waiting for a free connection still counts.
        let start = Instant::now();
        let (t, sample, pool, free) = (t.clone(), sample.clone(), pool.clone(), free.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = free.acquire_owned().await.unwrap();
            let mut sender = pool.lock().await.pop().unwrap();
            let result = one(&t, &mut sender, start).await;
            let mut s = sample.lock().await;
            match result {
                Ok((lat, ttft, intact)) => record(&mut s, lat, ttft, intact, t.stream),
                Err(()) => {
                    s.errors += 1;
                    if let Ok(c) = connect(&t).await {
                        sender = c;
                    }
                }
            }
            drop(s);
            pool.lock().await.push(sender);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut out = summary(&sample, started.elapsed()).await;
    out["target_rate"] = json!(rate);
    out
}

async fn hold(t: Target, streams: usize, duration: Duration) -> serde_json::Value {
    let open = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (t, open, failed, stop) = (t.clone(), open.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut sender) = connect(&t).await else {
                failed.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let mut req = hyper::Request::post(&t.path)
                .header("host", &t.authority)
                .header("content-type", "application/json");
            if let Some(k) = &t.key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let Ok(response) = sender
                .send_request(req.body(Full::new(t.body.clone())).unwrap())
                .await
            else {
                failed.fetch_add(1, Ordering::SeqCst);
                return;
            };
            if !response.status().is_success() {
                failed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let mut body = response.into_body();
            let mut counted = false;
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                    Ok(Some(Ok(_))) => {
                        if !counted {
                            counted = true;
                            open.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
        }));
    }
    let started = Instant::now();
    let mut all_open_after = None;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = open.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst);
        if all_open_after.is_none() && n >= streams as u64 {
            all_open_after = Some(started.elapsed().as_secs_f64());
            // The harness reads memory now.
            println!(
                "{}",
                json!({"event": "all_open", "open": open.load(Ordering::SeqCst)})
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.abort();
    }
    json!({"streams": streams, "open": open.load(Ordering::SeqCst), "failed": failed.load(Ordering::SeqCst),
           "all_open_after_s": all_open_after})
}

fn record(s: &mut Sample, latency: u32, ttft: Option<u32>, intact: bool, stream: bool) {
    s.latency_us.push(latency);
    if let Some(t) = ttft {
        s.ttft_us.push(t);
    }
    if stream {
        if intact {
            s.streams_intact += 1;
        } else {
            s.streams_broken += 1;
        }
    }
}

async fn merge(into: &Mutex<Sample>, from: Sample) {
    let mut s = into.lock().await;
    s.latency_us.extend(from.latency_us);
    s.ttft_us.extend(from.ttft_us);
    s.errors += from.errors;
    s.streams_intact += from.streams_intact;
    s.streams_broken += from.streams_broken;
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0)
}

async fn summary(sample: &Mutex<Sample>, elapsed: Duration) -> serde_json::Value {
    let mut s = sample.lock().await;
    s.latency_us.sort_unstable();
    s.ttft_us.sort_unstable();
    let n = s.latency_us.len();
    json!({
        "requests": n,
        "errors": s.errors,
        "seconds": elapsed.as_secs_f64(),
        "rps": n as f64 / elapsed.as_secs_f64(),
        "p50_ms": percentile(&s.latency_us, 0.5),
        "p99_ms": percentile(&s.latency_us, 0.99),
        "ttft_p50_ms": percentile(&s.ttft_us, 0.5),
        "ttft_p99_ms": percentile(&s.ttft_us, 0.99),
        "streams_intact": s.streams_intact,
        "streams_broken": s.streams_broken,
    })
}
