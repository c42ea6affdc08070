//! The `proxy` config section, the proxy variables of the environment, and the rules that
//! choose one proxy (or none) for each provider. Values are secrets (a URL may carry a
//! password) until parsed into a [`Proxy`], whose `Display` and `Debug` hide credentials.

use std::fmt;

use hyper_util::client::proxy::matcher::Matcher;
use llm_bridge_core::secrecy::{ExposeSecret, SecretString};
use llm_bridge_core::{Error, ErrorKind};
use serde::{Deserialize, Deserializer};

use crate::proxy::Proxy;

/// The `proxy` config section, as the Python LLM Bridge wrote it:
/// `proxy: { https: "socks5://127.0.0.1:7890", http: "" }`. Empty strings mean none.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Proxy for `https://` upstreams of providers with `requires_proxy: true`.
    #[serde(default, deserialize_with = "optional_secret")]
    pub https: Option<SecretString>,
    /// Proxy for `http://` upstreams of providers with `requires_proxy: true`.
    #[serde(default, deserialize_with = "optional_secret")]
    pub http: Option<SecretString>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("https", &self.https.as_ref().map(|_| "[redacted]"))
            .field("http", &self.http.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value
        .filter(|v| !v.trim().is_empty())
        .map(SecretString::from))
}

/// The proxy variables of the environment, filled by the binary (`HTTPS_PROXY` or
/// `https_proxy`, …); this crate never reads the environment itself. Empty means unset.
#[derive(Clone, Default)]
pub struct ProxyEnv {
    /// `HTTP_PROXY`: for `http://` upstreams.
    pub http: Option<SecretString>,
    /// `HTTPS_PROXY`: for `https://` upstreams.
    pub https: Option<SecretString>,
    /// `ALL_PROXY`: for either, when the scheme's own variable is unset.
    pub all: Option<SecretString>,
    /// `NO_PROXY`: hosts, domains (with their subdomains), IPs and CIDR ranges that are
    /// reached directly; `*` means every host.
    pub no: Option<String>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<SecretString>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("ProxyEnv")
            .field("http", &set(&self.http))
            .field("https", &set(&self.https))
            .field("all", &set(&self.all))
            .field("no", &self.no)
            .finish()
    }
}

/// Where a provider's connections go, and why (for the start-up log).
#[derive(Debug, Clone)]
pub struct ProxyChoice {
    /// The proxy, or `None` for direct connections.
    pub proxy: Option<Proxy>,
    /// Which setting decided: `providers.x.proxy`, `proxy.https`, `HTTPS_PROXY`, `NO_PROXY`, …
    pub reason: String,
}

/// The rules that choose each provider's proxy, in this order:
///
/// 1. the provider's own `proxy` (`none` = direct);
/// 2. `requires_proxy: true` → `proxy.https` or `proxy.http`, by the upstream's scheme;
/// 3. the environment (`HTTPS_PROXY`/`HTTP_PROXY`, else `ALL_PROXY`, minus `NO_PROXY`), for
///    every provider whose config names no proxy — as curl does;
/// 4. direct.
///
/// A provider with `requires_proxy: true` and no proxy from 2 or 3 is an error: it must not
/// silently connect directly.
#[derive(Debug)]
pub struct ProxyRules {
    https: Option<Proxy>,
    http: Option<Proxy>,
    env: ProxyEnv,
    matcher: Matcher,
}

impl ProxyRules {
    /// Checks the `proxy` section now (errors name `proxy.https` / `proxy.http`); the
    /// environment's values are checked when a provider would use them.
    pub fn new(config: &ProxyConfig, env: &ProxyEnv) -> Result<ProxyRules, Error> {
        let parse = |key: &str, value: &Option<SecretString>| {
            value
                .as_ref()
                .map(|v| Proxy::parse(v.expose_secret()))
                .transpose()
                .map_err(|e| config_error(format!("{key}: {e}")))
        };
        // The matcher only decides NO_PROXY (curl's rules). It gets a stand-in for the proxy:
        // the real URL is parsed by `Proxy::parse_env`, which reports a bad value instead of
        // ignoring it, and keeps the credentials secret.
        let matcher = Matcher::builder()
            .all("http://proxy.invalid:1")
            .no(env.no.clone().unwrap_or_default())
            .build();
        Ok(ProxyRules {
            https: parse("proxy.https", &config.https)?,
            http: parse("proxy.http", &config.http)?,
            env: env.clone(),
            matcher,
        })
    }

