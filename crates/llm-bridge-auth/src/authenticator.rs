use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use llm_bridge_core::{Error, ErrorKind, Result};

use crate::clock::{Clock, SystemClock};
use crate::limits::{Admission, LimitsUnavailable, Rejection, SharedLimits};
use crate::managed::{ManagedKey, ManagedKeys};
use crate::policy::KeyPolicy;
use crate::secret::digest;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// An access key and the name it is known by in logs and usage records.
pub struct AccessKey {
    /// The name (never the secret).
    pub name: String,
    /// The key.
    pub secret: SecretString,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Reads `ACCESS_API_KEYS`: a comma-separated list, a JSON list, or a JSON object mapping
/// each key to its name (or to `true`, as the Python LLM Bridge accepted). Keys without a
/// name are called `access-1`, `access-2`, … in the order given.
pub fn parse_access_keys(value: &str) -> Result<Vec<AccessKey>> {
    parse_keys("ACCESS_API_KEYS", "access", value)
}

/// Reads `ADMIN_API_KEYS`, in the same forms; unnamed keys are `admin-1`, `admin-2`, …
pub fn parse_admin_keys(value: &str) -> Result<Vec<AccessKey>> {
    parse_keys("ADMIN_API_KEYS", "admin", value)
}

fn parse_keys(var: &str, prefix: &str, value: &str) -> Result<Vec<AccessKey>> {
    let value = value.trim();
    let named = |i: usize, key: &str, name: Option<&str>| AccessKey {
        name: name.map_or_else(|| format!("{prefix}-{}", i + 1), str::to_owned),
        secret: SecretString::from(key.to_owned()),
    };
    let keys: Vec<AccessKey> = if value.starts_with('[') || value.starts_with('{') {
        let parsed: serde_json::Value = serde_json::from_str(value).map_err(|e| {
            // The parser's message would quote the keys: say only where it failed.
            Error::invalid_request(format!(
                "{var} is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match parsed {
            serde_json::Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, k)| match k.as_str() {
                    Some(k) => Ok(named(i, k.trim(), None)),
                    None => Err(Error::invalid_request(format!(
                        "{var}[{i}] must be a string"
                    ))),
                })
                .collect::<Result<_>>()?,
            serde_json::Value::Object(map) => map
                .iter()
                .enumerate()
                .map(|(i, (k, v))| named(i, k.trim(), v.as_str()))
                .collect(),
            _ => unreachable!("starts with [ or {{"),
        }
    } else {
        value
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, k)| named(i, k, None))
            .collect()
    };
    if keys.iter().any(|k| k.secret.expose_secret().is_empty()) {
        return Err(Error::invalid_request(
            "ACCESS_API_KEYS contains an empty key",
        ));
    }
    Ok(keys)
}

/// Who is calling: the key's name and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's name, for logs and usage records.
    pub name: Arc<str>,
    /// An `ADMIN_API_KEYS` key: sees everyone's usage and manages keys.
    pub admin: bool,
    /// The managed key's policy and counters (`None` for unlimited static keys).
    pub managed: Option<Arc<ManagedKey>>,
}

impl Principal {
    /// Whether the key may use a model (`provider/model` or an alias).
    pub fn allows(&self, model: &str) -> bool {
        self.managed
            .as_ref()
            .is_none_or(|k| k.record.policy.allows(model))
    }
}

struct StaticKey {
    digest: [u8; 32],
    principal: Principal,
}

/// Checks presented keys and admits requests under each key's limits.
pub struct Authenticator {
    static_keys: Vec<StaticKey>,
    managed: Option<Arc<ManagedKeys>>,
    clock: Arc<dyn Clock>,
    reservation: u64,
    shared: Option<(Arc<dyn SharedLimits>, OnUnavailable)>,
    /// Admissions decided without the shared limits because they could not be asked.
    unavailable: AtomicU64,
    /// When the last "shared limits unavailable" warning was logged (ms), to log it at most
    /// every 10 s.
    warned_at: AtomicI64,
}

/// Output tokens reserved at most per request against a key's budgets, by default.
pub const DEFAULT_RESERVATION: u64 = 4096;

/// The `limits` section of the config.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Output tokens a request reserves at most against its key's token budgets (a stream
    /// that needs more reserves more as it goes).
    #[serde(default = "default_reservation")]
    pub budget_reservation: u64,
    /// Where limits are counted: in this process, or in Redis for every instance.
    #[serde(default)]
    pub backend: LimitsBackend,
    /// The Redis URL (`redis://host:6379/0`), for `backend: redis`. May hold a password:
    /// never logged.
    #[serde(default)]
    pub url: Option<String>,
    /// What to do while the shared backend cannot be reached.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

