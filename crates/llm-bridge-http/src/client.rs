//! The pooled upstream client: HTTP/1.1 and HTTP/2 (by ALPN) over rustls with the ring
//! provider, TCP_NODELAY on every connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use llm_bridge_core::{Error, ErrorKind};

use crate::body::fmt_secs;
use crate::error::describe;

/// Settings of an [`UpstreamClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// A pooled HTTP client for one provider's upstream. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl UpstreamClient {
    /// A client trusting the Mozilla (webpki) roots.
    pub fn new(options: &ClientOptions) -> Result<Self, Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));

        let tls = tls_config()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(UpstreamClient { inner })
    }

    /// Sends a request and waits for the response headers at most `header_timeout`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        header_timeout: Duration,
    ) -> Result<Response<Incoming>, Error> {
        match tokio::time::timeout(header_timeout, self.inner.request(request)).await {
            Err(_) => Err(Error::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "upstream did not answer within {} s",
                    fmt_secs(header_timeout)
                ),
            )),
            Ok(Err(e)) => {
                let what = if e.is_connect() {
                    "could not connect to upstream"
                } else {
                    "upstream request failed"
                };
                Err(Error::new(
                    ErrorKind::UpstreamUnavailable,
                    format!("{what}: {}", describe(&e)),
                ))
            }
            Ok(Ok(response)) => Ok(response),
        }
    }
}

fn tls_config() -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
