//! `llm-bridge keys create|list|show|update|revoke`: the same database the server reads
//! (`usage.database`, or `--database`: a SQLite file or a PostgreSQL URL), so changes reach
//! every running server within a second.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use llm_bridge_auth::{KeyPolicy, KeyRecord};
use llm_bridge_core::secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use crate::config::AppConfig;
use crate::stores::Stores;
use llm_bridge_usage::Database;

/// Runs a `keys` subcommand.
#[allow(clippy::print_stdout)]
pub fn run(config: &AppConfig, args: KeysArgs) -> ExitCode {
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

fn execute(config: &AppConfig, args: KeysArgs) -> Result<String, String> {
    let database = args
        .database
        .as_deref()
        .map_or_else(|| config.usage.database.clone(), Database::parse);
    let store = Stores::new(&database)
        .and_then(|s| s.keys())
        .map_err(|e| format!("{database}: {e}"))?;
    let now = llm_bridge_usage::time::now_ms();
    match args.command {
        KeysCommand::Create { name, limits } => {
            let mut policy = KeyPolicy::default();
            policy.apply_patch(&patch(&limits)?, now)?;
            let (record, key) = store
                .create(&name, &policy, now)
                .map_err(|e| e.message().to_owned())?;
            Ok(format!(
                "created key '{}' ({})\n\n    {}\n\nThis is the only time the key is shown: it is stored as a hash.\n{}",
                record.name,
                record.id,
                key.expose_secret(),
                summary(&record)
            ))
        }
        KeysCommand::List { json } => {
            let keys = store.list().map_err(|e| e.message().to_owned())?;
            if json {
                let list: Vec<Value> = keys.iter().map(as_json).collect();
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                ));
            }
            if keys.is_empty() {
                return Ok(
                    "no managed keys (create one with: llm-bridge keys create --name NAME)\n"
                        .into(),
                );
            }
            let mut out = format!(
                "{:<24} {:<18} {:<14} {:<9} {}\n",
                "NAME", "ID", "PREFIX", "STATE", "LIMITS"
            );
            for k in &keys {
                out.push_str(&format!(
                    "{:<24} {:<18} {:<14} {:<9} {}\n",
                    k.name,
                    k.id,
                    format!("{}…", k.key_prefix),
                    state(k, now),
                    limits_text(&k.policy)
                ));
            }
            Ok(out)
        }
        KeysCommand::Show { name } => {
            let record = store
                .get(&name)
                .map_err(|e| e.message().to_owned())?
                .ok_or_else(|| format!("no key named '{name}'"))?;
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&as_json(&record)).unwrap_or_default()
            ))
        }
        KeysCommand::Update { name, limits } => {
            let mut record = store
                .get(&name)
                .map_err(|e| e.message().to_owned())?
                .ok_or_else(|| format!("no key named '{name}'"))?;
            record.policy.apply_patch(&patch(&limits)?, now)?;
            let record = store
                .update(&name, &record.policy, now)
                .map_err(|e| e.message().to_owned())?;
            Ok(format!(
                "updated key '{}'\n{}",
                record.name,
                summary(&record)
            ))
        }
        KeysCommand::Revoke { name } => {
            let record = store
                .revoke(&name, now)
                .map_err(|e| e.message().to_owned())?;
            Ok(format!("revoked key '{}' ({})\n", record.name, record.id))
        }
    }
}

/// The flags as a JSON merge patch of the key's policy.
fn patch(l: &KeyLimits) -> Result<Value, String> {
    let mut p = Map::new();
    let number = |flag: &str, v: &str, float: bool| -> Result<Value, String> {
        if v.eq_ignore_ascii_case("none") {
            return Ok(Value::Null);
        }
        let bad = || format!("--{flag}: expected a number or 'none', found '{v}'");
        if float {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(Value::from)
                .ok_or_else(bad)
        } else {
            v.parse::<u64>().map(Value::from).map_err(|_| bad())
        }
    };
    if let Some(m) = &l.models {
        let list: Vec<&str> = m
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        p.insert("models".into(), json!(list));
    }
    for (flag, key, v) in [
        ("rpm", "rpm", &l.rpm),
        ("tpm", "tpm", &l.tpm),
        ("max-concurrent", "max_concurrent", &l.max_concurrent),
    ] {
        if let Some(v) = v {
            p.insert(key.into(), number(flag, v, false)?);
        }
    }
    let mut tokens = Map::new();
    let mut cost = Map::new();
    for (flag, period, v, float) in [
        ("budget-tokens", "total", &l.budget_tokens, false),
        ("budget-tokens-day", "day", &l.budget_tokens_day, false),
        (
            "budget-tokens-month",
            "month",
            &l.budget_tokens_month,
            false,
        ),
        ("budget-cost", "total", &l.budget_cost, true),
        ("budget-cost-day", "day", &l.budget_cost_day, true),
        ("budget-cost-month", "month", &l.budget_cost_month, true),
    ] {
        if let Some(v) = v {
            let target = if float { &mut cost } else { &mut tokens };
            target.insert(period.into(), number(flag, v, float)?);
        }
    }
    if !tokens.is_empty() {
        p.insert("budget_tokens".into(), Value::Object(tokens));
    }
    if !cost.is_empty() {
        p.insert("budget_cost".into(), Value::Object(cost));
    }
    match l.expires.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("none") => {
            p.insert("expires_at".into(), Value::Null);
        }
        Some(v) => {
            p.insert("expires_in".into(), json!(v));
        }
        None => {}
    }
    Ok(Value::Object(p))
}

