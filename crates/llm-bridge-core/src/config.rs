//! Provider and model settings shared by every adapter (`providers.<name>` in the config).
//!
//! Plain typed structs: the binary reads the file and the environment; libraries only
//! receive these. Unknown keys are errors, so a typo never silently does nothing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::prices::{self, AppliedPrice, PriceOrigin};
use crate::request::ChatRequest;

/// One `providers.<name>` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which wire protocol the upstream speaks (`openai`, `gemini`, …).
    pub adapter: String,
    /// The API root (`https://api.openai.com/v1`) or the full endpoint URL.
    pub base_url: String,
    /// Whether requests go through the configured outbound proxy.
    #[serde(default)]
    pub requires_proxy: bool,
    /// This provider's own proxy URL (`http://`, `https://`, `socks5://`, `socks5h://`, with
    /// `user:pass@` if needed); it overrides `proxy.https`/`proxy.http` and the environment.
    /// `none` connects directly whatever else is configured; `""` is the same as absent.
    /// A secret: the URL may carry credentials.
    #[serde(default, deserialize_with = "optional_secret")]
    pub proxy: Option<SecretString>,
    /// Trusted roots for this provider's HTTPS connections; replaces the top-level `tls`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Provider API keys (a comma-separated string or a list); `<NAME>_API_KEY` overrides.
    #[serde(default)]
    pub api_key: ApiKeys,
    /// Models served, by the name clients use; `"*"` passes any other name through.
    #[serde(default)]
    pub models: IndexMap<String, ModelConfig>,
    /// Whether to ask an OpenAI-compatible upstream for the final usage chunk of a stream
    /// (`stream_options.include_usage`); switch off for upstreams that reject the option.
    #[serde(default = "default_true")]
    pub stream_usage: bool,
    /// Retries of this provider's requests (else the top-level `retry`).
    #[serde(default)]
    pub retry: Option<crate::RetryConfig>,
    /// `adapter: anthropic`: the `anthropic-version` header sent upstream (default
    /// `2023-06-01`).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// `adapter: anthropic`: beta features, sent as one comma-separated `anthropic-beta`
    /// header.
    #[serde(default)]
    pub anthropic_beta: Vec<String>,
    /// `adapter: openai`: whether the upstream speaks OpenAI's Responses API itself
    /// (`native`: `/v1/responses` requests go through as bytes) or only chat completions
    /// (`translate`). Default: `native` for `api.openai.com`, else `translate`.
    #[serde(default)]
    pub responses: Option<ResponsesMode>,
}

/// How an OpenAI-compatible provider serves `/v1/responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesMode {
    /// The upstream speaks Responses: requests are forwarded as bytes.
    Native,
    /// The upstream speaks only chat completions: requests are translated.
    Translate,
}

impl ProviderConfig {
    /// This provider's models, with its family in the built-in price catalog.
    pub fn catalog(&self) -> ModelCatalog {
        ModelCatalog::new(self.models.clone())
            .with_family(prices::family_for(&self.adapter, &self.base_url))
    }
}

fn default_true() -> bool {
    true
}

/// A string that may hold credentials; empty means absent (`proxy: ""`).
fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value
        .filter(|v| !v.trim().is_empty())
        .map(SecretString::from))
}

/// Which certificates an HTTPS connection trusts (`tls` in the config). The Mozilla (webpki)
/// roots are always trusted; these add to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of extra root certificates (a corporate CA, a self-signed upstream).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Also trust the operating system's certificate store.
    #[serde(default)]
    pub native_roots: bool,
}

/// `<NAME>_API_KEY`: the environment variable that holds a provider's keys
/// (`closeai` → `CLOSEAI_API_KEY`, `my-proxy` → `MY_PROXY_API_KEY`).
pub fn api_key_env_var(provider: &str) -> String {
    let mut s: String = provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    s.push_str("_API_KEY");
    s
}

/// The upstream API keys of a provider; never printed.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<SecretString>);

impl ApiKeys {
    /// Keys from a comma-separated list; blanks are dropped.
    pub fn from_list(list: &str) -> ApiKeys {
        ApiKeys(
            list.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| SecretString::from(k.to_owned()))
                .collect(),
        )
    }

    /// The keys.
    pub fn keys(&self) -> &[SecretString] {
        &self.0
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys([{} redacted])", self.0.len())
    }
}