    /// The proxy for provider `name`, whose upstream is at `base_url`.
    pub fn choose(
        &self,
        name: &str,
        base_url: &str,
        own_proxy: Option<&SecretString>,
        requires_proxy: bool,
    ) -> Result<ProxyChoice, Error> {
        let upstream = base_url
            .trim()
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                u.host().is_some_and(|h| !h.is_empty())
                    && matches!(u.scheme_str(), Some("http" | "https"))
            })
            .ok_or_else(|| {
                config_error(format!(
                    "providers.{name}.base_url: expected an http:// or https:// URL"
                ))
            })?;
        let upstream = &upstream;
        if let Some(own) = own_proxy
            .map(|p| p.expose_secret().trim())
            .filter(|p| !p.is_empty())
        {
            let key = format!("providers.{name}.proxy");
            if own.eq_ignore_ascii_case("none") {
                if requires_proxy {
                    return Err(config_error(format!(
                        "{key}: 'none' contradicts providers.{name}.requires_proxy: true"
                    )));
                }
                return Ok(direct(key));
            }
            let proxy = Proxy::parse(own).map_err(|e| config_error(format!("{key}: {e}")))?;
            return Ok(through(proxy, key));
        }
        let https = upstream.scheme() == Some(&http::uri::Scheme::HTTPS);
        let (key, configured) = if https {
            ("proxy.https", &self.https)
        } else {
            ("proxy.http", &self.http)
        };
        if requires_proxy {
            if let Some(proxy) = configured {
                return Ok(through(proxy.clone(), key.to_owned()));
            }
        }
        match self.environment_proxy(upstream, https)? {
            Some(choice) if choice.proxy.is_some() || !requires_proxy => Ok(choice),
            exempt if requires_proxy => Err(config_error(format!(
                "providers.{name}.requires_proxy: true, but no proxy is configured for {} upstreams: \
                 set {key}, providers.{name}.proxy or {}{}",
                if https { "https://" } else { "http://" },
                if https { "HTTPS_PROXY" } else { "HTTP_PROXY" },
                if exempt.is_some() {
                    " (NO_PROXY exempts this host from the environment's proxy)"
                } else {
                    ""
                },
            ))),
            _ => Ok(direct("no proxy configured".to_owned())),
        }
    }

    fn environment_proxy(
        &self,
        upstream: &http::Uri,
        https: bool,
    ) -> Result<Option<ProxyChoice>, Error> {
        let (own, own_name) = if https {
            (&self.env.https, "HTTPS_PROXY")
        } else {
            (&self.env.http, "HTTP_PROXY")
        };
        let (name, value) = match (present(own), present(&self.env.all)) {
            (Some(v), _) => (own_name, v),
            (None, Some(v)) => ("ALL_PROXY", v),
            (None, None) => return Ok(None),
        };
        let proxy = Proxy::parse_env(value).map_err(|e| {
            config_error(format!(
                "environment variable {name} (or {}): {e}",
                name.to_ascii_lowercase()
            ))
        })?;
        if self.matcher.intercept(upstream).is_none() {
            return Ok(Some(direct("NO_PROXY".to_owned())));
        }
        Ok(Some(through(proxy, name.to_owned())))
    }
}

/// A variable's value, if set and not blank.
fn present(value: &Option<SecretString>) -> Option<&str> {
    value
        .as_ref()
        .map(|v| v.expose_secret().trim())
        .filter(|v| !v.is_empty())
}

fn direct(reason: String) -> ProxyChoice {
    ProxyChoice {
        proxy: None,
        reason,
    }
}

