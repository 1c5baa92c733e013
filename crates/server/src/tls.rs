//! TLS for `fathom serve` (`--tls-cert`, `--tls-key`, `--tls-client-ca`):
//! rustls with the ring provider, HTTP/2 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// PEM files of a server's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {error}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("invalid client CA {path}: {error}")]
    ClientCa { path: PathBuf, error: String },
    #[error("invalid TLS certificate or key: {0}")]
    Config(rustls::Error),
    #[error("certificate {path}: {reason} (`fathom tls init DIR` writes a CA and a server certificate signed by it)")]
    Unfit { path: PathBuf, reason: String },
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |error| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        error,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read the files and make an acceptor that offers HTTP/2 only.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates("certificate", &files.cert)?;
    check_leaf(&chain[0], &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::Pem {
        what: "private key",
        path: files.key.clone(),
        error,
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client CA", path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    error: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: path.clone(),
                error: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Refuse at start a server certificate that every client would refuse at
/// its handshake: a CA certificate used as the server's own (what `openssl
/// req -x509` makes by default), or one without a subjectAltName, which
/// clients match the server's name against (the common name is ignored).
fn check_leaf(leaf: &CertificateDer<'_>, path: &Path) -> Result<(), TlsError> {
    let unfit = |reason: String| TlsError::Unfit {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| unfit(format!("cannot parse the first certificate: {e}")))?;
    if cert.is_ca() {
        return Err(unfit(
            "the first certificate is a CA certificate (basicConstraints CA:TRUE); clients \
             refuse a CA as the server's own certificate (CaUsedAsEndEntity). Serve a leaf \
             certificate signed by that CA"
                .into(),
        ));
    }
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map_or(0, |san| san.value.general_names.len());
    if names == 0 {
        return Err(unfit(
            "the certificate has no subjectAltName; clients check the server's host name or \
             address against it"
                .into(),
        ));
    }
    Ok(())
}
