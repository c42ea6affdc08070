//! A self-signed certificate made at test time (valid for `localhost`, `127.0.0.1` and
//! `::1`), written to a PEM file that a config's `tls.ca_file` can name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate, its key and the PEM file holding the certificate.
pub struct TestCert {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCert {
    /// A fresh self-signed certificate for the loopback names.
    pub fn localhost() -> TestCert {
        let names = ["localhost", "127.0.0.1", "::1"]
            .map(str::to_owned)
            .to_vec();
        let generated = rcgen::generate_simple_self_signed(names).expect("a certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, generated.cert.pem()).expect("write the PEM file");
        TestCert {
            cert: generated.cert.der().clone(),
            key: generated.signing_key.serialize_der(),
            ca_file,
            _dir: dir,
        }
    }

    /// The PEM file with the certificate (for `tls: { ca_file: … }`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server config presenting this certificate, offering these ALPN protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .expect("a usable certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
