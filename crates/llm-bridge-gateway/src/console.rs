//! The operators' web console at `/console`: its embedded assets, signing in with an
//! `ADMIN_API_KEYS` key (a server-side session behind an HttpOnly, `SameSite=Strict` cookie),
//! and the check every admin endpoint makes (a bearer admin key, or a session cookie plus
//! the session's CSRF token for changes).
//!
//! | method & path | what |
//! |---|---|
//! | GET `/console`, `/console/app.js`, `/console/app.css` | the page and its assets |
//! | POST `/console/session` | sign in: `{"key": "<admin key>"}` → the cookie, and `{"csrf_token", "expires_at"}` |
//! | GET `/console/session` | the signed-in session's `{"csrf_token", "expires_at"}`, or 401 |
//! | DELETE `/console/session` | sign out (needs the CSRF token) |

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Method, Response, StatusCode};
use llm_bridge_core::{Error, ErrorKind, Seconds};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::body::GatewayBody;
use crate::errors::error_response;
use crate::handlers::{json_response, presented_key};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// The session cookie's name.
pub(crate) const COOKIE: &str = "llmb_console";
/// The header the page sends its session's CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Wrong keys one client address may try per minute before sign-in answers 429.
const SIGN_IN_FAILURES_PER_MINUTE: u32 = 5;
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 1000;

/// The `console` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/console` (and accept its session cookie on `/admin`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a sign-in lasts.
    #[serde(default = "default_session_ttl")]
    pub session_ttl: Seconds,
    /// Mark the cookie `Secure` even when no TLS-terminating proxy says
    /// `X-Forwarded-Proto: https` (it is marked so whenever one does).
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_ttl: default_session_ttl(),
            secure_cookie: false,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_session_ttl() -> Seconds {
    Seconds(12.0 * 3600.0)
}

struct Session {
    expires: Instant,
    expires_ms: i64,
    csrf: String,
}

