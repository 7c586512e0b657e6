//! Extra root certificates from `AWS_CA_BUNDLE`, which the AWS CLI and the other SDKs honour
//! and the Rust SDK does not: for an S3-compatible store, or a proxy, behind a private CA.
//!
//! The file (PEM, one or more certificates) is read once per process and checked at start-up
//! ([`super::check_env`]): a missing or unreadable bundle stops the command with its name,
//! rather than every request failing later with a certificate error. Its certificates are
//! trusted along with the machine's own (which `SSL_CERT_FILE` and `SSL_CERT_DIR` can point
//! elsewhere), by the SDK's clients (S3, SQS, DynamoDB) and by the lean CopyObject client.

use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::ConnectorBuilder;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// A bundle of extra root certificates, as read from its file.
#[derive(Debug)]
pub struct CaBundle {
    path: String,
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

impl CaBundle {
    /// Reads and parses the PEM file at `path`: `Invalid`, naming the variable and the
    /// file, when it cannot be read or holds no certificate.
    pub fn load(path: &str) -> Result<Self> {
        let bad = |why: String| Error::invalid(format!("AWS_CA_BUNDLE={path}: {why}"));
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into()));
        }
        Ok(CaBundle { path: path.to_string(), pem, certs })
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true: a bundle without a certificate is refused when loaded.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// An HTTPS client for the SDK that trusts the machine's roots and these. Built as the
    /// SDK builds its default one (its connector settings, its sleep, proxies from
    /// `HTTPS_PROXY`/`NO_PROXY`: a private CA often comes with a proxy), with the roots added.
    pub fn sdk_http_client(&self) -> SharedHttpClient {
        let trust = TrustStore::default().with_pem_certificate(self.pem.clone());
        let context = TlsContext::builder().with_trust_store(trust).build().expect("a trust store is a valid context");
        aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
            let mut b = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.set_proxy_config(Some(ProxyConfig::from_env()));
            b.tls_context(context.clone()).build()
        })
    }

    /// The machine's roots (those that load) and these, for the lean client.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a native root certificate could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
        let (added, ignored) = roots.add_parsable_certificates(self.certs.iter().cloned());
        if ignored > 0 {
            tracing::warn!(bundle = %self.path, added, ignored, "some certificates of AWS_CA_BUNDLE are not usable roots");
        }
        roots
    }
}

/// The process's bundle: `AWS_CA_BUNDLE`'s file, read on first use. `Ok(None)` when the
/// variable is unset or empty.
pub fn ca_bundle() -> Result<Option<Arc<CaBundle>>> {
    static BUNDLE: OnceLock<Result<Option<Arc<CaBundle>>>> = OnceLock::new();
    let loaded = BUNDLE.get_or_init(|| match std::env::var("AWS_CA_BUNDLE").ok().filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(path) => CaBundle::load(&path).map(|b| Some(Arc::new(b))),
    });
    loaded.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_that_is_missing_or_holds_no_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = CaBundle::load(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = CaBundle::load(empty.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
