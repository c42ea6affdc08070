//! `GET /metrics`: Prometheus text format, one registry per gateway (no global state).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Seeds the label sets' hashes (per process: label values come from requests).
static LABEL_HASH: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// Label sets hash as one word, made with foldhash: a family's map hashes its keys with std's
/// SipHash, which fed each label's bytes cost ~500 instructions a lookup, four or five lookups
/// a request (callgrind).
macro_rules! hash_as_one_word {
    ($labels:ty, $($field:ident),+) => {
        impl Hash for $labels {
            fn hash<H: Hasher>(&self, state: &mut H) {
                state.write_u64(LABEL_HASH.hash_one(($(&self.$field,)+)));
            }
        }
    };
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: Arc<str>,
    model: Arc<str>,
    status: u16,
    transport: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: Arc<str>,
    model: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    provider: Arc<str>,
    kind: &'static str,
}

hash_as_one_word!(RequestLabels, provider, model, status, transport);
hash_as_one_word!(TokenLabels, provider, model, kind);
hash_as_one_word!(ProviderLabels, provider);
hash_as_one_word!(UpstreamErrorLabels, provider, kind);

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms … ~4.4 min
    Histogram::new(exponential_buckets(0.001, 2.0, 19))
}

fn overhead_histogram() -> Histogram {
    // 10 µs … ~82 ms
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

/// A finished chat request, as the metrics see it.
pub struct Observation<'a> {
    /// The provider ("" when none was resolved).
    pub provider: &'a str,
    /// `provider/model` or the requested name.
    pub model: &'a str,
    /// The status.
    pub status: u16,
    /// `http` or `ws`.
    pub transport: &'static str,
    /// Whole request time.
    pub latency_s: f64,
    /// Time to the first chunk.
    pub ttft_s: Option<f64>,
    /// Time spent by the gateway itself before the answer started.
    pub overhead_s: Option<f64>,
    /// Token counts.
    pub usage: &'a llm_bridge_core::Usage,
    /// The upstream error kind, if the upstream failed.
    pub upstream_error: Option<&'static str>,
    /// Whether the upstream ended the stream without finishing the answer.
    pub truncated: bool,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    latency: HistogramFamily<ProviderLabels>,
    ttft: HistogramFamily<ProviderLabels>,
    overhead: Histogram,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    truncated: Family<ProviderLabels, Counter>,
    in_flight_requests: Gauge,
    in_flight_streams: Gauge,
    usage_queue_depth: Gauge,
    usage_records_dropped: Gauge,
    limits_unavailable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llm_bridge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Chat requests finished, by provider, model, status and transport",
            requests.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by provider, model and kind (prompt, completion, cached, reasoning)",
            tokens.clone(),
        );
        let latency: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a chat request's arrival to the end of its answer",
            latency.clone(),
        );
        let ttft: HistogramFamily<ProviderLabels> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk",
            ttft.clone(),
        );
        let overhead = overhead_histogram();
        registry.register(
            "gateway_overhead_seconds",
            "Time the gateway itself spent on a request before its answer started (not waiting for the upstream)",
            overhead.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by provider and kind",
            upstream_errors.clone(),
        );
        let truncated = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "streams_truncated",
            "Streams the upstream ended without finishing the answer (no finish reason, no [DONE])",
            truncated.clone(),
        );
        let in_flight_requests = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Chat requests being served",
            in_flight_requests.clone(),
        );
        let in_flight_streams = Gauge::default();
        registry.register(
            "in_flight_streams",
            "Streams being forwarded",
            in_flight_streams.clone(),
        );
        let usage_queue_depth = Gauge::default();
        registry.register(
            "usage_queue_depth",
            "Usage records waiting to be written to the usage store",
            usage_queue_depth.clone(),
        );
        let usage_records_dropped = Gauge::default();
        registry.register(
            "usage_records_dropped",
            "Usage records dropped because the queue was full (since start)",
            usage_records_dropped.clone(),
        );
        let limits_unavailable = Gauge::default();
        registry.register(
            "limits_unavailable",
            "Requests admitted or refused without the shared limits backend because it could not be reached (since start)",
            limits_unavailable.clone(),
        );
        Metrics {
            registry,
            requests,
            tokens,
            latency,
            ttft,
            overhead,
            upstream_errors,
            truncated,
            in_flight_requests,
            in_flight_streams,
            usage_queue_depth,
            usage_records_dropped,
            limits_unavailable,
        }
    }

    /// Registers the trace exporter's counters.
    pub fn register_traces(&mut self, counters: &crate::traces::TraceCounters) {
        self.registry.register(
            "telemetry_traces_dropped",
            "Traces dropped because the export queue was full (the collector is slow or down)",
            counters.dropped.clone(),
        );
        self.registry.register(
            "telemetry_spans_exported",
            "Spans the OTLP collector accepted",
            counters.exported.clone(),
        );
        self.registry.register(
            "telemetry_export_failures",
            "Span batches the OTLP collector did not accept (down, refused, timed out)",
            counters.failed_exports.clone(),
        );
    }

    /// A chat request started.
    pub fn request_started(&self) {
        self.in_flight_requests.inc();
    }

    /// A stream started / ended.
    pub fn stream(&self, started: bool) {
        if started {
            self.in_flight_streams.inc();
        } else {
            self.in_flight_streams.dec();
        }
    }

    /// A chat request finished.
    pub fn request_finished(&self, o: &Observation<'_>) {
        self.in_flight_requests.dec();
        // Label values are shared: a family is looked up by an owned label set, and a
        // `String` per lookup cost six copies per request.
        let provider: Arc<str> = Arc::from(o.provider);
        let model: Arc<str> = Arc::from(o.model);
        self.requests
            .get_or_create(&RequestLabels {
                provider: provider.clone(),
                model: model.clone(),
                status: o.status,
                transport: o.transport,
            })
            .inc();
        for (kind, n) in [
            ("prompt", o.usage.prompt_tokens),
            ("completion", o.usage.completion_tokens),
            ("cached", o.usage.cached_tokens),
            ("reasoning", o.usage.reasoning_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        provider: provider.clone(),
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if let Some(kind) = o.upstream_error {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    provider: provider.clone(),
                    kind,
                })
                .inc();
        }
        let provider = ProviderLabels { provider };
        self.latency.get_or_create(&provider).observe(o.latency_s);
        if let Some(t) = o.ttft_s {
            self.ttft.get_or_create(&provider).observe(t);
        }
        if let Some(t) = o.overhead_s {
            self.overhead.observe(t.max(0.0));
        }
        if o.truncated {
            self.truncated.get_or_create(&provider).inc();
        }
    }

    /// The text exposition, with the usage queue and the shared limits' failures sampled now.
    pub fn render(
        &self,
        usage: Option<&llm_bridge_usage::UsageSink>,
        limits_unavailable: u64,
    ) -> String {
        self.limits_unavailable
            .set(i64::try_from(limits_unavailable).unwrap_or(i64::MAX));
        if let Some(sink) = usage {
            self.usage_queue_depth
                .set(i64::try_from(sink.queue_depth()).unwrap_or(i64::MAX));
            self.usage_records_dropped
                .set(i64::try_from(sink.dropped()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The OpenMetrics exposition that prometheus-client writes, in Prometheus' classic text
/// format (0.0.4): counters are typed under their `_total` sample name, and the OpenMetrics
/// `# EOF` and `# UNIT` lines are left out.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# TYPE ")
            .map(|rest| ("# TYPE ", rest))
            .or_else(|| line.strip_prefix("# HELP ").map(|rest| ("# HELP ", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_types_counters_by_their_sample_names() {
        let om = "# HELP llm_bridge_requests Chat requests.\n# TYPE llm_bridge_requests counter\nllm_bridge_requests_total{a=\"b\"} 1\n# HELP llm_bridge_in_flight x\n# TYPE llm_bridge_in_flight gauge\nllm_bridge_in_flight 0\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP llm_bridge_requests_total Chat requests.\n# TYPE llm_bridge_requests_total counter\nllm_bridge_requests_total{a=\"b\"} 1\n# HELP llm_bridge_in_flight x\n# TYPE llm_bridge_in_flight gauge\nllm_bridge_in_flight 0\n"
        );
    }
}
