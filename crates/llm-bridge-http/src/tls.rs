//! The certificates upstream (and proxy) TLS connections trust: always the Mozilla (webpki)
//! roots, plus a PEM file of extra roots and, if asked, the operating system's store.

use std::fmt;
use std::sync::Arc;

use llm_bridge_core::{Error, ErrorKind, TlsConfig};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A set of trusted root certificates. Cheap to clone.
#[derive(Clone)]
pub struct TlsRoots {
    store: Arc<RootCertStore>,
}

impl TlsRoots {
    /// The Mozilla (webpki) roots only.
    pub fn webpki() -> TlsRoots {
        TlsRoots {
            store: Arc::new(webpki_store()),
        }
    }

    /// The webpki roots plus what `config` adds. Reads the CA file and the system store now,
    /// so that a mistake is reported at start-up. Error messages name the file; the caller
    /// adds the config key.
    pub fn load(config: &TlsConfig) -> Result<TlsRoots, Error> {
        let mut store = webpki_store();
        if let Some(path) = &config.ca_file {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| config_error(format!("ca_file: cannot read {shown}: {e}")))?;
            let mut added = 0;
            for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let cert = cert.map_err(|e| {
                    config_error(format!("ca_file: {shown}: certificate #{}: {e}", i + 1))
                })?;
                store.add(cert).map_err(|e| {
                    config_error(format!(
                        "ca_file: {shown}: certificate #{} cannot be a trust anchor: {e}",
                        i + 1
                    ))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(config_error(format!(
                    "ca_file: {shown}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
                )));
            }
        }
        if config.native_roots {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(config_error(format!(
                    "native_roots: no certificate found in the system's store{why}"
                )));
            }
            // One unreadable certificate in a system store of hundreds must not stop the
            // gateway; the others still count.
            let (_, ignored) = store.add_parsable_certificates(found.certs);
            if ignored > 0 || !found.errors.is_empty() {
                tracing::warn!(
                    ignored,
                    errors = found.errors.len(),
                    "some certificates of the system's store could not be used"
                );
            }
        }
        Ok(TlsRoots {
            store: Arc::new(store),
        })
    }

    /// How many roots are trusted.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no root is trusted (never, in practice: the webpki roots are always there).
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// A client config trusting these roots, with the ring provider and these ALPN protocols.
    pub(crate) fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::internal(format!("TLS setup failed: {e}")))?
            .with_root_certificates(self.store.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl Default for TlsRoots {
    fn default() -> Self {
        TlsRoots::webpki()
    }
}

impl fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsRoots({} certificates)", self.store.len())
    }
}

fn webpki_store() -> RootCertStore {
    let mut store = RootCertStore::empty();
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    store
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_roots_are_always_there() {
        let base = TlsRoots::webpki().len();
        assert!(base > 100);
        assert_eq!(TlsRoots::load(&TlsConfig::default()).unwrap().len(), base);
    }

    #[test]
    fn native_roots_add_to_webpki_or_say_why_not() {
        // Whether the machine has a system store (ca-certificates) is not up to the test.
        match TlsRoots::load(&TlsConfig {
            ca_file: None,
            native_roots: true,
        }) {
            Ok(roots) => assert!(roots.len() >= TlsRoots::webpki().len()),
            Err(e) => assert!(
                e.message()
                    .starts_with("native_roots: no certificate found"),
                "{}",
                e.message()
            ),
        }
    }

    #[test]
    fn ca_file_mistakes_are_reported() {
        let dir = std::env::temp_dir().join(format!("llm-bridge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = TlsRoots::load(&TlsConfig {
            ca_file: Some(missing.clone()),
            native_roots: false,
        })
        .unwrap_err();
        assert!(
            e.message().starts_with("ca_file: cannot read "),
            "{}",
            e.message()
        );
        assert!(e.message().contains("missing.pem"), "{}", e.message());
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsRoots::load(&TlsConfig {
            ca_file: Some(empty),
            native_roots: false,
        })
        .unwrap_err();
        assert!(
            e.message().contains("no PEM certificate"),
            "{}",
            e.message()
        );
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TlsRoots::load(&TlsConfig {
            ca_file: Some(garbage),
            native_roots: false,
        })
        .unwrap_err();
        assert!(e.message().contains("certificate #1"), "{}", e.message());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
