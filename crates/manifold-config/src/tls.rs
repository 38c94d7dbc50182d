//! TLS files: `[server] tls = { listen, cert, key }` and an upstream's `ca`, `client_cert` and
//! `client_key`. Paths are relative to the config file's directory (like
//! `server.admin_token_file`).
//!
//! The files are read and checked when the config is compiled, so `manifold check` and the
//! start of `manifold serve` both name a missing file, a file that holds no PEM block of the
//! right kind, or a key that does not belong to its certificate. The gateway reads them again
//! with the same functions when it binds and on every `reload_tls`: a certificate renewed on
//! disk is picked up without a restart, and a broken renewal is refused the same way.

use crate::error::{Diagnostics, ErrorKind};
use crate::spanned::Spanned;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The largest TLS file read: a certificate chain or a CA bundle is a few KiB (the whole
/// Mozilla bundle is about 200 KiB); past this the path is surely wrong (a log, a device).
pub const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;

/// `[server] tls`: the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTls {
    /// Where HTTPS (HTTP/1.1 and HTTP/2 chosen by ALPN) is served.
    pub listen: SocketAddr,
    /// The certificate chain (PEM, leaf first), resolved against the config's directory.
    pub cert: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// An upstream's TLS settings for its `https://` endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// `ca`: the only roots its endpoints' certificates are checked against (a private CA);
    /// `None`: the system's trust store.
    pub ca: Option<PathBuf>,
    /// `client_cert` and `client_key`: the certificate presented to upstreams that ask for one
    /// (mutual TLS).
    pub client: Option<ClientIdentity>,
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientIdentity {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A TLS file that cannot be used; every variant names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("`{key}`: cannot read {}: {source}", path.display())]
    Read {
        /// The config key (`server.tls.cert`, `upstreams.NAME.ca`, …).
        key: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_TLS_FILE_BYTES`].
    #[error("`{key}`: {} is larger than {MAX_TLS_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is not PEM, or holds no block of the kind wanted.
    #[error("`{key}`: {} {problem}", path.display())]
    NotPem {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The key or the certificates were refused by rustls (an unsupported key type, a
    /// certificate that does not parse, a key that is not the certificate's).
    #[error("`{key}`: {} {problem}", path.display())]
    Refused {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

/// The one crypto provider of the project (`ring`), for the places that need it explicitly.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_limited(key: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let read = |source| TlsFileError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    };
    // A directory, a FIFO or a device is the wrong path, and reading a FIFO would block the
    // start (or `manifold check`) forever: regular files only (symlinks followed).
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(read(std::io::Error::other("not a regular file")));
    }
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_TLS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_TLS_FILE_BYTES {
        return Err(TlsFileError::TooLarge {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn not_pem(key: &str, path: &Path, wanted: &str, e: &pem::Error) -> TlsFileError {
    let problem = match e {
        pem::Error::NoItemsFound => {
            format!("holds no PEM {wanted} (is it PEM, and the right file?)")
        }
        other => format!("is not valid PEM: {other}"),
    };
    TlsFileError::NotPem {
        key: key.to_owned(),
        path: path.to_owned(),
        problem,
    }
}

/// Every certificate in the PEM file at `path` (at least one). `key` names the config key in
/// errors.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read_limited(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(key, path, "CERTIFICATE block", &e))?;
    if certs.is_empty() {
        return Err(not_pem(
            key,
            path,
            "CERTIFICATE block",
            &pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

/// The first private key in the PEM file at `path`.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_limited(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| not_pem(key, path, "PRIVATE KEY block", &e))
}

/// A certificate chain and its key, checked to belong together. `what` is the config key of
/// the pair without its last part (`server.tls`, `upstreams.NAME`); `cert_key` and `key_key`
/// their own names (`cert` / `key`, `client_cert` / `client_key`).
pub fn load_certified_key(
    what: &str,
    (cert_key, cert): (&str, &Path),
    (key_key, key): (&str, &Path),
) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let cert_name = format!("{what}.{cert_key}");
    let key_name = format!("{what}.{key_key}");
    let certs = load_certs(&cert_name, cert)?;
    let der = load_key(&key_name, key)?;
    let provider = provider();
    let signing =
        provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| TlsFileError::Refused {
                key: key_name.clone(),
                path: key.to_owned(),
                problem: format!("holds a key rustls cannot use: {e}"),
            })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsFileError::Refused {
                key: key_name,
                path: key.to_owned(),
                problem: format!(
                    "is not the key of the certificate in `{cert_name}` ({})",
                    cert.display()
                ),
            })
        }
        Err(e) => Err(TlsFileError::Refused {
            key: cert_name,
            path: cert.to_owned(),
            problem: format!("holds a certificate rustls cannot use: {e}"),
        }),
    }
}

/// The roots in the CA bundle at `path` (every certificate must parse as a trust anchor).
pub fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| TlsFileError::Refused {
            key: key.to_owned(),
            path: path.to_owned(),
            problem: format!("holds a certificate that is not a usable CA: {e}"),
        })?;
    }
    Ok(roots)
}

/// `path` as written, against the config file's directory.
fn resolve(config_file: &Path, path: &str) -> PathBuf {
    config_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(path)
}

/// `[server] tls = { listen = "IP:PORT", cert = "…", key = "…" }` as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    listen: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

/// Check `[server] tls`: the address, and the files (read now: errors at the key that names
/// the bad file).
pub(crate) fn server_tls(
    raw: &Spanned<RawServerTls>,
    config_file: &Path,
    diag: &mut Diagnostics<'_>,
) -> Option<ServerTls> {
    let r = raw.get_ref();
    let listen = match r.listen.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            diag.push(
                ErrorKind::Value,
                r.listen.span(),
                format!(
                    "`server.tls.listen`: {:?} is not an address; write IP:PORT, e.g. \"0.0.0.0:8443\"",
                    r.listen.get_ref()
                ),
            );
            None
        }
    };
    let cert = resolve(config_file, r.cert.get_ref());
    let key = resolve(config_file, r.key.get_ref());
    match load_certified_key("server.tls", ("cert", &cert), ("key", &key)) {
        Ok(certified) => {
            if let Some(w) =
                validity_warning("server.tls.cert", &cert, &certified, SystemTime::now())
            {
                diag.warn(r.cert.span(), w);
            }
        }
        Err(e) => {
            let span = if e.key() == "server.tls.key" {
                r.key.span()
            } else {
                r.cert.span()
            };
            diag.push(ErrorKind::Value, span, e.to_string());
            return None;
        }
    }
    Some(ServerTls {
        listen: listen?,
        cert,
        key,
    })
}

/// An upstream's `ca`, `client_cert` and `client_key` as written.
pub(crate) struct RawUpstreamTls<'a> {
    pub(crate) ca: Option<&'a Spanned<String>>,
    pub(crate) client_cert: Option<&'a Spanned<String>>,
    pub(crate) client_key: Option<&'a Spanned<String>>,
}

/// Check an upstream's TLS keys: both halves of the client identity or neither, every file
/// readable and of the right kind, and only on an upstream with an `https://` endpoint (on a
/// plain one they would silently do nothing).
pub(crate) fn upstream_tls(
    name: &str,
    raw: &RawUpstreamTls<'_>,
    any_https: bool,
    config_file: &Path,
    diag: &mut Diagnostics<'_>,
) -> UpstreamTls {
    let mut tls = UpstreamTls::default();
    let keys = [
        ("ca", raw.ca),
        ("client_cert", raw.client_cert),
        ("client_key", raw.client_key),
    ];
    if !any_https {
        for (k, v) in keys {
            if let Some(v) = v {
                diag.push(
                    ErrorKind::Value,
                    v.span(),
                    format!(
                        "`upstreams.{name}.{k}` applies to https:// endpoints, and upstream \
                         `{name}` has none"
                    ),
                );
            }
        }
        return tls;
    }
    if let Some(ca) = raw.ca {
        let path = resolve(config_file, ca.get_ref());
        match load_roots(&format!("upstreams.{name}.ca"), &path) {
            Ok(_) => tls.ca = Some(path),
            Err(e) => diag.push(ErrorKind::Value, ca.span(), e.to_string()),
        }
    }
    match (raw.client_cert, raw.client_key) {
        (None, None) => {}
        (Some(c), None) | (None, Some(c)) => {
            let (has, lacks) = if raw.client_cert.is_some() {
                ("client_cert", "client_key")
            } else {
                ("client_key", "client_cert")
            };
            diag.push(
                ErrorKind::Value,
                c.span(),
                format!("`upstreams.{name}.{has}` needs `upstreams.{name}.{lacks}` beside it"),
            );
        }
        (Some(c), Some(k)) => {
            let cert = resolve(config_file, c.get_ref());
            let key = resolve(config_file, k.get_ref());
            let what = format!("upstreams.{name}");
            match load_certified_key(&what, ("client_cert", &cert), ("client_key", &key)) {
                Ok(certified) => {
                    let key_name = format!("upstreams.{name}.client_cert");
                    let now = SystemTime::now();
                    if let Some(w) = validity_warning(&key_name, &cert, &certified, now) {
                        diag.warn(c.span(), w);
                    }
                    tls.client = Some(ClientIdentity { cert, key })
                }
                Err(e) => {
                    let span = if e.key().ends_with(".client_key") {
                        k.span()
                    } else {
                        c.span()
                    };
                    diag.push(ErrorKind::Value, span, e.to_string());
                }
            }
        }
    }
    tls
}

/// A warning when the leaf certificate of `certified` (read from `path`, the value of config
/// key `key`) is outside its validity period at `now`: every client would refuse it. A warning,
/// not an error: the file is what the operator has (a renewal may be on its way), and refusing
/// it would also stop a gateway's plaintext listener from starting.
pub fn validity_warning(
    key: &str,
    path: &Path,
    certified: &CertifiedKey,
    now: SystemTime,
) -> Option<String> {
    let leaf = certified.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        return Some(format!(
            "`{key}` ({}): the certificate expired on {}; clients will refuse it",
            path.display(),
            validity.not_after
        ));
    }
    if validity.not_before.timestamp() > now {
        return Some(format!(
            "`{key}` ({}): the certificate is not valid before {}; clients will refuse it until then",
            path.display(),
            validity.not_before
        ));
    }
    None
}

impl TlsFileError {
    /// The config key the error is about.
    pub fn key(&self) -> &str {
        match self {
            TlsFileError::Read { key, .. }
            | TlsFileError::TooLarge { key, .. }
            | TlsFileError::NotPem { key, .. }
            | TlsFileError::Refused { key, .. } => key,
        }
    }
}
