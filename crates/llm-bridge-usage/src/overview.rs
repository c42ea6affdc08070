//! The console's overview: requests, tokens, cost, errors and latency percentiles over a
//! time range in equal buckets, and the busiest keys and models — from one pass over the
//! range's records.

use std::collections::HashMap;

use serde::Serialize;

use crate::time::rfc3339;

/// An overview question: `[from_ms, to_ms)` cut into buckets of `bucket_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverviewQuery {
    /// Range start (inclusive), milliseconds since the epoch.
    pub from_ms: i64,
    /// Range end (exclusive).
    pub to_ms: i64,
    /// Width of one bucket (at least one millisecond).
    pub bucket_ms: i64,
    /// How many keys and models the top lists hold.
    pub top: usize,
}

/// Totals and percentiles of one bucket (or of the whole range).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OverviewBucket {
    /// Bucket start (RFC 3339).
    pub start: String,
    /// Bucket start, milliseconds since the epoch.
    pub start_ms: i64,
    /// Requests.
    pub requests: u64,
    /// Requests that did not end `ok`.
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// Cost of the requests with a price.
    pub cost: f64,
    /// Median latency (ms).
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile latency (ms).
    pub latency_p95_ms: Option<f64>,
    /// Median time to first token of streams (ms).
    pub ttft_p50_ms: Option<f64>,
    /// 95th percentile time to first token (ms).
    pub ttft_p95_ms: Option<f64>,
}

/// One entry of a top list.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopEntry {
    /// The key name or `provider/model`.
    pub name: String,
    /// Requests.
    pub requests: u64,
    /// Requests that did not end `ok`.
    pub errors: u64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// Cost.
    pub cost: f64,
}

/// The answer to an [`OverviewQuery`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// Always `usage.overview`.
    pub object: &'static str,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (RFC 3339, exclusive).
    pub to: String,
    /// Width of a bucket, in seconds.
    pub bucket_seconds: f64,
    /// The buckets, oldest first, every one present (empty ones too).
    pub buckets: Vec<OverviewBucket>,
    /// The whole range.
    pub total: OverviewBucket,
    /// Keys with the most requests.
    pub top_keys: Vec<TopEntry>,
    /// `provider/model`s with the most requests.
    pub top_models: Vec<TopEntry>,
}

/// Gathers one bucket's samples.
#[derive(Default)]
pub(crate) struct Acc {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cost: f64,
    latency: Vec<f32>,
    ttft: Vec<f32>,
}

impl Acc {
    fn add(&mut self, row: &Row) {
        self.requests += 1;
        self.errors += u64::from(!row.ok);
        self.prompt += row.prompt;
        self.completion += row.completion;
        self.cost += row.cost;
        self.latency.push(row.latency as f32);
        if let Some(t) = row.ttft {
            self.ttft.push(t as f32);
        }
    }

    fn finish(mut self, start_ms: i64) -> OverviewBucket {
        OverviewBucket {
            start: rfc3339(start_ms),
            start_ms,
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.prompt + self.completion,
            cost: self.cost,
            latency_p50_ms: percentile(&mut self.latency, 0.50),
            latency_p95_ms: percentile(&mut self.latency, 0.95),
            ttft_p50_ms: percentile(&mut self.ttft, 0.50),
            ttft_p95_ms: percentile(&mut self.ttft, 0.95),
        }
    }
}

/// The nearest-rank percentile `p` of `samples` (reordered in place).
fn percentile(samples: &mut [f32], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    let (_, v, _) = samples.select_nth_unstable_by(rank, f32::total_cmp);
    Some(f64::from(*v))
}

/// One record as the overview reads it.
pub(crate) struct Row {
    pub ts: i64,
    pub ok: bool,
    pub prompt: u64,
    pub completion: u64,
    pub cost: f64,
    pub latency: f64,
    pub ttft: Option<f64>,
}

/// Builds an overview from the records of its range, fed in any order.
pub(crate) struct Builder {
    q: OverviewQuery,
    buckets: Vec<Acc>,
    total: Acc,
    keys: HashMap<String, TopEntry>,
    models: HashMap<String, TopEntry>,
}

