//! The built-in price catalog: per model, USD per million tokens and token limits, compiled into
//! the binary from a models.dev snapshot (`cargo xtask prices`; see [`SOURCE`], [`SNAPSHOT_DATE`]).
//!
//! A model's `price:` in the config wins over the catalog; [`crate::ModelCatalog::price`] tells
//! which applies. Lookups go by provider family (`openai`, `anthropic`, `google`, `deepseek`, …,
//! see [`family_for`]) and model name, forgiving the names clients and configs use: a `<…>`
//! variant tag is dropped (`o3-mini<high>` → `o3-mini`), and a dated name falls back to its
//! undated entry (`gpt-4o-2024-08-06` when there is no such entry → `gpt-4o`).

use std::fmt;

use crate::config::Price;

mod table;

pub use table::{SNAPSHOT_DATE, SOURCE};

/// One model in the built-in catalog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogEntry {
    /// The provider family (`openai`, `anthropic`, `google`, `deepseek`, `openrouter`, …).
    pub family: &'static str,
    /// The model name as the provider's API takes it.
    pub model: &'static str,
    /// USD per million prompt tokens (not cached).
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million prompt tokens read from the cache.
    pub cache_read: Option<f64>,
    /// USD per million prompt tokens written to the cache.
    pub cache_write: Option<f64>,
    /// USD per million reasoning tokens, when priced apart from output.
    pub reasoning: Option<f64>,
    /// The context window in tokens (0: not known).
    pub context: u32,
    /// The most tokens one answer may have (0: not known).
    pub max_output: u32,
}

impl CatalogEntry {
    /// The entry's prices in the config's terms.
    pub fn price(&self) -> Price {
        Price {
            input: self.input,
            output: self.output,
            cached: self.cache_read,
            cache_write: self.cache_write,
            reasoning: self.reasoning,
        }
    }
}

/// Every model in the catalog, sorted by family, then model.
pub fn entries() -> &'static [CatalogEntry] {
    table::ENTRIES
}

/// The entry of exactly this family and model.
pub fn get(family: &str, model: &str) -> Option<&'static CatalogEntry> {
    let entries = table::ENTRIES;
    entries
        .binary_search_by(|e| (e.family, e.model).cmp(&(family, model)))
        .ok()
        .map(|i| &entries[i])
}

/// Whether the catalog has models of this family.
pub fn is_family(family: &str) -> bool {
    family_range(family).is_some()
}

/// Finds a model's entry: in `family` when it is known, else in any family (the vendors'
/// own before `openrouter`'s). The name may carry a `<…>` tag or a date the catalog does not
/// list; with no family, `vendor/model` is also tried as family `vendor`.
pub fn find(family: Option<&str>, model: &str) -> Option<&'static CatalogEntry> {
    let name = strip_tag(model);
    let undated = strip_date(name);
    let names = [Some(name), undated];
    for name in names.into_iter().flatten() {
        let found = match family {
            Some(f) => get(f, name),
            None => any_family(name),
        };
        if found.is_some() {
            return found;
        }
    }
    match (family, name.split_once('/')) {
        (None, Some((vendor, rest))) if is_family(vendor) => find(Some(vendor), rest),
        _ => None,
    }
}

/// The catalog family of a configured provider: by the host of its `base_url` when it is a
/// vendor's own API, else by its adapter (`anthropic`, `gemini` → `google`). `None` (an
/// OpenAI-compatible proxy, a local server) means lookups search every family.
pub fn family_for(adapter: &str, base_url: &str) -> Option<&'static str> {
    let host = host(base_url);
    let by_host = match host.as_str() {
        "api.openai.com" => Some("openai"),
        "api.deepseek.com" => Some("deepseek"),
        "api.anthropic.com" => Some("anthropic"),
        "generativelanguage.googleapis.com" => Some("google"),
        "api.mistral.ai" => Some("mistral"),
        "api.x.ai" => Some("xai"),
        "api.moonshot.ai" | "api.moonshot.cn" => Some("moonshotai"),
        "dashscope.aliyuncs.com" | "dashscope-intl.aliyuncs.com" => Some("alibaba"),
        "openrouter.ai" => Some("openrouter"),
        _ => None,
    };
    by_host.or(match adapter {
        "anthropic" => Some("anthropic"),
        "gemini" => Some("google"),
        _ => None,
    })
}

/// A price and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppliedPrice {
    /// The prices.
    pub price: Price,
    /// Where they came from.
    pub origin: PriceOrigin,
}

/// Where a model's price came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceOrigin {
    /// The model's `price:` in the config.
    Config,
    /// The built-in catalog.
    Catalog(&'static CatalogEntry),
}

impl fmt::Display for PriceOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceOrigin::Config => f.write_str("config"),
            PriceOrigin::Catalog(e) => write!(f, "catalog: {}/{}", e.family, e.model),
        }
    }
}

/// The entries of one family (they are contiguous).
fn family_range(family: &str) -> Option<std::ops::Range<usize>> {
    let entries = table::ENTRIES;
    let start = entries.partition_point(|e| e.family < family);
    let end = entries.partition_point(|e| e.family <= family);
    (start < end).then_some(start..end)
}