impl<'de> Deserialize<'de> for ApiKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let raw = Option::<Raw>::deserialize(d).map_err(|_| {
            de::Error::custom("expected an API key string, a comma-separated list or a list")
        })?;
        Ok(match raw {
            None => ApiKeys::default(),
            Some(Raw::One(s)) => ApiKeys::from_list(&s),
            Some(Raw::Many(v)) => ApiKeys::from_list(&v.join(",")),
        })
    }
}

/// One `providers.<name>.models.<model>` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's ceiling: a request asking for more tokens is lowered to it.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Bounds the wait for response headers and, in a stream, between two chunks.
    #[serde(default)]
    pub timeout: Option<Seconds>,
    /// Request rewriting for this model.
    #[serde(default)]
    pub param_config: ParamConfig,
    /// The name sent upstream; by default the configured name without a `<…>` tag
    /// (`o3-mini<high>` is sent as `o3-mini`).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Prices, for the cost in usage records.
    #[serde(default)]
    pub price: Option<Price>,
    /// What the model serves; inferred from its name when absent ([`ModelEntry::kind`]).
    #[serde(default)]
    pub kind: Option<ModelKind>,
}

/// What a model serves: chat completions (and the dialects translated to them) or embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat completions.
    Chat,
    /// Embeddings (`POST /v1/embeddings`).
    Embedding,
}

impl ModelKind {
    /// `chat` or `embedding`, as `/v1/models` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }

    /// The kind a model name says it is: names with `embed` in them (`text-embedding-3-small`,
    /// `gemini-embedding-001`, `text-embedding-004`, `nomic-embed-text`) are embedding models,
    /// every other name a chat model.
    pub fn of_name(name: &str) -> ModelKind {
        let name = name.rsplit('/').next().unwrap_or(name);
        if name.to_ascii_lowercase().contains("embed") {
            ModelKind::Embedding
        } else {
            ModelKind::Chat
        }
    }
}

/// Prices of a model in currency units (e.g. USD) per million tokens (the built-in catalog's
/// are USD: [`crate::prices`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens not served from cache.
    pub input: f64,
    /// Per million completion tokens (reasoning included unless `reasoning` is set).
    pub output: f64,
    /// Per million prompt tokens served from cache; `input` when absent.
    #[serde(default)]
    pub cached: Option<f64>,
    /// Per million prompt tokens written to the cache (Anthropic's cache writes); `input`
    /// when absent.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Per million reasoning tokens, for models that price them apart from output; `output`
    /// when absent.
    #[serde(default)]
    pub reasoning: Option<f64>,
}

impl Price {
    /// The cost of a request with these counts. Each prompt token is charged once: cache
    /// reads at `cached`, cache writes at `cache_write`, the rest at `input` (`prompt_tokens`
    /// counts all three). Each completion token is charged once too: reasoning tokens (part of
    /// `completion_tokens`) at `reasoning` when it is set, else like the rest at `output`.
    pub fn cost(&self, usage: &crate::Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let reasoning = match self.reasoning {
            Some(_) => usage.reasoning_tokens.min(usage.completion_tokens),
            None => 0,
        };
        let answer = usage.completion_tokens - reasoning;
        (fresh as f64 * self.input
            + cached as f64 * self.cached.unwrap_or(self.input)
            + written as f64 * self.cache_write.unwrap_or(self.input)
            + answer as f64 * self.output
            + reasoning as f64 * self.reasoning.unwrap_or(self.output))
            / 1_000_000.0
    }
}

/// The default `timeout` when a model names none (the Python LLM Bridge's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

impl ModelConfig {
    /// The effective timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .map(Seconds::duration)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Applies the `max_tokens` ceiling, then `param_config`, to a request.
    pub fn apply(&self, request: &mut ChatRequest) {
        // Only a change parses the body: a request left as sent goes upstream as its bytes.
        if let Some(ceiling) = self.max_tokens {
            let over = |asked: Option<u64>| asked.is_some_and(|asked| asked > ceiling);
            if over(request.max_tokens()) || over(request.max_completion_tokens()) {
                for key in ["max_tokens", "max_completion_tokens"] {
                    if let Some(v) = request.body_mut().get_mut(key) {
                        if v.as_u64().is_some_and(|asked| asked > ceiling) {
                            *v = Value::from(ceiling);
                        }
                    }
                }
            }
        }
        if !self.param_config.is_empty() {
            self.param_config.apply(request.body_mut());
        }
    }
}

