//! `/admin/keys`: managed keys over HTTP, for `ADMIN_API_KEYS` holders.
//!
//! | method & path | what |
//! |---|---|
//! | GET `/admin/keys` | every key (never the key itself) |
//! | POST `/admin/keys` | create: `{"name", "models", "rpm", "tpm", "budget_tokens": {"day","month","total"}, "budget_cost": {…}, "expires_in" \| "expires_at"}`; the answer carries `"key"`, once |
//! | GET `/admin/keys/{name}` | one key, with what it has spent |
//! | PATCH `/admin/keys/{name}` | change settings (JSON merge patch: `null` clears) |
//! | DELETE `/admin/keys/{name}` | revoke |
//!
//! Changes take effect at once on this server, and within a second on others sharing the
//! database (SQLite file or PostgreSQL).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use llm_bridge_auth::{KeyPolicy, KeyRecord, ManagedKeys};
use llm_bridge_core::secrecy::ExposeSecret;
use llm_bridge_core::{Error, ErrorKind};
use serde_json::{Value, json};

use crate::Gateway;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::handlers::{json_response, presented_key};

/// Handles a request under `/admin/keys`.
pub(crate) async fn keys(
    gateway: &Arc<Gateway>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Response<GatewayBody> {
    match handle(gateway, method, path, headers, body).await {
        Ok((status, value)) => json_response(status, Bytes::from(value.to_string())),
        Err(e) => error_response(&e),
    }
}

async fn handle(
    gateway: &Arc<Gateway>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(StatusCode, Value), Error> {
    let Some(managed) = gateway.auth.managed().cloned() else {
        return Err(Error::new(
            ErrorKind::Unavailable,
            "managed keys are unavailable: the database could not be opened",
        ));
    };
    let name = path
        .strip_prefix("/admin/keys")
        .map(|rest| rest.trim_matches('/'))
        .filter(|rest| !rest.is_empty())
        .map(str::to_owned);
    let patch = if matches!(*method, Method::POST | Method::PATCH) {
        let bytes = read_limited(body, headers, 64 * 1024).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_request(format!("body is not valid JSON: {e}")))?;
        Some(value)
    } else {
        drop(body.collect().await);
        None
    };
    let now = gateway.auth.now_ms();
    let method = method.clone();
    let task = move || -> Result<(StatusCode, Value), Error> {
        let store = managed.store().clone();
        let result = match (&method, name, patch) {
            (&Method::GET, None, _) => {
                let keys: Vec<Value> = store
                    .list()?
                    .iter()
                    .map(|r| describe(&managed, r))
                    .collect();
                Ok((StatusCode::OK, json!({"object": "list", "data": keys})))
            }
            (&Method::POST, None, Some(mut body)) => {
                let name = body
                    .as_object_mut()
                    .and_then(|o| o.remove("name"))
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        Error::invalid_request("a new key needs a 'name'").with_param("name")
                    })?;
                let mut policy = KeyPolicy::default();
                policy
                    .apply_patch(&body, now)
                    .map_err(Error::invalid_request)?;
                let (record, key) = store.create(&name, &policy, now)?;
                let mut v = describe(&managed, &record);
                v["key"] = Value::String(key.expose_secret().to_owned());
                Ok((StatusCode::CREATED, v))
            }
            (&Method::GET, Some(name), _) => {
                let record = store.get(&name)?.ok_or_else(|| not_found(&name))?;
                Ok((StatusCode::OK, describe(&managed, &record)))
            }
            (&Method::PATCH, Some(name), Some(body)) => {
                let mut record = store.get(&name)?.ok_or_else(|| not_found(&name))?;
                record
                    .policy
                    .apply_patch(&body, now)
                    .map_err(Error::invalid_request)?;
                let record = store.update(&name, &record.policy, now)?;
                Ok((StatusCode::OK, describe(&managed, &record)))
            }
            (&Method::DELETE, Some(name), _) => {
                let record = store.revoke(&name, now)?;
                Ok((StatusCode::OK, describe(&managed, &record)))
            }
            _ => Err(Error::invalid_request(
                "use GET or POST /admin/keys, or GET, PATCH or DELETE /admin/keys/{name}",
            )),
        };
        if result.is_ok() && method != Method::GET {
            // Effective at once here; other servers notice within a second.
            managed.load()?;
        }
        result
    };
    tokio::task::spawn_blocking(task)
        .await
        .map_err(|_| Error::internal("the key operation failed"))?
}

/// Whether the caller may use the admin API: a bearer `ADMIN_API_KEYS` key (its name is
/// returned, for the access line), or (console enabled) the console's session cookie, with
/// its CSRF token for changes.
pub(crate) fn authorize(
    gateway: &Gateway,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<std::sync::Arc<str>>, Error> {
    if gateway.console.config.enabled && crate::console::has_session_cookie(headers) {
        return gateway
            .console
            .check_session(method, headers)
            .map(|()| None);
    }
    let principal = gateway.auth.authenticate(presented_key(headers))?;
    if !principal.admin {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "the admin API needs an ADMIN_API_KEYS key",
        )
        .with_code("admin_key_required"));
    }
    Ok(Some(principal.name))
}

fn not_found(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no key named '{name}'"))
}

/// A key as the API shows it: its settings, dates and spending, never the key.
pub(crate) fn describe(managed: &ManagedKeys, record: &KeyRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    v["object"] = json!("api_key");
    v["revoked"] = json!(record.revoked());
    if let Some(k) = managed.by_name(&record.name) {
        let (day, month, total) = k.state.spent_tokens(managed.clock().now_ms());
        v["spent_tokens"] = json!({"day": day, "month": month, "total": total});
    }
    v
}
