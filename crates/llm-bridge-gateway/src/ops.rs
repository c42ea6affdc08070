//! The admin API the console reads, for `ADMIN_API_KEYS` holders (or a console session):
//!
//! | method & path | what |
//! |---|---|
//! | GET `/admin/overview?range=hour\|day\|week` | requests, tokens, cost, error rate, p50/p95 latency and TTFT in buckets; top keys and models |
//! | GET `/admin/usage?from=&to=&group_by=key\|model\|provider\|day&key=&format=csv` | totals per group, as JSON or CSV |
//! | GET `/admin/status` | providers (models, key prefixes, proxy without credentials), routes with each target's health, cooldown and errors of the last hour, the configured proxies |
//! | GET `/admin/events?key=&model=&status=` | access events as they happen (server-sent events) |

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use llm_bridge_core::{Error, ErrorKind};
use llm_bridge_router::Strategy;
use llm_bridge_usage::{GroupBy, OverviewQuery, UsageQuery, UsageReader, time};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::handlers::json_response;
use crate::live::{Filter, LiveBody};

/// What the binary tells the gateway about its providers, for `/admin/status`: nothing
/// secret (key prefixes only, proxies without credentials).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// The providers, in config order.
    pub providers: Vec<ProviderInfo>,
    /// The configured outbound proxies (`proxy:`), by scheme.
    pub proxies: Vec<ProxyInfo>,
}

/// One provider.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProviderInfo {
    /// Its name.
    pub name: String,
    /// Its adapter (`openai`, `gemini`, `anthropic`, …).
    pub adapter: String,
    /// Its base URL (without credentials).
    pub base_url: String,
    /// The models its config names (`*` passes any other).
    pub models: Vec<String>,
    /// The first characters of each of its keys.
    pub key_prefixes: Vec<String>,
    /// The proxy it goes through (`scheme://host:port`), if any.
    pub proxy: Option<String>,
}

/// One configured proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyInfo {
    /// For `http` or `https` upstreams.
    pub scheme: String,
    /// `scheme://host:port`, credentials hidden.
    pub url: String,
    /// Whether the URL carries a user name and password.
    pub has_credentials: bool,
}

/// Serves `/admin/overview`, `/admin/usage`, `/admin/status` and `/admin/events`; `None`
/// for other paths.
pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<GatewayBody>> {
    let known = matches!(
        path,
        "/admin/overview" | "/admin/usage" | "/admin/status" | "/admin/events"
    );
    if !known {
        return None;
    }
    if *method != Method::GET {
        let mut r = error_response(&Error::invalid_request(format!(
            "method {method} is not allowed on {path}"
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Some(r);
    }
    let answer = match path {
        "/admin/overview" => overview(gateway, query).await,
        "/admin/usage" => usage(gateway, query).await,
        "/admin/status" => status(gateway).await,
        _ => events(gateway, query),
    };
    Some(answer.unwrap_or_else(|e| error_response(&e)))
}

fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            (k, v)
        })
}

fn reader(gateway: &Gateway) -> Result<std::sync::Arc<dyn UsageReader>, Error> {
    gateway.usage_reader.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidRequest,
            "usage recording is disabled on this gateway (usage.enabled: false)",
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, llm_bridge_usage::StoreError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "usage query failed");
            Err(Error::new(
                ErrorKind::Unavailable,
                "the usage database cannot be read right now",
            ))
        }
        Err(_) => Err(Error::internal("the usage query failed")),
    }
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// `GET /admin/overview?range=hour|day|week`: the last hour in 5-minute buckets, the last
/// day in hours, the last week in 6-hour buckets.
async fn overview(gateway: &Gateway, query: Option<&str>) -> Result<Response<GatewayBody>, Error> {
    let mut range = "day".to_owned();
    for (k, v) in pairs(query) {
        match k {
            "range" => range = v,
            _ => {
                return Err(
                    Error::invalid_request(format!("unknown query parameter '{k}'"))
                        .with_param(k.to_owned()),
                );
            }
        }
    }
    let (span, bucket) = match range.as_str() {
        "hour" => (HOUR_MS, 5 * MINUTE_MS),
        "day" => (24 * HOUR_MS, HOUR_MS),
        "week" => (7 * 24 * HOUR_MS, 6 * HOUR_MS),
        other => {
            return Err(Error::invalid_request(format!(
                "range must be hour, day or week, not '{other}'"
            ))
            .with_param("range"));
        }
    };
    // Buckets end at the next bucket boundary, so that they stay put between refreshes.
    let now = time::now_ms();
    let to = (now / bucket + 1) * bucket;
    let q = OverviewQuery {
        from_ms: to - span,
        to_ms: to,
        bucket_ms: bucket,
        top: 5,
    };
    let reader = reader(gateway)?;
    let overview = blocking(move || reader.overview(&q)).await?;
    let mut v = serde_json::to_value(&overview).unwrap_or(Value::Null);
    v["range"] = json!(range);
    Ok(json_response(StatusCode::OK, Bytes::from(v.to_string())))
}