/// Request rewriting, in this order: update (overwrite), add (only if absent), rename, delete.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamConfig {
    /// Fields set whatever the client sent.
    #[serde(default)]
    pub update_params: Map<String, Value>,
    /// Fields set only when the client did not send them.
    #[serde(default)]
    pub add_params: Map<String, Value>,
    /// Fields renamed (`old: new`).
    #[serde(default)]
    pub rename_params: IndexMap<String, String>,
    /// Fields removed.
    #[serde(default)]
    pub delete_params: Vec<String>,
}

impl ParamConfig {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.update_params.is_empty()
            && self.add_params.is_empty()
            && self.rename_params.is_empty()
            && self.delete_params.is_empty()
    }

    /// Rewrites a request body.
    pub fn apply(&self, body: &mut Map<String, Value>) {
        if self.is_empty() {
            return;
        }
        for (k, v) in &self.update_params {
            body.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add_params {
            if !body.contains_key(k) {
                body.insert(k.clone(), v.clone());
            }
        }
        for (old, new) in &self.rename_params {
            if let Some(v) = body.shift_remove(old) {
                body.insert(new.clone(), v);
            }
        }
        for k in &self.delete_params {
            body.shift_remove(k);
        }
    }
}

/// A duration written in the config as a number of seconds (`120`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub f64);

impl Seconds {
    /// As a `Duration`.
    pub fn duration(self) -> Duration {
        Duration::try_from_secs_f64(self.0).unwrap_or(Duration::ZERO)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                if v < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                Ok(Seconds(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                if !v.is_finite() || !(0.0..=1e9).contains(&v) {
                    return Err(E::invalid_value(de::Unexpected::Float(v), &self));
                }
                Ok(Seconds(v))
            }
            /// `"30"` (a number written as text, as environment variables are).
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                match v.trim().parse::<f64>() {
                    Ok(n) => self.visit_f64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The models of one provider, for name resolution, prices and `/v1/models`.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    models: IndexMap<String, ModelConfig>,
    /// The provider's family in the built-in price catalog, when known.
    family: Option<&'static str>,
}

/// A model found in a [`ModelCatalog`].
#[derive(Debug, Clone, Copy)]
pub struct ModelEntry<'a> {
    /// The name the client used.
    pub name: &'a str,
    /// Its settings (the `"*"` entry's for a passed-through name).
    pub config: &'a ModelConfig,
    /// Whether it matched `"*"` rather than its own entry.
    pub wildcard: bool,
}

impl ModelEntry<'_> {
    /// The name to send upstream.
    pub fn upstream_name(&self) -> &str {
        if let Some(name) = &self.config.upstream_model {
            if !self.wildcard {
                return name;
            }
        }
        strip_tag(self.name)
    }

    /// What the model serves: its configured `kind` (its own entry's, not a `"*"` entry's),
    /// else what its upstream name says ([`ModelKind::of_name`]).
    pub fn kind(&self) -> ModelKind {
        match self.config.kind {
            Some(kind) if !self.wildcard => kind,
            _ => ModelKind::of_name(self.upstream_name()),
        }
    }
}

/// `o3-mini<high>` → `o3-mini`: a `<…>` tag distinguishes configured variants of one model.
fn strip_tag(name: &str) -> &str {
    match (name.rfind('<'), name.ends_with('>')) {
        (Some(i), true) if i > 0 => &name[..i],
        _ => name,
    }
}

impl ModelCatalog {
    /// A catalog of these models.
    pub fn new(models: IndexMap<String, ModelConfig>) -> Self {
        ModelCatalog {
            models,
            family: None,
        }
    }

    /// The same catalog, its prices looked up in this family of the built-in catalog
    /// ([`crate::prices::family_for`]); `None` searches every family.
    pub fn with_family(mut self, family: Option<&'static str>) -> Self {
        self.family = family;
        self
    }

    /// The family of the built-in price catalog this provider's models are looked up in.
    pub fn family(&self) -> Option<&'static str> {
        self.family
    }

    /// The price that applies to a model (by the name the client used): its `price:` in the
    /// config, else the built-in catalog's for the name sent upstream (or, failing that, the
    /// configured name). `None`: the model is not served, or nothing prices it.
    pub fn price(&self, name: &str) -> Option<AppliedPrice> {
        let entry = self.lookup(name)?;
        if let Some(price) = entry.config.price {
            return Some(AppliedPrice {
                price,
                origin: PriceOrigin::Config,
            });
        }
        let upstream = entry.upstream_name();
        let found = prices::find(self.family, upstream).or_else(|| {
            (strip_tag(entry.name) != upstream)
                .then(|| prices::find(self.family, entry.name))
                .flatten()
        })?;
        Some(AppliedPrice {
            price: found.price(),
            origin: PriceOrigin::Catalog(found),
        })
    }

