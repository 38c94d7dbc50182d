//! `tls = { cert, key }`: the simulated services over HTTPS, so a gateway's `https://`
//! upstreams can be tried against them (HTTP/1.1 and HTTP/2 by ALPN, rustls with `ring`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::SimTls;
use crate::SimError;

/// The acceptor for `tls`; errors name the file.
pub(crate) fn acceptor(tls: &SimTls) -> Result<TlsAcceptor, SimError> {
    let bad = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        SimError::Config(format!("tls: {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad(&tls.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&tls.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(&tls.cert, &"holds no PEM CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&tls.cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&tls.key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