/// Where limits are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In this process (one instance).
    #[default]
    Local,
    /// In Redis, shared by every instance.
    Redis,
}

/// What to do while the shared limits backend cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Keep serving, counting limits in this process alone.
    #[default]
    Local,
    /// Refuse requests of limited keys with a 503.
    Deny,
}

impl fmt::Debug for LimitsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitsConfig")
            .field("budget_reservation", &self.budget_reservation)
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<hidden>"))
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            budget_reservation: DEFAULT_RESERVATION,
            backend: LimitsBackend::Local,
            url: None,
            on_unavailable: OnUnavailable::Local,
        }
    }
}

fn default_reservation() -> u64 {
    DEFAULT_RESERVATION
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_keys", &self.static_keys.len())
            .field("managed", &self.managed.is_some())
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for these unlimited access keys and admin keys.
    pub fn new(keys: Vec<AccessKey>, admin_keys: Vec<AccessKey>) -> Self {
        let entry = |k: AccessKey, admin: bool| StaticKey {
            digest: digest(k.secret.expose_secret()),
            principal: Principal {
                name: k.name.into(),
                admin,
                managed: None,
            },
        };
        let mut static_keys: Vec<StaticKey> = keys.into_iter().map(|k| entry(k, false)).collect();
        static_keys.extend(admin_keys.into_iter().map(|k| entry(k, true)));
        Authenticator {
            static_keys,
            managed: None,
            reservation: DEFAULT_RESERVATION,
            clock: Arc::new(SystemClock),
            shared: None,
            unavailable: AtomicU64::new(0),
            warned_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Also accepts the managed keys (their clock counts the limits).
    pub fn with_managed(mut self, managed: Arc<ManagedKeys>) -> Self {
        self.clock = managed.clock().clone();
        self.managed = Some(managed);
        self
    }

    /// Counts limits in `shared` (for every instance); while it cannot be reached,
    /// `on_unavailable` decides.
    pub fn with_shared_limits(
        mut self,
        shared: Arc<dyn SharedLimits>,
        on_unavailable: OnUnavailable,
    ) -> Self {
        self.shared = Some((shared, on_unavailable));
        self
    }

    /// Admissions decided without the shared limits because they could not be reached.
    pub fn shared_limits_unavailable(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// The managed keys, if any.
    pub fn managed(&self) -> Option<&Arc<ManagedKeys>> {
        self.managed.as_ref()
    }

    /// The principal for a presented key, or a 401.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal> {
        let Some(presented) = presented.filter(|k| !k.is_empty()) else {
            return Err(Error::new(
                ErrorKind::Authentication,
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            ));
        };
        let presented = digest(presented);
        // Compare with every static key, without stopping early, so timing says nothing.
        let mut found: Option<&StaticKey> = None;
        for key in &self.static_keys {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        if let Some(k) = found {
            return Ok(k.principal.clone());
        }
        // Managed keys are found by their digest: a hash of a 256-bit secret, so the lookup
        // reveals nothing about the keys.
        if let Some(key) = self.managed.as_ref().and_then(|m| m.lookup(&presented)) {
            if key.record.revoked() {
                return Err(Error::new(ErrorKind::Authentication, "API key revoked"));
            }
            if key
                .record
                .policy
                .expires_at
                .is_some_and(|t| self.clock.now_ms() >= t)
            {
                return Err(Error::new(ErrorKind::Authentication, "API key expired"));
            }
            if let Some(m) = &self.managed {
                m.note_use(&key);
            }
            return Ok(Principal {
                name: key.record.name.as_str().into(),
                admin: false,
                managed: Some(key),
            });
        }
        Err(Error::new(ErrorKind::Authentication, "invalid API key"))
    }

    /// Admits a request for `models` (the name the client used and the `provider/model` it
    /// resolved to: either may be allowed) expecting `estimate` tokens, under the key's
    /// permissions, rate limits and budgets: counted in the shared limits backend when there
    /// is one (one round trip), else in this process.
    ///
    /// A request is reserved `prompt` tokens plus the output it may produce (`max_output`,
    /// the `max_tokens` it asked for), capped by the reservation (see
    /// [`Authenticator::with_reservation`]) so that agents asking for huge `max_tokens` are
    /// not refused while their real spend is small.
    pub async fn admit(
        &self,
        principal: &Principal,
        models: &[&str],
        prompt: u64,
        max_output: Option<u64>,
    ) -> std::result::Result<Admission, Rejection> {
        let Some((key, estimate)) = self.permit(principal, models, prompt, max_output)? else {
            return Ok(Admission::unlimited());
        };
        let policy = &key.record.policy;
        // A key without limits has nothing to share: its spending is counted here only.
        let Some((shared, on_unavailable)) = self.shared.as_ref().filter(|_| !limitless(policy))
        else {
            return key.state.admit(policy, &self.clock, estimate);
        };
        match shared.admit(key, estimate).await {
            Ok(decided) => decided,
            Err(LimitsUnavailable(why)) => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                let now = self.clock.now_ms();
                let last = self.warned_at.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 10_000
                    && self
                        .warned_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(reason = %why, on_unavailable = ?on_unavailable, "shared limits unavailable");
                }
                match on_unavailable {
                    OnUnavailable::Local => key.state.admit(policy, &self.clock, estimate),
                    OnUnavailable::Deny => Err(Error::new(
                        ErrorKind::Unavailable,
                        "rate limits cannot be checked right now; try again shortly",
                    )
                    .with_retry_after(std::time::Duration::from_secs(1))
                    .into()),
                }
            }
        }
    }

    /// [`Authenticator::admit`] counted in this process only, whatever the backend (no
    /// waiting: for tests and tools).
    pub fn admit_local(
        &self,
        principal: &Principal,
        models: &[&str],
        prompt: u64,
        max_output: Option<u64>,
    ) -> std::result::Result<Admission, Rejection> {
        match self.permit(principal, models, prompt, max_output)? {
            Some((key, estimate)) => key.state.admit(&key.record.policy, &self.clock, estimate),
            None => Ok(Admission::unlimited()),
        }
    }

    /// The permission check: the managed key to count and the tokens to reserve, or `None`
    /// for a key that is not counted (static keys).
    fn permit<'p>(
        &self,
        principal: &'p Principal,
        models: &[&str],
        prompt: u64,
        max_output: Option<u64>,
    ) -> std::result::Result<Option<(&'p Arc<ManagedKey>, u64)>, Rejection> {
        let estimate = prompt + max_output.unwrap_or(self.reservation).min(self.reservation);
        let Some(key) = &principal.managed else {
            return Ok(None);
        };
        if !models.iter().any(|m| key.record.policy.allows(m)) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "this key may not use model '{}'",
                    models.first().copied().unwrap_or_default()
                ),
            )
            .with_param("model")
            .into());
        }
        Ok(Some((key, estimate)))
    }

    /// Caps the output tokens a request reserves against its key's budgets (default
    /// [`DEFAULT_RESERVATION`]); a stream that needs more reserves more as it goes.
    pub fn with_reservation(mut self, tokens: u64) -> Self {
        self.reservation = tokens;
        self
    }

    /// Now, by the limits' clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Whether a policy limits nothing that must be counted (models aside).
