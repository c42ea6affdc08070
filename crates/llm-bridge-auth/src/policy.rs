//! What a managed key may do: which models, how fast, how much.

use serde::{Deserialize, Serialize};

/// Limits and permissions of a managed key. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// Model patterns the key may use (`deepseek/*`, `*`, `openai/gpt-4o`); empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Token budgets.
    #[serde(default)]
    pub budget_tokens: Budget<u64>,
    /// Cost budgets (in the currency of the configured prices).
    #[serde(default)]
    pub budget_cost: Budget<f64>,
    /// When the key stops working (milliseconds since the epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// A budget per UTC day, per UTC month and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget<T> {
    /// Per UTC day.
    #[serde(default)]
    pub day: Option<T>,
    /// Per UTC month.
    #[serde(default)]
    pub month: Option<T>,
    /// For the key's whole life.
    #[serde(default)]
    pub total: Option<T>,
}

impl<T> Budget<T> {
    /// Whether no budget is set.
    pub fn is_unlimited(&self) -> bool {
        self.day.is_none() && self.month.is_none() && self.total.is_none()
    }
}

impl KeyPolicy {
    /// Applies a JSON merge patch (RFC 7386): fields present replace, `null` clears.
    /// `expires_at` may be milliseconds since the epoch; `expires_in` (`30d`, `12h`) is
    /// turned into `expires_at` counted from `now`.
    pub fn apply_patch(&mut self, patch: &serde_json::Value, now_ms: i64) -> Result<(), String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("a key's settings must be a JSON object".into());
        };
        let mut patch = patch.clone();
        if let Some(v) = patch.remove("expires_in") {
            let text = v
                .as_str()
                .ok_or("expires_in must be a duration such as 30d")?;
            let ms = parse_duration_ms(text).ok_or_else(|| {
                format!("expires_in: '{text}' is not a duration such as 90s, 15m, 12h, 7d or 2w")
            })?;
            patch.insert("expires_at".into(), serde_json::Value::from(now_ms + ms));
        }
        let mut current = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        merge(&mut current, &serde_json::Value::Object(patch));
        *self = serde_json::from_value(current).map_err(|e| e.to_string())?;
        if self.rpm == Some(0) || self.tpm == Some(0) || self.max_concurrent == Some(0) {
            return Err(
                "rpm, tpm and max_concurrent must be at least 1 (leave them out for no limit)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether the key may use `model` (a `provider/model` name or an alias).
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob(p, model))
    }
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// `90s`, `15m`, `12h`, `7d`, `2w` in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    // A key's expiry must lie in the future.
    llm_bridge_core::calendar::parse_duration_ms(text).filter(|v| *v > 0)
}

/// `*` matches any run of characters (including `/`), `?` one character; everything else
/// literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_merge_and_clear() {
        let mut p = KeyPolicy::default();
        p.apply_patch(&serde_json::json!({"models": ["a/*"], "rpm": 5, "budget_tokens": {"day": 10}, "expires_in": "1h"}), 1000)
            .unwrap();
        assert_eq!(p.models, ["a/*"]);
        assert_eq!(p.rpm, Some(5));
        assert_eq!(p.budget_tokens.day, Some(10));
        assert_eq!(p.expires_at, Some(1000 + 3_600_000));
        p.apply_patch(
            &serde_json::json!({"rpm": null, "budget_tokens": {"month": 99}}),
            0,
        )
        .unwrap();
        assert_eq!(p.rpm, None);
        assert_eq!(
            p.budget_tokens,
            Budget {
                day: Some(10),
                month: Some(99),
                total: None
            }
        );
        assert!(
            p.apply_patch(&serde_json::json!({"rmp": 1}), 0).is_err(),
            "unknown fields are refused"
        );
        assert!(
            p.apply_patch(&serde_json::json!({"expires_in": "soon"}), 0)
                .is_err()
        );
        assert!(p.apply_patch(&serde_json::json!({"tpm": 0}), 0).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("deepseek/*", "deepseek/deepseek-chat"));
        assert!(!glob("deepseek/*", "openai/gpt-4o"));
        assert!(glob("*", "anything/at/all"));
        assert!(glob("openai/gpt-4o*", "openai/gpt-4o-mini"));
        assert!(!glob("openai/gpt-4o", "openai/gpt-4o-mini"));
        assert!(glob("*/gemini-?.5-*", "google/gemini-2.5-flash"));
        assert!(glob("", "") && !glob("", "x"));
        let p = KeyPolicy {
            models: vec!["deepseek/*".into(), "smart".into()],
            ..KeyPolicy::default()
        };
        assert!(p.allows("smart") && p.allows("deepseek/x") && !p.allows("gemini/x"));
        assert!(KeyPolicy::default().allows("whatever"));
    }
}
