//! The HTTPS listener's TLS: one rustls `ServerConfig` for the life of the process, whose
//! certificate comes from a resolver holding the current certificate and key behind an
//! [`ArcSwap`]. [`TlsFiles::reload`] re-reads the files and swaps the pair in: handshakes that
//! start afterwards present the new certificate, connections already open keep theirs (TLS
//! does not change a session's certificate), so nothing is dropped. A pair that fails its
//! checks is refused and the old one stays.
//!
//! ALPN offers `h2` then `http/1.1`: one port serves both, and hyper-util's auto builder then
//! reads which one the client speaks.

use arc_swap::ArcSwap;
use manifold_config::{ServerTls, TlsFileError};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Marks a request that came over the TLS listener (a request extension), so the proxy tells
/// upstreams `X-Forwarded-Proto: https`. Set only on that listener's requests: plaintext ones
/// carry no extension and allocate nothing for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls;

/// Why the listener's TLS could not be set up or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file is missing, not PEM, or refused (names the key and file).
    #[error(transparent)]
    File(#[from] TlsFileError),
    /// rustls refused the configuration as a whole.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// An `https://` upstream without `ca` found no root certificate in the system's store.
    #[error(
        "upstream `{upstream}` has https endpoints and no `ca`, and the system trust store has no \
         certificates ({detail}): install the CA bundle (ca-certificates) or set \
         `upstreams.{upstream}.ca`"
    )]
    NoSystemRoots {
        /// The upstream.
        upstream: String,
        /// What the store loader said.
        detail: String,
    },
}

/// The certificate the listener presents, swappable at run time.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// `server.tls`: the files, the acceptor, and the certificate it presents.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    files: ServerTls,
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl TlsFiles {
    /// Read the files and build the acceptor; an error names the bad file.
    pub(crate) fn new(files: &ServerTls) -> Result<TlsFiles, TlsError> {
        let key = load(files)?;
        let current = Arc::new(Current(ArcSwap::new(key)));
        let provider = manifold_config::tls::provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "server.tls".into(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsFiles {
            files: files.clone(),
            current,
            config: Arc::new(config),
        })
    }

    /// The acceptor new connections are handshaken with.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Re-read the certificate and key; on success new handshakes present them, on failure
    /// the current pair stays and the error names the bad file.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.files)?;
        self.current.0.store(key);
        tracing::info!(cert = %self.files.cert.display(), "server.tls: certificate reloaded");
        Ok(())
    }

    /// The certificate presented now (tests compare it across reloads).
    #[cfg(test)]
    pub(crate) fn presented(&self) -> Arc<CertifiedKey> {
        self.current.0.load_full()
    }
}

fn load(files: &ServerTls) -> Result<Arc<CertifiedKey>, TlsError> {
    Ok(manifold_config::tls::load_certified_key(
        "server.tls",
        ("cert", &files.cert),
        ("key", &files.key),
    )?)
}

/// A handle that reloads the listener's certificate, usable after [`crate::Gateway::run`]
/// took the gateway (the config reload calls it). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TlsReloader(pub(crate) Option<Arc<TlsFiles>>);

impl TlsReloader {
    /// Re-read `server.tls.cert` and `server.tls.key`: new handshakes present them, open
    /// connections are untouched. Without `server.tls`, nothing to do. A bad file is refused
    /// (the current certificate stays) with an error naming it.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.0 {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> ServerTls {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        ServerTls {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert,
            key,
        }
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("manifold-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reload_swaps_the_certificate_and_refuses_a_broken_one() {
        let dir = tmp("reload");
        let files = write_pair(&dir, "a");
        let tls = TlsFiles::new(&files).unwrap();
        let before = tls.presented();
        // A renewal: new pair written over the old files.
        let renewed = write_pair(&dir, "b");
        std::fs::copy(&renewed.cert, &files.cert).unwrap();
        std::fs::copy(&renewed.key, &files.key).unwrap();
        tls.reload().unwrap();
        let after = tls.presented();
        assert_ne!(
            before.cert, after.cert,
            "the renewed certificate is presented"
        );
        // A broken renewal: the key is not PEM. Refused, naming the file; the last good
        // certificate stays.
        std::fs::write(&files.key, "not a key").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("server.tls.key"), "{err}");
        assert!(err.contains(&files.key.display().to_string()), "{err}");
        assert_eq!(tls.presented().cert, after.cert);
        let _ = std::fs::remove_dir_all(dir);
    }
}