/// `name` in any family, `openrouter` (a reseller listing other vendors' models) last.
fn any_family(name: &str) -> Option<&'static CatalogEntry> {
    let entries = table::ENTRIES;
    let mut resold = None;
    let mut start = 0;
    while start < entries.len() {
        let family = entries[start].family;
        let end = start + entries[start..].partition_point(|e| e.family == family);
        if let Ok(i) = entries[start..end].binary_search_by(|e| e.model.cmp(name)) {
            let found = &entries[start + i];
            if family != "openrouter" {
                return Some(found);
            }
            resold = Some(found);
        }
        start = end;
    }
    resold
}

/// `o3-mini<high>` → `o3-mini`.
fn strip_tag(name: &str) -> &str {
    match (name.rfind('<'), name.ends_with('>')) {
        (Some(i), true) if i > 0 => &name[..i],
        _ => name,
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-3-5-haiku-20241022` → `claude-3-5-haiku`.
fn strip_date(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let b = name.as_bytes();
    if b.len() > 11 && b[b.len() - 11] == b'-' {
        let d = &name[b.len() - 10..];
        if digits(&d[..4])
            && &d[4..5] == "-"
            && digits(&d[5..7])
            && &d[7..8] == "-"
            && digits(&d[8..])
        {
            return Some(&name[..b.len() - 11]);
        }
    }
    if b.len() > 9 && b[b.len() - 9] == b'-' && digits(&name[b.len() - 8..]) {
        return Some(&name[..b.len() - 9]);
    }
    None
}

/// The lowercased host of a URL, without user info or port.
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search_and_has_provenance() {
        let e = entries();
        assert!(e.len() > 300);
        assert!(
            e.windows(2)
                .all(|w| (w[0].family, w[0].model) < (w[1].family, w[1].model))
        );
        assert!(SOURCE.contains("models.dev"));
        assert_eq!(SNAPSHOT_DATE.len(), 10);
    }

    #[test]
    fn finds_by_family_tag_date_and_vendor_prefix() {
        let gpt4o = get("openai", "gpt-4o").unwrap();
        assert_eq!((gpt4o.input, gpt4o.output), (2.5, 10.0));
        assert_eq!(gpt4o.cache_read, Some(1.25));
        assert_eq!((gpt4o.context, gpt4o.max_output), (128_000, 16_384));
        // A dated name the catalog lists is its own entry; one it does not list falls back.
        assert_eq!(
            find(Some("openai"), "gpt-4o-2024-08-06").unwrap().model,
            "gpt-4o-2024-08-06"
        );
        assert_eq!(
            find(Some("openai"), "gpt-4o-2099-01-01").unwrap().model,
            "gpt-4o"
        );
        assert_eq!(
            find(Some("openai"), "o3-mini<high>").unwrap().model,
            "o3-mini"
        );
        assert_eq!(
            find(Some("anthropic"), "claude-sonnet-4-5-20990101")
                .unwrap()
                .model,
            "claude-sonnet-4-5"
        );
        // The family confines the search; without one every family is searched.
        assert!(find(Some("google"), "gpt-4o").is_none());
        assert_eq!(find(None, "deepseek-chat").unwrap().family, "deepseek");
        assert_eq!(find(None, "gemini-2.5-pro").unwrap().family, "google");
        // `vendor/model`: a reseller's entry when it has one, else the vendor's own.
        assert_eq!(
            find(None, "anthropic/claude-haiku-4.5").unwrap().family,
            "openrouter"
        );
        let own = find(None, "anthropic/claude-sonnet-4-5<thinking>").unwrap();
        assert_eq!((own.family, own.model), ("anthropic", "claude-sonnet-4-5"));
        assert!(find(None, "my-local-llama").is_none());
    }

    #[test]
    fn families_of_configured_providers() {
        assert_eq!(
            family_for("openai", "https://api.openai.com/v1"),
            Some("openai")
        );
        assert_eq!(
            family_for("openai", "https://API.deepseek.com"),
            Some("deepseek")
        );
        assert_eq!(
            family_for("gemini", "http://127.0.0.1:9/v1beta"),
            Some("google")
        );
        assert_eq!(
            family_for("anthropic", "https://api.anthropic.com"),
            Some("anthropic")
        );
        assert_eq!(
            family_for("anthropic", "https://api.deepseek.com/anthropic"),
            Some("deepseek")
        );
        assert_eq!(family_for("openai", "https://closeai.example/v1"), None);
        assert_eq!(host("http://u:p@Host.example:8080/x"), "host.example");
    }

    #[test]
    fn dates_are_stripped_only_when_they_are_dates() {
        assert_eq!(strip_date("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(
            strip_date("claude-3-haiku-20240307"),
            Some("claude-3-haiku")
        );
        assert_eq!(strip_date("gpt-4o"), None);
        assert_eq!(strip_date("mistral-large-2411"), None);
        assert_eq!(strip_date("x-2024-08-0a"), None);
    }
}
