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

/// A latency histogram: 8 logarithmic bins per doubling (each about 9 % wide), from 0 ms to
/// about 9 hours. Percentiles read from it are within a bin's width of the exact ones;
/// histograms add up, so hourly roll-ups answer for any range of hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hist(Vec<u32>);

const BINS: usize = 200;

impl Default for Hist {
    fn default() -> Self {
        Hist(vec![0; BINS])
    }
}

impl Hist {
    fn bin(ms: f64) -> usize {
        let b = ((ms.max(0.0) + 1.0).log2() * 8.0).floor();
        (b as usize).min(BINS - 1)
    }

    /// The middle of a bin, in milliseconds (geometric, so that the error is relative).
    fn value(bin: usize) -> f64 {
        ((bin as f64 + 0.5) / 8.0).exp2() - 1.0
    }

    pub(crate) fn add(&mut self, ms: f64) {
        self.0[Self::bin(ms)] += 1;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|c| u64::from(*c)).sum()
    }

    /// The nearest-rank percentile `p`, or `None` when empty.
    pub(crate) fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (bin, c) in self.0.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some((Self::value(bin) * 10.0).round() / 10.0);
            }
        }
        None
    }

    /// Sparse bytes: `(bin: u8, count: u32 LE)` for each bin in use.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (bin, c) in self.0.iter().enumerate().filter(|(_, c)| **c > 0) {
            out.push(u8::try_from(bin).unwrap_or(u8::MAX));
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Adds what [`Hist::encode`] wrote.
    pub(crate) fn merge_encoded(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks_exact(5) {
            let bin = usize::from(chunk[0]).min(BINS - 1);
            let c = u32::from_le_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]);
            self.0[bin] = self.0[bin].saturating_add(c);
        }
    }
}

/// Totals of some records: a bucket's, a roll-up row's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Acc {
    pub requests: u64,
    pub errors: u64,
    pub prompt: u64,
    pub completion: u64,
    pub cost: f64,
    pub latency: Hist,
    pub ttft: Hist,
}

impl Acc {
    pub(crate) fn add(&mut self, row: &Row) {
        self.requests += 1;
        self.errors += u64::from(!row.ok);
        self.prompt += row.prompt;
        self.completion += row.completion;
        self.cost += row.cost;
        self.latency.add(row.latency);
        if let Some(t) = row.ttft {
            self.ttft.add(t);
        }
    }

    pub(crate) fn merge(&mut self, other: &Acc) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.prompt += other.prompt;
        self.completion += other.completion;
        self.cost += other.cost;
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
    }

    fn finish(self, start_ms: i64) -> OverviewBucket {
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
            latency_p50_ms: self.latency.percentile(0.50),
            latency_p95_ms: self.latency.percentile(0.95),
            ttft_p50_ms: self.ttft.percentile(0.50),
            ttft_p95_ms: self.ttft.percentile(0.95),
        }
    }
}

/// One record as the overview reads it (a store without roll-ups feeds its records to an
/// [`OverviewBuilder`](Builder) one by one).
pub struct Row {
    /// When (ms since the epoch).
    pub ts: i64,
    /// Its outcome was `ok`.
    pub ok: bool,
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Cost (0 when unpriced).
    pub cost: f64,
    /// Latency in ms.
    pub latency: f64,
    /// Time to first token in ms.
    pub ttft: Option<f64>,
}

/// Builds an overview from the records of its range, fed in any order.
pub struct Builder {
    q: OverviewQuery,
    buckets: Vec<Acc>,
    total: Acc,
    keys: HashMap<String, TopEntry>,
    models: HashMap<String, TopEntry>,
}

impl Builder {
    /// An empty overview of `q`'s range.
    pub fn new(q: &OverviewQuery) -> Self {
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
    pub fn add(&mut self, row: &Row, key: &str, model: &str) {
        let i = usize::try_from((row.ts - self.q.from_ms) / self.q.bucket_ms).unwrap_or(0);
        if let Some(b) = self.buckets.get_mut(i) {
            b.add(row);
        }
        self.total.add(row);
        let tokens = row.prompt + row.completion;
        self.top(key, model, (1, u64::from(!row.ok), tokens, row.cost));
    }

    /// Adds a roll-up of the records of `key` and `model` that start at `ts`.
    pub(crate) fn add_rollup(&mut self, ts: i64, acc: &Acc, key: &str, model: &str) {
        let i = usize::try_from((ts - self.q.from_ms) / self.q.bucket_ms).unwrap_or(0);
        if let Some(b) = self.buckets.get_mut(i) {
            b.merge(acc);
        }
        self.total.merge(acc);
        let tokens = acc.prompt + acc.completion;
        self.top(key, model, (acc.requests, acc.errors, tokens, acc.cost));
    }

    /// Counts `(requests, errors, tokens, cost)` for a key and a model.
    fn top(
        &mut self,
        key: &str,
        model: &str,
        (requests, errors, tokens, cost): (u64, u64, u64, f64),
    ) {
        for (map, name) in [(&mut self.keys, key), (&mut self.models, model)] {
            let e = match map.get_mut(name) {
                Some(e) => e,
                None => map.entry(name.to_owned()).or_insert_with(|| TopEntry {
                    name: name.to_owned(),
                    ..TopEntry::default()
                }),
            };
            e.requests += requests;
            e.errors += errors;
            e.total_tokens += tokens;
            e.cost += cost;
        }
    }

    /// The overview.
    pub fn finish(self) -> Overview {
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
    fn histograms_encode_merge_and_stay_within_a_bin() {
        let mut h = Hist::default();
        for ms in [0.0, 3.0, 250.0, 1200.0, 60_000.0, 1e12] {
            h.add(ms);
        }
        let mut back = Hist::default();
        back.merge_encoded(&h.encode());
        assert_eq!(back, h);
        back.merge(&h);
        assert_eq!(back.count(), 12);
        for exact in [1.0, 10.0, 123.0, 4567.0, 89_012.0] {
            let mut one = Hist::default();
            one.add(exact);
            let p = one.percentile(0.5).unwrap();
            assert!((p - exact).abs() <= 0.09 * exact + 0.5, "{exact} → {p}");
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
        // Within a bin's width (9 %) of the exact 50, 95 and 47.5.
        let near = |v: Option<f64>, exact: f64| (v.unwrap() - exact).abs() / exact < 0.09;
        assert!(
            near(o.buckets[0].latency_p50_ms, 50.0),
            "{:?}",
            o.buckets[0]
        );
        assert!(
            near(o.buckets[0].latency_p95_ms, 95.0),
            "{:?}",
            o.buckets[0]
        );
        assert!(near(o.buckets[0].ttft_p95_ms, 47.5), "{:?}", o.buckets[0]);
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
