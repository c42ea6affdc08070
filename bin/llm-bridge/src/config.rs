//! The config file (`configs/config.yaml`) and its `LLM_BRIDGE__SECTION__KEY` overrides.
//!
//! A config written for the Python LLM Bridge loads unchanged. Unknown keys are errors, and
//! every error names the file, the key path and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Yaml};
use indexmap::IndexMap;
use llm_bridge_auth::LimitsConfig;
use llm_bridge_core::RetryConfig;
use llm_bridge_core::{ProviderConfig, TlsConfig};
use llm_bridge_gateway::{ConsoleConfig, MetricsConfig, ServerConfig, TelemetryConfig};
pub use llm_bridge_http::ProxyConfig;
use llm_bridge_router::{CooldownConfig, RouteConfig};
use llm_bridge_usage::{ResponsesConfig, UsageConfig};
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Listening address and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstream providers by name.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
    /// The provider for model names without `provider/`.
    #[serde(default)]
    pub default_provider: Option<String>,
    /// Aliases that spread over several targets.
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    /// Retries of every request (providers and routes may override it).
    #[serde(default)]
    pub retry: RetryConfig,
    /// When a failing target is skipped for a while.
    #[serde(default)]
    pub cooldown: CooldownConfig,
    /// Outbound proxy for providers with `requires_proxy: true`
    /// (`proxy: { https: "socks5://127.0.0.1:7890", http: "" }`).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Trusted roots for every provider without its own `tls` (`tls: { ca_file: corp-ca.pem }`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Logs.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Usage records.
    #[serde(default)]
    pub usage: UsageConfig,
    /// How keys' budgets are enforced.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Answers kept for OpenAI Responses' `store`.
    #[serde(default)]
    pub responses: ResponsesConfig,
    /// `GET /metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry traces (OTLP/HTTP).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The operators' web console at `/console`.
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// The `logging` section, as the Python LLM Bridge wrote it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `json` (one object a line) or `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// `trace`, `debug`, `info`, `warning`/`warn` or `error`; `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// Where logs go.
    #[serde(default)]
    pub output: LogOutput,
    /// Accepted for compatibility with the Python LLM Bridge; access events always carry
    /// every field.
    #[serde(default)]
    pub fields: IndexMap<String, bool>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::default(),
            level: default_level(),
            output: LogOutput::default(),
            fields: IndexMap::new(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable lines.
    #[default]
    Text,
}

/// `logging.output`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogOutput {
    /// Log to the console (standard error).
    #[serde(default = "default_true")]
    pub console: bool,
    /// Log to a size-rotated file.
    #[serde(default)]
    pub file: Option<LogFile>,
}