fn as_json(r: &KeyRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["revoked"] = json!(r.revoked());
    v
}

fn state(k: &KeyRecord, now: i64) -> &'static str {
    if k.revoked() {
        "revoked"
    } else if k.policy.expires_at.is_some_and(|t| now >= t) {
        "expired"
    } else {
        "active"
    }
}

fn limits_text(p: &KeyPolicy) -> String {
    let mut parts = Vec::new();
    if !p.models.is_empty() {
        parts.push(format!("models={}", p.models.join(",")));
    }
    if let Some(r) = p.rpm {
        parts.push(format!("rpm={r}"));
    }
    if let Some(t) = p.tpm {
        parts.push(format!("tpm={t}"));
    }
    if let Some(c) = p.max_concurrent {
        parts.push(format!("concurrent={c}"));
    }
    for (name, b) in [
        ("day", p.budget_tokens.day),
        ("month", p.budget_tokens.month),
        ("total", p.budget_tokens.total),
    ] {
        if let Some(b) = b {
            parts.push(format!("tokens/{name}={b}"));
        }
    }
    for (name, b) in [
        ("day", p.budget_cost.day),
        ("month", p.budget_cost.month),
        ("total", p.budget_cost.total),
    ] {
        if let Some(b) = b {
            parts.push(format!("cost/{name}={b}"));
        }
    }
    if let Some(t) = p.expires_at {
        parts.push(format!("expires={}", llm_bridge_usage::time::rfc3339(t)));
    }
    if parts.is_empty() {
        "unlimited".into()
    } else {
        parts.join(" ")
    }
}

fn summary(r: &KeyRecord) -> String {
    format!("limits: {}\n", limits_text(&r.policy))
}

/// `keys …`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The database (a SQLite path or a `postgres://` URL) instead of the config's
    /// `usage.database`.
    #[arg(long, global = true)]
    pub database: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        /// A unique name (shown in logs and usage).
        #[arg(long)]
        name: String,
        /// Limits and permissions.
        #[command(flatten)]
        limits: KeyLimits,
    },
    /// List the keys (never the keys themselves).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one key's settings.
    Show {
        /// The key's name or id.
        name: String,
    },
    /// Change a key's limits or permissions (`none` removes a limit).
    Update {
        /// The key's name or id.
        name: String,
        /// Limits and permissions to change.
        #[command(flatten)]
        limits: KeyLimits,
    },
    /// Revoke a key (a running server stops accepting it within a second).
    Revoke {
        /// The key's name or id.
        name: String,
    },
}

/// Limits of `keys create` and `keys update`; `none` removes one.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyLimits {
    /// Allowed models, comma-separated glob patterns (`deepseek/*,openai/gpt-4o`); empty: all.
    #[arg(long)]
    pub models: Option<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<String>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<String>,
    /// Requests in flight at once (across every instance, with `limits.backend: redis`).
    #[arg(long)]
    pub max_concurrent: Option<String>,
    /// Token budget for the key's whole life.
    #[arg(long)]
    pub budget_tokens: Option<String>,
    /// Token budget per UTC day.
    #[arg(long)]
    pub budget_tokens_day: Option<String>,
    /// Token budget per UTC month.
    #[arg(long)]
    pub budget_tokens_month: Option<String>,
    /// Cost budget for the key's whole life (in the currency of the configured prices).
    #[arg(long)]
    pub budget_cost: Option<String>,
    /// Cost budget per UTC day.
    #[arg(long)]
    pub budget_cost_day: Option<String>,
    /// Cost budget per UTC month.
    #[arg(long)]
    pub budget_cost_month: Option<String>,
    /// Expire after this long (`30d`, `12h`), or `none`.
    #[arg(long)]
    pub expires: Option<String>,
}
