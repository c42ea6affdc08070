//! Usage questions and their answers: totals per key, model, provider or day.

use std::fmt::Write as _;

use serde::Serialize;

use crate::time::rfc3339;

/// How totals are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By access key name.
    Key,
    /// By `provider/model`.
    Model,
    /// By provider.
    Provider,
    /// By UTC day.
    Day,
    /// One total.
    None,
}

impl GroupBy {
    /// Parses `key`, `model`, `provider`, `day` or `none`.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        Ok(match text.trim() {
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "day" => GroupBy::Day,
            "none" | "" => GroupBy::None,
            other => {
                return Err(format!(
                    "group_by must be key, model, provider, day or none, not '{other}'"
                ));
            }
        })
    }

    fn label(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
            GroupBy::None => "all",
        }
    }
}

/// A usage question.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// From this time (inclusive), milliseconds since the epoch.
    pub from_ms: i64,
    /// To this time (exclusive).
    pub to_ms: i64,
    /// Grouping.
    pub group_by: GroupBy,
    /// Only this key's records.
    pub key: Option<String>,
}

/// Totals of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The group's name (a key name, `provider/model`, a provider, a day, or `all`).
    pub group: String,
    /// Requests.
    pub requests: u64,
    /// Requests that did not end `ok`.
    pub errors: u64,
    /// Requests whose counts were estimated by the gateway.
    pub estimated_requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens served from cache.
    pub cached_tokens: u64,
    /// Reasoning tokens (part of completion tokens).
    pub reasoning_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// Cost, where prices are configured.
    pub cost: Option<f64>,
}

impl UsageGroup {
    pub(crate) fn add(&mut self, other: &UsageGroup) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.estimated_requests += other.estimated_requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.total_tokens += other.total_tokens;
        self.cost = match (self.cost, other.cost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

/// The answer to a [`UsageQuery`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    /// Always `usage.report`.
    pub object: &'static str,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (RFC 3339, exclusive).
    pub to: String,
    /// The grouping.
    pub group_by: GroupBy,
    /// The key the report is limited to.
    pub key: Option<String>,
    /// Totals per group.
    pub data: Vec<UsageGroup>,
    /// Totals over all groups.
    pub total: UsageGroup,
}

impl UsageReport {
    /// A report of these groups.
    pub fn new(q: &UsageQuery, mut data: Vec<UsageGroup>) -> Self {
        let mut total = UsageGroup {
            group: "total".into(),
            ..UsageGroup::default()
        };
        for g in &data {
            total.add(g);
        }
        // Sums of floats depend on their order (records, hourly roll-ups, a database's own
        // SUM): costs are reported to a billionth, so that every store says the same.
        for g in data.iter_mut().chain(std::iter::once(&mut total)) {
            g.cost = g.cost.map(|c| (c * 1e9).round() / 1e9);
        }
        UsageReport {
            object: "usage.report",
            from: rfc3339(q.from_ms),
            to: rfc3339(q.to_ms),
            group_by: q.group_by,
            key: q.key.clone(),
            data,
            total,
        }
    }

    /// A report with nothing in it.
    pub fn empty(q: &UsageQuery) -> Self {
        Self::new(q, Vec::new())
    }

    /// A readable table.
    pub fn to_table(&self) -> String {
        let header = [
            self.group_by.label(),
            "requests",
            "errors",
            "prompt",
            "completion",
            "cached",
            "cache writes",
            "reasoning",
            "total",
            "estimated",
            "cost",
        ];
        let row = |g: &UsageGroup| {
            vec![
                g.group.clone(),
                g.requests.to_string(),
                g.errors.to_string(),
                g.prompt_tokens.to_string(),
                g.completion_tokens.to_string(),
                g.cached_tokens.to_string(),
                g.cache_write_tokens.to_string(),
                g.reasoning_tokens.to_string(),
                g.total_tokens.to_string(),
                g.estimated_requests.to_string(),
                g.cost.map_or_else(|| "-".to_owned(), |c| format!("{c:.4}")),
            ]
        };
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
        rows.extend(self.data.iter().map(row));
        rows.push(row(&self.total));
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("usage from {} to {}", self.from, self.to);
        if let Some(key) = &self.key {
            let _ = write!(out, " for key {key}");
        }
        out.push('\n');
        let last = rows.len() - 1;
        for (n, r) in rows.iter().enumerate() {
            if n == last {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "{}", rule.join("  "));
            }
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }
}