/// The console's state: its sessions and recent failed sign-ins.
pub(crate) struct Console {
    pub(crate) config: ConsoleConfig,
    /// By SHA-256 of the cookie's token: the table never holds a usable token.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Failed sign-ins per client address: (window start, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Console {
    pub(crate) fn new(config: ConsoleConfig) -> Self {
        Console {
            config,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn session_of(&self, headers: &HeaderMap) -> Option<(String, i64)> {
        let token = cookie(headers, COOKIE)?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let id = digest(&token);
        match sessions.get(&id) {
            Some(s) if s.expires > now => Some((s.csrf.clone(), s.expires_ms)),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Checks a request to an admin endpoint made with the session cookie: a live session,
    /// and for anything but reading, the session's CSRF token in [`CSRF_HEADER`] and no
    /// other site's `Origin`.
    pub(crate) fn check_session(&self, method: &Method, headers: &HeaderMap) -> Result<(), Error> {
        let Some((csrf, _)) = self.session_of(headers) else {
            return Err(signed_out());
        };
        if !matches!(*method, Method::GET | Method::HEAD) {
            same_origin(headers)?;
            let sent = headers
                .get(CSRF_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "a change made with the console's session needs its CSRF token in x-csrf-token",
                )
                .with_code("csrf_token_invalid"));
            }
        }
        Ok(())
    }

    fn allowed_to_try(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        let Some(ip) = ip else { return Ok(()) };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((start, n))
                if *n >= SIGN_IN_FAILURES_PER_MINUTE
                    && start.elapsed() < Duration::from_secs(60) =>
            {
                Err(Error::new(
                    ErrorKind::RateLimited,
                    "too many wrong keys from this address: wait a minute",
                )
                .with_retry_after(Duration::from_secs(60).saturating_sub(start.elapsed())))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 10_000 {
            failures.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    fn open_session(&self, now_ms: i64) -> (String, Session) {
        let token = random_hex(32);
        let ttl = self.config.session_ttl.duration();
        let session = Session {
            expires: Instant::now() + ttl,
            expires_ms: now_ms + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            csrf: random_hex(24),
        };
        (token, session)
    }
}

/// Serves everything under `/console`.
pub(crate) async fn serve(
    gateway: &crate::Gateway,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: hyper::body::Incoming,
    client: Option<IpAddr>,
) -> Response<GatewayBody> {
    let console = &gateway.console;
    match (method, path) {
        (&Method::GET, "/console" | "/console/" | "/console/index.html") => {
            asset(INDEX_HTML, "text/html; charset=utf-8")
        }
        (&Method::GET, "/console/app.js") => asset(APP_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/console/app.css") => asset(APP_CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/console/session") => match console.session_of(headers) {
            Some((csrf, expires_ms)) => session_answer(&csrf, expires_ms),
            None => error_response(&signed_out()),
        },
        (&Method::POST, "/console/session") => {
            match sign_in(gateway, headers, body, client).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
        (&Method::DELETE, "/console/session") => {
            if let Err(e) = console.check_session(method, headers) {
                return error_response(&e);
            }
            if let Some(token) = cookie(headers, COOKIE) {
                console
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&digest(&token));
            }
            let mut r = Response::new(GatewayBody::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            set_cookie(&mut r, "", 0, secure(console, headers));
            r
        }
        (_, "/console/session") => {
            let mut r = error_response(&Error::invalid_request(format!(
                "method {method} is not allowed on {path}"
            )));
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r
        }
        _ => {
            let mut r = error_response(&Error::invalid_request(format!(
                "unknown console path: {path}"
            )));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(
    gateway: &crate::Gateway,
    headers: &HeaderMap,
    body: hyper::body::Incoming,
    client: Option<IpAddr>,
) -> Result<Response<GatewayBody>, Error> {
    let console = &gateway.console;
    same_origin(headers)?;
    console.allowed_to_try(client)?;
    let bytes = crate::body::read_limited(body, headers, 8 * 1024).await?;
    let form: SignIn = serde_json::from_slice(&bytes).map_err(|_| {
        Error::invalid_request("sign in with a JSON body: {\"key\": \"<an ADMIN_API_KEYS key>\"}")
    })?;
    let admin = gateway
        .auth
        .authenticate(Some(form.key.trim()))
        .is_ok_and(|p| p.admin);
    if !admin {
        console.failed(client);
        tracing::warn!(client = ?client, "console sign-in refused: not an admin key");
        return Err(Error::new(
            ErrorKind::Authentication,
            "that is not an ADMIN_API_KEYS key",
        )
        .with_code("invalid_api_key"));
    }
    let (token, session) = console.open_session(gateway.auth.now_ms());
    let answer = session_answer(&session.csrf, session.expires_ms);
    {
        let mut sessions = console.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(&token), session);
    }
    tracing::info!(client = ?client, "console signed in");
    let mut r = answer;
    let ttl = console.config.session_ttl.duration().as_secs();
    set_cookie(&mut r, &token, ttl, secure(console, headers));
    Ok(r)
}

fn session_answer(csrf: &str, expires_ms: i64) -> Response<GatewayBody> {
    #[derive(Serialize)]
    struct Answer<'a> {
        object: &'static str,
        csrf_token: &'a str,
        expires_at: String,
    }
    let body = serde_json::to_vec(&Answer {
        object: "console.session",
        csrf_token: csrf,
        expires_at: llm_bridge_usage::time::rfc3339(expires_ms),
    })
    .unwrap_or_default();
    let mut r = json_response(StatusCode::OK, Bytes::from(body));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set_cookie(r: &mut Response<GatewayBody>, token: &str, max_age: u64, secure: bool) {
    let value = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
}

/// Whether the cookie must be `Secure`: configured so, or the request came through TLS
/// (a terminating proxy says so in `X-Forwarded-Proto`).
fn secure(console: &Console, headers: &HeaderMap) -> bool {
    console.config.secure_cookie || forwarded_https(headers)
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Refuses a request another site's page made: an `Origin` that is not this host, or
/// `Sec-Fetch-Site: cross-site`.
fn same_origin(headers: &HeaderMap) -> Result<(), Error> {
    let cross = || {
        Error::new(
            ErrorKind::PermissionDenied,
            "cross-site requests to the console and admin endpoints are refused",
        )
        .with_code("cross_site_request")
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(cross());
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host));
    if own { Ok(()) } else { Err(cross()) }
}

fn signed_out() -> Error {
    Error::new(
        ErrorKind::Authentication,
        "not signed in: sign in to the console, or send an ADMIN_API_KEYS key as a bearer token",
    )
    .with_code("not_signed_in")
}

/// Whether a request presents the console's session cookie (and no key).
pub(crate) fn has_session_cookie(headers: &HeaderMap) -> bool {
    presented_key(headers).is_none() && cookie(headers, COOKIE).is_some()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_owned())
        })
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).unwrap_or_default();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn asset(text: &'static str, content_type: &'static str) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(Bytes::from_static(text.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

/// The total size of the embedded assets, in bytes.
pub fn assets_size() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_stay_small() {
        assert!(assets_size() <= 300 * 1024, "{} bytes", assets_size());
    }

    #[test]
    fn origins_of_other_sites_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("127.0.0.1:1219"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:1219"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(http::header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; llmb_console=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
    }
}