    /// Finds a model by the name the client used: its own entry, else `"*"`.
    pub fn lookup<'a>(&'a self, name: &'a str) -> Option<ModelEntry<'a>> {
        if let Some((key, config)) = self.models.get_key_value(name) {
            if key != "*" {
                return Some(ModelEntry {
                    name: key,
                    config,
                    wildcard: false,
                });
            }
        }
        self.models.get("*").map(|config| ModelEntry {
            name,
            config,
            wildcard: true,
        })
    }

    /// Whether the model has its own entry (not only through `"*"`).
    pub fn lists(&self, name: &str) -> bool {
        name != "*" && self.models.contains_key(name)
    }

    /// The names with their own entries, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str).filter(|k| *k != "*")
    }

    /// Whether any name is passed through.
    pub fn has_wildcard(&self) -> bool {
        self.models.contains_key("*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(v: Value) -> ModelConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn param_config_runs_update_add_rename_delete_in_order() {
        let m = model(json!({
            "max_tokens": 100,
            "param_config": {
                "update_params": {"temperature": 0.6},
                "add_params": {"reasoning_effort": "low", "top_p": 0.1},
                "rename_params": {"max_tokens": "max_reasoning_token"},
                "delete_params": ["presence_penalty"]
            }
        }));
        let mut r = ChatRequest::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 1.0, "top_p": 0.9, "max_tokens": 500, "presence_penalty": 1
        }))
        .unwrap();
        m.apply(&mut r);
        let b = r.body();
        assert_eq!(b["temperature"], json!(0.6));
        assert_eq!(b["top_p"], json!(0.9));
        assert_eq!(b["reasoning_effort"], json!("low"));
        assert_eq!(b["max_reasoning_token"], json!(100));
        assert!(!b.contains_key("max_tokens"));
        assert!(!b.contains_key("presence_penalty"));
    }

    #[test]
    fn ceiling_only_lowers() {
        let m = model(json!({"max_tokens": 100}));
        let mut r = ChatRequest::from_value(json!({
            "model": "m", "messages": [{"role": "user"}], "max_completion_tokens": 50
        }))
        .unwrap();
        m.apply(&mut r);
        assert_eq!(r.body()["max_completion_tokens"], json!(50));
        assert!(!r.body().contains_key("max_tokens"));
    }

    #[test]
    fn seconds_reject_words() {
        let e = serde_json::from_value::<ModelConfig>(json!({"timeout": "fast"})).unwrap_err();
        assert!(
            e.to_string().contains("expected a number of seconds"),
            "{e}"
        );
        let m = model(json!({"timeout": 0.5}));
        assert_eq!(m.timeout(), Duration::from_millis(500));
        assert_eq!(ModelConfig::default().timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn catalog_prefers_own_entry_then_wildcard_and_strips_tags() {
        let cat = ModelCatalog::new(
            serde_json::from_value(json!({
                "o3-mini<high>": {"timeout": 600},
                "gpt-4o": {"upstream_model": "gpt-4o-2024-08-06"},
                "*": {}
            }))
            .unwrap(),
        );
        let e = cat.lookup("o3-mini<high>").unwrap();
        assert_eq!(e.upstream_name(), "o3-mini");
        assert!(!e.wildcard);
        assert_eq!(
            cat.lookup("gpt-4o").unwrap().upstream_name(),
            "gpt-4o-2024-08-06"
        );
        let w = cat.lookup("anything").unwrap();
        assert!(w.wildcard);
        assert_eq!(w.upstream_name(), "anything");
        assert_eq!(cat.names().collect::<Vec<_>>(), ["o3-mini<high>", "gpt-4o"]);
        assert!(ModelCatalog::default().lookup("x").is_none());
    }

    #[test]
    fn cost_counts_cached_tokens_at_their_price() {
        let p = Price {
            input: 2.5,
            output: 10.0,
            cached: Some(1.25),
            cache_write: None,
            reasoning: None,
        };
        let u = crate::Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            total_tokens: 1_100_000,
            cached_tokens: 400_000,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        };
        assert!((p.cost(&u) - (0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)).abs() < 1e-9);
    }

    #[test]
    fn cost_charges_each_prompt_token_once_cache_writes_at_their_price() {
        let u = crate::Usage {
            cached_tokens: 500_000,
            cache_write_tokens: 200_000,
            ..crate::Usage::new(1_000_000, 0)
        };
        let p = Price {
            input: 3.0,
            output: 15.0,
            cached: Some(0.3),
            cache_write: Some(3.75),
            reasoning: None,
        };
        assert!((p.cost(&u) - (0.3 * 3.0 + 0.5 * 0.3 + 0.2 * 3.75)).abs() < 1e-9);
        // Without a cache-write price, writes cost what input costs.
        let p = Price {
            cache_write: None,
            ..p
        };
        assert!((p.cost(&u) - (0.5 * 3.0 + 0.5 * 0.3)).abs() < 1e-9);
        // Counts that do not add up never charge a token twice.
        let odd = crate::Usage {
            cached_tokens: 800_000,
            cache_write_tokens: 800_000,
            ..crate::Usage::new(1_000_000, 0)
        };
        assert!((p.cost(&odd) - (0.8 * 0.3 + 0.2 * 3.0)).abs() < 1e-9);
    }

    #[test]
    fn config_price_wins_then_the_catalog_by_upstream_then_configured_name() {
        let provider: ProviderConfig = serde_json::from_value(json!({
            "adapter": "openai", "base_url": "https://api.openai.com/v1",
            "models": {
                "gpt-4o": {"price": {"input": 1, "output": 2}},
                "fast<low>": {"upstream_model": "gpt-4o-mini"},
                "o3-mini<high>": {},
                "gpt-4o-2024-08-06": {"upstream_model": "my-deployment"},
                "house-model": {}
            }
        }))
        .unwrap();
        let cat = provider.catalog();
        assert_eq!(cat.family(), Some("openai"));
        let p = cat.price("gpt-4o").unwrap();
        assert_eq!((p.price.input, p.origin), (1.0, PriceOrigin::Config));
        let origin = |m: &str| cat.price(m).map(|p| p.origin.to_string());
        assert_eq!(origin("fast<low>").unwrap(), "catalog: openai/gpt-4o-mini");
        assert_eq!(origin("o3-mini<high>").unwrap(), "catalog: openai/o3-mini");
        assert_eq!(
            origin("gpt-4o-2024-08-06").unwrap(),
            "catalog: openai/gpt-4o-2024-08-06"
        );
        assert_eq!(origin("house-model"), None);
        assert_eq!(origin("not-served"), None);
        // A provider of unknown family finds models in any family.
        let proxy: ProviderConfig = serde_json::from_value(json!({
            "adapter": "openai", "base_url": "https://closeai.example/v1", "models": {"*": {}}
        }))
        .unwrap();
        assert_eq!(
            proxy
                .catalog()
                .price("claude-sonnet-4-5")
                .unwrap()
                .origin
                .to_string(),
            "catalog: anthropic/claude-sonnet-4-5"
        );
    }

    #[test]
    fn env_var_names() {
        assert_eq!(api_key_env_var("closeai"), "CLOSEAI_API_KEY");
        assert_eq!(api_key_env_var("my-proxy.2"), "MY_PROXY_2_API_KEY");
    }

    #[test]
    fn provider_proxy_is_secret_and_empty_means_absent() {
        let p: ProviderConfig = serde_json::from_value(json!({
            "adapter": "openai", "base_url": "https://x",
            "proxy": "socks5h://alice:s3cret@127.0.0.1:1080",
            "tls": {"ca_file": "/etc/corp-ca.pem", "native_roots": true}
        }))
        .unwrap();
        assert!(p.proxy.is_some());
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(
            p.tls.unwrap().ca_file.unwrap(),
            PathBuf::from("/etc/corp-ca.pem")
        );
        let p: ProviderConfig = serde_json::from_value(
            json!({"adapter": "openai", "base_url": "https://x", "proxy": ""}),
        )
        .unwrap();
        assert!(p.proxy.is_none());
        let e = serde_json::from_value::<TlsConfig>(json!({"ca": "x"})).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn api_keys_never_print() {
        let k: ApiKeys = serde_json::from_value(json!("sk-one, sk-two")).unwrap();
        assert_eq!(k.keys().len(), 2);
        assert!(!format!("{k:?}").contains("sk-"));
    }
}
