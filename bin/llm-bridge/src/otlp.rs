//! `telemetry:` and the standard `OTEL_*` variables: where traces go, and the exporter that
//! posts them (OTLP/HTTP protobuf) with the same pooled rustls client the providers use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use llm_bridge_gateway::{SpanExporter, TelemetryConfig, Tracer, TracerSettings};
use llm_bridge_http::{ClientOptions, IdleBody, TlsRoots, UpstreamClient};

use crate::app::Environment;
use crate::config::ConfigError;

/// How long one export may take, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer the config and the environment ask for, or `None` when no endpoint is set.
/// The config's keys win; the `OTEL_*` variables fill in what it leaves unset.
pub fn tracer(
    config: &TelemetryConfig,
    env: &Environment,
    roots: &TlsRoots,
) -> Result<Option<Tracer>, ConfigError> {
    let url = match (
        config
            .otlp_endpoint
            .as_deref()
            .filter(|s| !s.trim().is_empty()),
        env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        env.var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(base), _, _) => traces_url(base),
        // The signal's own variable is the full URL, used as it is.
        (None, Some(full), _) => full.trim().to_owned(),
        (None, None, Some(base)) => traces_url(base),
        (None, None, None) => return Ok(None),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| ConfigError::new(format!("telemetry.otlp_endpoint: '{url}': {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ConfigError::new(format!(
            "telemetry.otlp_endpoint: '{url}' is not an http:// or https:// URL"
        )));
    }
    let mut headers = Vec::new();
    let from_env = env
        .var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|| env.var("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(parse_headers)
        .unwrap_or_default();
    let configured = config.headers.iter().map(|(k, v)| (k.clone(), v.clone()));
    // The config's headers win over the variables' of the same name.
    for (name, value) in from_env
        .into_iter()
        .filter(|(n, _)| !config.headers.keys().any(|k| k.eq_ignore_ascii_case(n)))
        .chain(configured)
    {
        let header = HeaderName::try_from(name.trim()).map_err(|_| {
            ConfigError::new(format!("telemetry.headers: '{name}' is not a header name"))
        })?;
        let mut value = HeaderValue::try_from(value.trim()).map_err(|_| {
            ConfigError::new(format!(
                "telemetry.headers.{name}: the value has characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        headers.push((header, value));
    }
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        return Err(ConfigError::new(format!(
            "telemetry.sample_ratio: {} is not between 0 and 1",
            config.sample_ratio
        )));
    }
    let client = UpstreamClient::new(&ClientOptions {
        connect_timeout: Duration::from_secs(5),
        tls: roots.clone(),
        ..ClientOptions::default()
    })
    .map_err(|e| ConfigError::new(format!("telemetry: {}", e.message())))?;
    let service_name = config
        .service_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| env.var("OTEL_SERVICE_NAME").map(str::to_owned))
        .unwrap_or_else(|| "llm-bridge".to_owned());
    tracing::info!(endpoint = %uri, service_name = %service_name, sample_ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
    let settings = TracerSettings {
        service_name,
        sample_ratio: config.sample_ratio,
        capture_content: config.capture_content,
        ..TracerSettings::default()
    };
    let exporter = OtlpHttp {
        client,
        uri,
        headers,
    };
    Ok(Some(Tracer::new(&settings, Arc::new(exporter))))
}

/// `<base>/v1/traces`, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

/// `key1=value1,key2=value2`, values percent-decoded (the OTLP exporter spec's format).
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| {
                let v = percent_decode(v.trim());
                (k.to_owned(), v)
            })
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Posts batches to the collector.
struct OtlpHttp {
    client: UpstreamClient,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SpanExporter for OtlpHttp {
    fn export(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(self.uri.clone())
                .header(http::header::CONTENT_TYPE, "application/x-protobuf");
            for (name, value) in &self.headers {
                builder = builder.header(name, value.clone());
            }
            let request = builder
                .body(Full::new(body))
                .map_err(|e| format!("could not build the export request: {e}"))?;
            let response = self
                .client
                .send(request, EXPORT_TIMEOUT)
                .await
                .map_err(|e| e.message().to_owned())?;
            let status = response.status();
            // Read to the end, so that the connection goes back to the pool.
            let text = IdleBody::new(response.into_body(), EXPORT_TIMEOUT)
                .collect(4096)
                .await
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!(
                    "the collector answered {status}: {}",
                    String::from_utf8_lossy(&text)
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_as_the_otlp_spec_writes_them() {
        assert_eq!(
            parse_headers("api-key=abc%20def, x-team = t1,broken,=x"),
            vec![
                ("api-key".to_owned(), "abc def".to_owned()),
                ("x-team".to_owned(), "t1".to_owned()),
            ]
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path() {
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
    }
}