fn limitless(p: &KeyPolicy) -> bool {
    p.rpm.is_none()
        && p.tpm.is_none()
        && p.max_concurrent.is_none()
        && p.budget_tokens.is_unlimited()
        && p.budget_cost.is_unlimited()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::generate_key;

    #[test]
    fn parses_every_form_of_access_api_keys() {
        let names = |v: &str| {
            parse_access_keys(v)
                .unwrap()
                .into_iter()
                .map(|k| (k.name, k.secret.expose_secret().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(" sk-a , sk-b,,"),
            [
                ("access-1".into(), "sk-a".into()),
                ("access-2".into(), "sk-b".into())
            ]
        );
        assert_eq!(names(r#"["sk-a"]"#), [("access-1".into(), "sk-a".into())]);
        assert_eq!(
            names(r#"{"sk-a": "alice", "sk-b": true}"#),
            [
                ("alice".into(), "sk-a".into()),
                ("access-2".into(), "sk-b".into())
            ]
        );
        assert!(names("").is_empty());
        let err = parse_access_keys(r#"["sk-secret""#).unwrap_err();
        assert!(!err.message().contains("sk-secret"));
    }

    #[test]
    fn authenticates_only_known_keys() {
        let auth = Authenticator::new(
            parse_access_keys("sk-a,sk-b").unwrap(),
            parse_admin_keys("sk-root").unwrap(),
        );
        assert_eq!(&*auth.authenticate(Some("sk-b")).unwrap().name, "access-2");
        assert!(!auth.authenticate(Some("sk-b")).unwrap().admin);
        let root = auth.authenticate(Some("sk-root")).unwrap();
        assert!(root.admin);
        assert_eq!(&*root.name, "admin-1");
        assert_eq!(auth.authenticate(Some("sk-c")).unwrap_err().status(), 401);
        assert_eq!(auth.authenticate(Some("")).unwrap_err().status(), 401);
        assert_eq!(auth.authenticate(None).unwrap_err().status(), 401);
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.expose_secret().starts_with("sk-llmb-"));
        assert_eq!(a.expose_secret().len(), 8 + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let keys = parse_access_keys("sk-topsecret").unwrap();
        assert!(!format!("{keys:?}").contains("topsecret"));
    }
}