/// `GET /admin/usage`: `/v1/usage` for admins, with `format=csv`.
async fn usage(gateway: &Gateway, query: Option<&str>) -> Result<Response<GatewayBody>, Error> {
    let now = time::now_ms();
    let mut q = UsageQuery {
        from_ms: now - 30 * llm_bridge_core::calendar::DAY_MS,
        to_ms: now + 1,
        group_by: GroupBy::Day,
        key: None,
    };
    let mut csv = false;
    for (k, v) in pairs(query) {
        let bad = |m: String| Error::invalid_request(m).with_param(k.to_owned());
        match k {
            "from" => q.from_ms = time::parse_instant(&v, now).map_err(bad)?,
            "to" => q.to_ms = time::parse_instant(&v, now).map_err(bad)?,
            "group_by" => q.group_by = GroupBy::parse(&v).map_err(bad)?,
            "key" => q.key = Some(v).filter(|v| !v.is_empty()),
            "format" => match v.as_str() {
                "csv" => csv = true,
                "json" | "" => csv = false,
                other => return Err(bad(format!("format must be json or csv, not '{other}'"))),
            },
            _ => return Err(bad(format!("unknown query parameter '{k}'"))),
        }
    }
    let reader = reader(gateway)?;
    let report = blocking(move || reader.query(&q)).await?;
    if !csv {
        return Ok(json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&report).unwrap_or_default()),
        ));
    }
    let mut out = String::from(
        "group,requests,errors,prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,total_tokens,estimated_requests,cost\n",
    );
    for g in &report.data {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&g.group),
            g.requests,
            g.errors,
            g.prompt_tokens,
            g.completion_tokens,
            g.cached_tokens,
            g.cache_write_tokens,
            g.reasoning_tokens,
            g.total_tokens,
            g.estimated_requests,
            g.cost.map(|c| format!("{c:.6}")).unwrap_or_default(),
        );
    }
    let mut r = Response::new(GatewayBody::full(Bytes::from(out)));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"llm-bridge-usage.csv\""),
    );
    Ok(r)
}

/// A CSV field, quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn strategy(s: Strategy) -> &'static str {
    match s {
        Strategy::Fallback => "fallback",
        Strategy::Weighted => "weighted",
        Strategy::RoundRobin => "round_robin",
        Strategy::LeastLatency => "least_latency",
    }
}

/// `GET /admin/status`.
async fn status(gateway: &Gateway) -> Result<Response<GatewayBody>, Error> {
    // Errors of the last hour per `provider/model`, from the usage records.
    let errors: std::collections::HashMap<String, (u64, u64)> = match gateway.usage_reader.clone() {
        Some(reader) => {
            let now = time::now_ms();
            let q = UsageQuery {
                from_ms: now - HOUR_MS,
                to_ms: now + 1,
                group_by: GroupBy::Model,
                key: None,
            };
            blocking(move || reader.query(&q))
                .await?
                .data
                .into_iter()
                .map(|g| (g.group, (g.requests, g.errors)))
                .collect()
        }
        None => Default::default(),
    };
    let router = &gateway.router;
    let target = |id: &str| {
        let h = router.target_health(id);
        let (requests, errs) = errors.get(id).copied().unwrap_or_default();
        json!({
            "target": id,
            "state": if h.cooldown_remaining.is_some() { "cooldown" } else { "ready" },
            "cooldown_remaining_seconds": h.cooldown_remaining.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
            "consecutive_failures": h.consecutive_failures,
            "latency_ms": h.latency.map(|s| (s * 1000.0).round()),
            "requests_last_hour": requests,
            "errors_last_hour": errs,
        })
    };
    let routes: Vec<Value> = router
        .route_views()
        .iter()
        .map(|r| {
            json!({
                "alias": r.alias,
                "strategy": strategy(r.strategy),
                "targets": r.targets.iter().zip(&r.weights).map(|(t, w)| {
                    let mut v = target(t);
                    v["weight"] = json!(w);
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let providers: Vec<Value> = gateway
        .inventory
        .providers
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            v["targets"] = p
                .models
                .iter()
                .filter(|m| m.as_str() != "*")
                .map(|m| target(&format!("{}/{m}", p.name)))
                .collect();
            v
        })
        .collect();
    let body = json!({
        "object": "gateway.status",
        "providers": providers,
        "routes": routes,
        "proxies": gateway.inventory.proxies,
        "usage_recording": gateway.usage_reader.is_some(),
        "ready": gateway.is_ready(),
    });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}

/// `GET /admin/events?key=&model=&status=`.
fn events(gateway: &Gateway, query: Option<&str>) -> Result<Response<GatewayBody>, Error> {
    let mut filter = Filter::default();
    for (k, v) in pairs(query) {
        let v = Some(v).filter(|v| !v.is_empty());
        match k {
            "key" => filter.key = v,
            "model" => filter.model = v,
            "status" => filter.status = v,
            _ => {
                return Err(
                    Error::invalid_request(format!("unknown query parameter '{k}'"))
                        .with_param(k.to_owned()),
                );
            }
        }
    }
    let body = LiveBody::start(&gateway.telemetry.live, filter, gateway.shutdown_signal());
    let mut r = Response::new(GatewayBody::Live(Box::new(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        crate::header_names::X_ACCEL_BUFFERING,
        HeaderValue::from_static("no"),
    );
    Ok(r)
}