fn through(proxy: Proxy, reason: String) -> ProxyChoice {
    ProxyChoice {
        proxy: Some(proxy),
        reason,
    }
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<SecretString> {
        Some(SecretString::from(s.to_owned()))
    }

    #[test]
    fn config_env_and_rules_hide_credentials() {
        let config = ProxyConfig {
            https: secret("http://alice:s3cret@proxy:1"),
            http: None,
        };
        let env = ProxyEnv {
            https: secret("http://alice:s3cret@proxy:1"),
            ..ProxyEnv::default()
        };
        for text in [format!("{config:?}"), format!("{env:?}")] {
            assert!(
                !text.contains("s3cret") && !text.contains("alice"),
                "{text}"
            );
        }
        let rules = ProxyRules::new(&config, &env).unwrap();
        let text = format!("{rules:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
    }

    #[test]
    fn precedence() {
        let config = ProxyConfig {
            https: secret("socks5://127.0.0.1:7890"),
            http: secret("http://127.0.0.1:3128"),
        };
        let env = ProxyEnv {
            https: secret("http://env-proxy:8080"),
            no: Some("internal.example, 10.0.0.0/8".into()),
            ..ProxyEnv::default()
        };
        let rules = ProxyRules::new(&config, &env).unwrap();
        let https = "https://api.example.com/v1";
        let choose = |u: &str, own: Option<&str>, requires: bool| {
            let own = own.map(|s| SecretString::from(s.to_owned()));
            rules
                .choose("p", u, own.as_ref(), requires)
                .map(|c| (c.proxy.map(|p| p.to_string()), c.reason))
        };
        // The provider's own proxy wins over everything.
        let (proxy, reason) = choose(https, Some("http://own:1"), true).unwrap();
        assert_eq!(
            (proxy.as_deref(), reason.as_str()),
            (Some("http://own:1"), "providers.p.proxy")
        );
        assert_eq!(choose(https, Some("none"), false).unwrap().0, None);
        let e = choose(https, Some("none"), true).unwrap_err();
        assert!(e.message().contains("contradicts"), "{}", e.message());
        // requires_proxy → the section, by scheme.
        assert_eq!(
            choose(https, None, true).unwrap().0.as_deref(),
            Some("socks5://127.0.0.1:7890")
        );
        assert_eq!(
            choose("http://api.example.com", None, true)
                .unwrap()
                .0
                .as_deref(),
            Some("http://127.0.0.1:3128")
        );
        // Without requires_proxy: the environment, minus NO_PROXY.
        let (proxy, reason) = choose(https, None, false).unwrap();
        assert_eq!(
            (proxy.as_deref(), reason.as_str()),
            (Some("http://env-proxy:8080"), "HTTPS_PROXY")
        );
        let (proxy, reason) = choose("https://api.internal.example/v1", None, false).unwrap();
        assert_eq!((proxy, reason.as_str()), (None, "NO_PROXY"));
        assert_eq!(choose("https://10.1.2.3", None, false).unwrap().0, None);
        // No HTTP_PROXY nor ALL_PROXY: http upstreams go direct.
        assert_eq!(
            choose("http://api.example.com", None, false).unwrap().0,
            None
        );
    }

    #[test]
    fn no_proxy_is_decided_apart_from_the_proxy_url() {
        // hyper-util's own parser rejects this URL (an unencoded '@'): it must be used anyway,
        // not mistaken for an exemption.
        let env = ProxyEnv {
            https: secret("http://bob:p@ss@proxy:8080"),
            ..ProxyEnv::default()
        };
        let rules = ProxyRules::new(&ProxyConfig::default(), &env).unwrap();
        let c = rules
            .choose("p", "https://api.example.com", None, false)
            .unwrap();
        assert_eq!(c.proxy.unwrap().to_string(), "http://proxy:8080");
        let env = ProxyEnv {
            no: Some("*".into()),
            ..env
        };
        let rules = ProxyRules::new(&ProxyConfig::default(), &env).unwrap();
        let c = rules
            .choose("p", "https://api.example.com", None, false)
            .unwrap();
        assert_eq!((c.proxy.is_none(), c.reason.as_str()), (true, "NO_PROXY"));
        let e = rules
            .choose("p", "https://api.example.com", None, true)
            .unwrap_err();
        assert!(
            e.message()
                .ends_with("(NO_PROXY exempts this host from the environment's proxy)")
        );
    }

    #[test]
    fn requires_proxy_without_any_proxy_is_an_error() {
        let rules = ProxyRules::new(&ProxyConfig::default(), &ProxyEnv::default()).unwrap();
        let e = rules.choose("p", "ftp://x", None, false).unwrap_err();
        assert_eq!(
            e.message(),
            "providers.p.base_url: expected an http:// or https:// URL"
        );
        let e = rules
            .choose("gemini", "https://g.example", None, true)
            .unwrap_err();
        assert_eq!(
            e.message(),
            "providers.gemini.requires_proxy: true, but no proxy is configured for https:// upstreams: \
             set proxy.https, providers.gemini.proxy or HTTPS_PROXY"
        );
        // The environment satisfies it, unless NO_PROXY exempts the host.
        let env = ProxyEnv {
            all: secret("socks5h://127.0.0.1:1080"),
            no: Some("g.example".into()),
            ..ProxyEnv::default()
        };
        let rules = ProxyRules::new(&ProxyConfig::default(), &env).unwrap();
        let c = rules
            .choose("gemini", "https://x.example", None, true)
            .unwrap();
        assert_eq!(c.reason, "ALL_PROXY");
        assert!(
            rules
                .choose("gemini", "https://g.example", None, true)
                .is_err()
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = ProxyConfig {
            https: secret("socks4://u:s3cret@h:1"),
            http: None,
        };
        let e = ProxyRules::new(&config, &ProxyEnv::default()).unwrap_err();
        assert!(
            e.message()
                .starts_with("proxy.https: unsupported proxy scheme"),
            "{}",
            e.message()
        );
        assert!(!e.message().contains("s3cret"));
        let own = SecretString::from("http://u:s3cret@h:1/x".to_owned());
        let rules = ProxyRules::new(&ProxyConfig::default(), &ProxyEnv::default()).unwrap();
        let e = rules
            .choose("deepseek", "https://d", Some(&own), false)
            .unwrap_err();
        assert!(
            e.message().starts_with("providers.deepseek.proxy: "),
            "{}",
            e.message()
        );
        let env = ProxyEnv {
            https: secret("gopher://u:s3cret@h"),
            ..ProxyEnv::default()
        };
        let rules = ProxyRules::new(&ProxyConfig::default(), &env).unwrap();
        let e = rules.choose("x", "https://d", None, false).unwrap_err();
        assert!(
            e.message()
                .starts_with("environment variable HTTPS_PROXY (or https_proxy): "),
            "{}",
            e.message()
        );
        // An unusable variable only matters to the providers that would use it.
        assert!(rules.choose("x", "http://d", None, false).is_ok());
    }
}