impl Builder {
    pub(crate) fn new(q: &OverviewQuery) -> Self {
        let mut q = q.clone();
        q.bucket_ms = q.bucket_ms.max(1);
        q.to_ms = q.to_ms.max(q.from_ms);
        let n = usize::try_from((q.to_ms - q.from_ms + q.bucket_ms - 1) / q.bucket_ms)
            .unwrap_or(0)
            .min(10_000);
        Builder {
            buckets: (0..n).map(|_| Acc::default()).collect(),
            q,
            total: Acc::default(),
            keys: HashMap::new(),
            models: HashMap::new(),
        }
    }

    /// Adds one record; `key` and `model` are borrowed (allocated once per distinct name).
    pub(crate) fn add(&mut self, row: &Row, key: &str, model: &str) {
        let i = usize::try_from((row.ts - self.q.from_ms) / self.q.bucket_ms).unwrap_or(0);
        if let Some(b) = self.buckets.get_mut(i) {
            b.add(row);
        }
        self.total.add(row);
        for (map, name) in [(&mut self.keys, key), (&mut self.models, model)] {
            let e = match map.get_mut(name) {
                Some(e) => e,
                None => map.entry(name.to_owned()).or_insert_with(|| TopEntry {
                    name: name.to_owned(),
                    ..TopEntry::default()
                }),
            };
            e.requests += 1;
            e.errors += u64::from(!row.ok);
            e.total_tokens += row.prompt + row.completion;
            e.cost += row.cost;
        }
    }

    pub(crate) fn finish(self) -> Overview {
        let q = self.q;
        let top = |map: HashMap<String, TopEntry>| {
            let mut v: Vec<TopEntry> = map.into_values().collect();
            v.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
            v.truncate(q.top);
            v
        };
        let buckets = self
            .buckets
            .into_iter()
            .enumerate()
            .map(|(i, acc)| acc.finish(q.from_ms + i as i64 * q.bucket_ms))
            .collect();
        Overview {
            object: "usage.overview",
            from: rfc3339(q.from_ms),
            to: rfc3339(q.to_ms),
            bucket_seconds: q.bucket_ms as f64 / 1000.0,
            buckets,
            total: self.total.finish(q.from_ms),
            top_keys: top(self.keys),
            top_models: top(self.models),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, ok: bool, latency: f64) -> Row {
        Row {
            ts,
            ok,
            prompt: 10,
            completion: 5,
            cost: 0.5,
            latency,
            ttft: Some(latency / 2.0),
        }
    }

    #[test]
    fn buckets_totals_percentiles_and_top_lists() {
        let q = OverviewQuery {
            from_ms: 1000,
            to_ms: 4000,
            bucket_ms: 1000,
            top: 1,
        };
        let mut b = Builder::new(&q);
        for i in 1..=100 {
            b.add(&row(1000 + i, i != 7, f64::from(i as u32)), "alice", "p/m");
        }
        b.add(&row(3500, true, 1000.0), "bob", "p/m");
        let o = b.finish();
        assert_eq!(o.buckets.len(), 3);
        assert_eq!(o.buckets[0].requests, 100);
        assert_eq!(o.buckets[0].errors, 1);
        assert_eq!(o.buckets[0].latency_p50_ms, Some(50.0));
        assert_eq!(o.buckets[0].latency_p95_ms, Some(95.0));
        assert_eq!(o.buckets[0].ttft_p95_ms, Some(47.5));
        assert_eq!(o.buckets[1].requests, 0);
        assert_eq!(o.buckets[1].latency_p50_ms, None);
        assert_eq!(o.buckets[2].requests, 1);
        assert_eq!(o.total.requests, 101);
        assert_eq!(o.total.total_tokens, 101 * 15);
        assert!((o.total.error_rate - 1.0 / 101.0).abs() < 1e-9);
        assert_eq!(o.top_keys.len(), 1);
        assert_eq!(o.top_keys[0].name, "alice");
        assert_eq!(o.top_models[0].requests, 101);
    }
}