impl Default for LogOutput {
    fn default() -> Self {
        LogOutput {
            console: true,
            file: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// `logging.output.file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// The file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// Rotate when the file would grow beyond this many bytes.
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// How many rotated files to keep.
    #[serde(default = "default_backup_count")]
    pub backup_count: usize,
}

fn default_max_size() -> u64 {
    10 * 1024 * 1024
}

fn default_backup_count() -> usize {
    5
}

/// A config that could not be loaded; its `Display` is the precise message for the user.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// Where the config comes from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// Whether the user named it (a missing named file is an error; a missing default is not).
    pub explicit: bool,
}

/// Environment variables that override config keys: `LLM_BRIDGE__SERVER__PORT=8080`.
pub const ENV_PREFIX: &str = "LLM_BRIDGE__";

impl AppConfig {
    /// Loads the file (if present) and the `LLM_BRIDGE__…` environment overrides.
    pub fn load(source: &ConfigSource) -> Result<AppConfig, ConfigError> {
        let mut figment = Figment::new();
        if source.path.exists() {
            figment = figment.merge(Yaml::file_exact(&source.path));
        } else if source.explicit {
            return Err(ConfigError(format!(
                "{}: config file not found",
                source.path.display()
            )));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::extract(figment, &source.path)
    }

    /// Loads a config from YAML text (tests, embedding).
    pub fn from_yaml(yaml: &str) -> Result<AppConfig, ConfigError> {
        Self::extract(Figment::from(Yaml::string(yaml)), Path::new("<inline>"))
    }

    fn extract(figment: Figment, path: &Path) -> Result<AppConfig, ConfigError> {
        let config: AppConfig = figment
            .extract()
            .map_err(|e| ConfigError(describe(e, path)))?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let at = |key: String, msg: &str| ConfigError(format!("{}: {key}: {msg}", path.display()));
        if self.server.workers == Some(0) {
            return Err(at("server.workers".into(), "must be at least 1"));
        }
        for (name, p) in &self.providers {
            if name.is_empty() || name.contains('/') {
                return Err(at(
                    format!("providers.{name}"),
                    "a provider name must be non-empty and contain no '/'",
                ));
            }
            if p.base_url.trim().is_empty() {
                return Err(at(
                    format!("providers.{name}.base_url"),
                    "must not be empty",
                ));
            }
        }
        if let Some(default) = &self.default_provider {
            if !self.providers.contains_key(default) {
                return Err(at(
                    "default_provider".into(),
                    &format!("no provider named '{default}'"),
                ));
            }
        }
        level_directive(&self.logging.level).map_err(|m| at("logging.level".into(), &m))?;
        if self.limits.backend == llm_bridge_auth::LimitsBackend::Redis {
            match self.limits.url.as_deref() {
                None | Some("") => {
                    return Err(at(
                        "limits.url".into(),
                        "backend: redis needs the Redis URL (redis://host:6379/0)",
                    ));
                }
                Some(url) if !url.starts_with("redis://") && !url.starts_with("redis+unix://") => {
                    return Err(at(
                        "limits.url".into(),
                        "must be a redis:// or redis+unix:// URL (TLS is not built in)",
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// `warning` (the Python name) → `warn`; anything else must be a tracing level.
pub fn level_directive(level: &str) -> Result<&'static str, String> {
    Ok(match level.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        other => {
            return Err(format!(
                "expected one of trace, debug, info, warning, error, found \"{other}\""
            ));
        }
    })
}

/// Every error figment found, one line each: `file: key.path: expected …, found …`.
fn describe(error: figment::Error, path: &Path) -> String {
    error
        .into_iter()
        .map(|e| {
            let origin = match e.metadata.as_ref() {
                Some(md) if md.name.contains("environment") => {
                    format!(
                        "environment variable {ENV_PREFIX}{}",
                        e.path.join("__").to_uppercase()
                    )
                }
                _ => path.display().to_string(),
            };
            // figment puts an unknown key at the end of its path: name its parent instead.
            let mut path = e.path.clone();
            if let Kind::UnknownField(field, _) = &e.kind {
                if path.last() == Some(field) {
                    path.pop();
                }
            }
            let key = if path.is_empty() {
                String::new()
            } else {
                format!("{}: ", path.join("."))
            };
            format!("{origin}: {key}{}", kind_text(&e.kind))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kind_text(kind: &Kind) -> String {
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {}", actual_text(actual))
        }
        Kind::UnknownField(field, expected) => {
            if expected.is_empty() {
                format!("unknown key '{field}'")
            } else {
                format!(
                    "unknown key '{field}' (expected one of: {})",
                    expected.join(", ")
                )
            }
        }
        Kind::UnknownVariant(v, expected) => {
            format!(
                "unknown value \"{v}\" (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::MissingField(f) => format!("missing required key '{f}'"),
        Kind::DuplicateField(f) => format!("key '{f}' appears twice"),
        other => other.to_string(),
    }
}

fn actual_text(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("\"{s}\""),
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Seq => "a list".into(),
        Actual::Map => "a mapping".into(),
        Actual::Unit | Actual::Option => "nothing".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_bridge_core::secrecy::ExposeSecret;
    use llm_bridge_http::{ProxyEnv, ProxyRules, ProxyScheme};

    /// The Python LLM Bridge's own `configs/config.yaml` (github.com/Rundao/LLM-Bridge).
    const PYTHON_CONFIG: &str = include_str!("../tests/fixtures/python-llm-bridge-config.yaml");

    #[test]
    fn the_python_config_loads_unchanged() {
        let c = AppConfig::from_yaml(PYTHON_CONFIG).unwrap();
        assert_eq!(c.providers.len(), 3);
        let closeai = &c.providers["closeai"];
        assert_eq!(closeai.adapter, "openai");
        assert_eq!(closeai.models["o3-mini<high>"].timeout().as_secs(), 600);
        assert_eq!(
            c.providers["deepseek"].models["deepseek-reasoner"]
                .param_config
                .rename_params["max_tokens"],
            "max_reasoning_token"
        );
        assert_eq!(
            c.proxy.https.as_ref().map(|p| p.expose_secret()),
            Some("socks5://127.0.0.1:7890")
        );
        assert_eq!(c.logging.format, LogFormat::Json);
        assert_eq!(c.logging.output.file.as_ref().unwrap().backup_count, 5);
    }

    #[test]
    fn the_python_config_resolves_to_its_socks_proxy() {
        let c = AppConfig::from_yaml(PYTHON_CONFIG).unwrap();
        let rules = ProxyRules::new(&c.proxy, &ProxyEnv::default()).unwrap();
        let choose = |name: &str| {
            let p = &c.providers[name];
            rules
                .choose(name, &p.base_url, p.proxy.as_ref(), p.requires_proxy)
                .unwrap()
        };
        let gemini = choose("gemini");
        let proxy = gemini.proxy.unwrap();
        assert_eq!(proxy.scheme(), ProxyScheme::Socks5);
        assert_eq!(proxy.to_string(), "socks5://127.0.0.1:7890");
        assert_eq!(gemini.reason, "proxy.https");
        assert!(choose("closeai").proxy.is_none());
        assert!(choose("deepseek").proxy.is_none());
    }

    #[test]
    fn proxy_and_tls_keys_are_checked() {
        let c = AppConfig::from_yaml(
            "proxy: { https: \"http://u:s3cret@127.0.0.1:3128\", http: \"\" }\ntls: { ca_file: corp.pem }\n",
        )
        .unwrap();
        assert!(c.proxy.http.is_none());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            c.tls.unwrap().ca_file.unwrap(),
            std::path::PathBuf::from("corp.pem")
        );
        let e = AppConfig::from_yaml("server: { workers: 0 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.workers: must be at least 1"), "{e}");
        let c = AppConfig::from_yaml("server: { workers: 3 }\n").unwrap();
        assert_eq!(c.server.workers, Some(3));
        assert_eq!(AppConfig::from_yaml("{}\n").unwrap().server.workers, None);
        let e = AppConfig::from_yaml("proxy: { socks: x }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxy: unknown key 'socks'"), "{e}");
        let e = AppConfig::from_yaml(
            "providers:\n  p:\n    adapter: openai\n    base_url: https://x\n    tls: { native: true }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("providers.p.tls: unknown key 'native'"), "{e}");
    }

    #[test]
    fn errors_name_the_key_path_and_the_expectation() {
        let e = AppConfig::from_yaml(
            "providers:\n  gemini:\n    adapter: gemini\n    base_url: http://x\n    models:\n      x: { timeout: fast }\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "<inline>: providers.gemini.models.x.timeout: expected a number of seconds, found \"fast\""
        );
    }

    #[test]
    fn unknown_keys_are_reported() {
        let e = AppConfig::from_yaml("server: { prot: 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server: unknown key 'prot'"), "{e}");
        let e = AppConfig::from_yaml("surver: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key 'surver'"), "{e}");
    }

    #[test]
    fn bad_levels_and_default_providers_are_reported() {
        let e = AppConfig::from_yaml("logging: { level: loud }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("logging.level"), "{e}");
        let e = AppConfig::from_yaml("default_provider: nope\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("default_provider: no provider named 'nope'"),
            "{e}"
        );
    }
}
