//! TLS on the client ports (HTTP and Redis protocol): the node's certificate and key read
//! from PEM files at start, and optionally a CA whose certificates clients must present;
//! and TLS between nodes ([`ClusterTlsConfig`]): mutual, every node's certificate signed
//! by one cluster CA.
//!
//! Why here: the composition root is the one place that reads files for the front ends;
//! the front ends take a ready [`TlsAcceptor`] and know nothing of paths. rustls with the
//! ring provider (no OpenSSL, no C toolchain beyond ring's own). TLS 1.2 and 1.3 only.
//!
//! Invariant: a node told to use TLS either serves TLS on both client ports (or its
//! cluster port) or does not start (a bad path, a key that does not match, an empty CA file are start-up errors,
//! never a silent fall back to plain text).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::TlsAcceptor;

/// Where the node's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The node's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, a client must present a certificate this CA (PEM, one or more
    /// certificates) signed: mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS material could not be used; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("TLS: reading {path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS: {0}")]
    Config(String),
}

impl TlsConfig {
    /// The acceptor both client ports use.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        // HTTP/1.1 only (the HTTP port does not speak h2); Redis clients send no ALPN.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// TLS between nodes: each node presents its certificate (which must name its cluster IP
/// address) both when it accepts and when it dials, and accepts only certificates the
/// cluster CA signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTlsConfig {
    /// This node's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA (PEM) that signed every node's certificate.
    pub ca: PathBuf,
}

impl ClusterTlsConfig {
    /// The internode transport these files make.
    pub fn transport(&self) -> Result<speedlayer_cluster::transport::Tls, TlsError> {
        let provider = provider();
        let certs = certificates(&self.cert)?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(client_verifier(&self.ca, provider.clone())?)
            .with_single_cert(certs.clone(), private_key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots(&self.ca)?)
            .with_client_auth_cert(certs, private_key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        Ok(speedlayer_cluster::transport::Tls::new(
            Arc::new(server),
            Arc::new(client),
        ))
    }
}

/// rustls' ring provider (named, not the process default, so nothing depends on which
/// providers other crates enable).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts client certificates the CA in `path` signed.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots(path)?.into(), provider)
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The certificates of a CA file as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The private key in a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |detail: String| TlsError::Pem {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    Ok(certs)
}
