//! `llm-bridge prices [MODEL] [--source]`: which price applies to a model and where it comes
//! from (the config's `price:` or the built-in catalog).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use llm_bridge_core::prices::{self, AppliedPrice, CatalogEntry, PriceOrigin};
use llm_bridge_core::{Price, ProviderConfig};

use crate::config::AppConfig;

/// Flags of `prices`.
#[derive(Debug, Clone, Default, Args)]
pub struct PricesArgs {
    /// `provider/model` (a configured provider) or a catalog name (`gpt-4o`, `anthropic/claude-sonnet-4-5`).
    pub model: Option<String>,
    /// Print only the catalog's source and snapshot date.
    #[arg(long)]
    pub source: bool,
}

/// What `check` says about a configured model without a price.
pub const NO_PRICE: &str = "no price (cost recorded as 0)";

/// Runs `prices`.
#[allow(clippy::print_stdout)]
pub fn run(config: &AppConfig, args: &PricesArgs) -> ExitCode {
    match execute(config, args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(config: &AppConfig, args: &PricesArgs) -> Result<String, String> {
    let mut out = String::new();
    if args.source {
        let _ = writeln!(out, "source: {}", prices::SOURCE);
        let _ = writeln!(out, "snapshot: {}", prices::SNAPSHOT_DATE);
        return Ok(out);
    }
    if let Some(model) = &args.model {
        out.push_str(&one(config, model)?);
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "catalog: {}, snapshot {}, {} models (USD per million tokens)",
        prices::SOURCE,
        prices::SNAPSHOT_DATE,
        prices::entries().len()
    );
    for (name, provider) in &config.providers {
        let catalog = provider.catalog();
        for model in catalog.names() {
            let _ = writeln!(
                out,
                "{name}/{model}: {}",
                describe(catalog.price(model).as_ref())
            );
        }
        if catalog.has_wildcard() {
            let how = match catalog.lookup("*").and_then(|e| e.config.price) {
                Some(p) => format!("{} (config)", show(&p)),
                None => "the catalog's price of the model named, else none".to_owned(),
            };
            let _ = writeln!(out, "{name}/*: {how}");
        }
    }
    Ok(out)
}

/// One model: a configured provider's (`provider/model`), else the catalog's.
fn one(config: &AppConfig, model: &str) -> Result<String, String> {
    if let Some((provider, name)) = model.split_once('/') {
        if let Some(p) = config.providers.get(provider) {
            return configured(provider, p, name);
        }
    }
    let entry = prices::find(None, model).ok_or_else(|| {
        format!("{model}: not a configured provider/model, and not in the catalog")
    })?;
    Ok(format!("{model}: {}\n", catalog_line(entry)))
}

fn configured(provider: &str, config: &ProviderConfig, name: &str) -> Result<String, String> {
    let catalog = config.catalog();
    if catalog.lookup(name).is_none() {
        return Err(format!(
            "{provider}/{name}: provider {provider} does not serve {name}"
        ));
    }
    Ok(format!(
        "{provider}/{name}: {}\n",
        describe(catalog.price(name).as_ref())
    ))
}

/// `input 2.5, output 10, … (config)` or `… (catalog: openai/gpt-4o, context …)`.
pub fn describe(applied: Option<&AppliedPrice>) -> String {
    match applied {
        None => NO_PRICE.to_owned(),
        Some(AppliedPrice {
            price,
            origin: PriceOrigin::Config,
        }) => format!("{} (config)", show(price)),
        Some(AppliedPrice {
            origin: PriceOrigin::Catalog(e),
            ..
        }) => catalog_line(e),
    }
}

fn catalog_line(e: &CatalogEntry) -> String {
    let mut s = format!("{} (catalog: {}/{}", show(&e.price()), e.family, e.model);
    if e.context > 0 {
        let _ = write!(s, "; context {}", e.context);
    }
    if e.max_output > 0 {
        let _ = write!(s, "; max output {}", e.max_output);
    }
    s.push(')');
    s
}

/// `input 2.5, output 10, cached 1.25`: per million tokens.
fn show(p: &Price) -> String {
    let mut s = format!("input {}, output {}", p.input, p.output);
    for (name, v) in [
        ("cached", p.cached),
        ("cache_write", p.cache_write),
        ("reasoning", p.reasoning),
    ] {
        if let Some(v) = v {
            let _ = write!(s, ", {name} {v}");
        }
    }
    s
}
