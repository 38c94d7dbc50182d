//! An upstream's rustls client configuration: whom its `https://` endpoints are checked
//! against, and what it presents when asked for a client certificate.
//!
//! Roots: `ca = "file.pem"` makes that bundle the only trust anchors (a private CA: a public
//! certificate for the same name is then refused too); without it, the system's trust store,
//! read once per process through `rustls-native-certs` (on Linux the distribution's bundle,
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), so the same CAs as curl and the OS tools are
//! trusted and a CA added by the operator needs no rebuild. `webpki-roots` would bake Mozilla's
//! list into the binary instead: right for a scratch container, wrong for a fleet with an
//! internal CA installed system-wide.

use crate::tls::TlsError;
use manifold_config::tls::{load_certified_key, load_roots, provider};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};
use std::sync::{Arc, OnceLock};

/// The system's roots, read on first use: the store is a few hundred certificates, parsed once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(if errors.is_empty() {
                    "none found".to_owned()
                } else {
                    errors.join("; ")
                });
            }
            if !found.errors.is_empty() {
                tracing::warn!(
                    errors = ?found.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    added,
                    "some system root certificates could not be read"
                );
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The client configuration of `up`'s https endpoints (ALPN is set by the connector).
pub(super) fn client_config(up: &manifold_config::Upstream) -> Result<ClientConfig, TlsError> {
    let roots = match &up.tls.ca {
        Some(ca) => Arc::new(load_roots(&format!("upstreams.{}.ca", up.name), ca)?),
        None => system_roots().map_err(|detail| TlsError::NoSystemRoots {
            upstream: up.name.clone(),
            detail,
        })?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: format!("upstream `{}`", up.name),
            source,
        })?
        .with_root_certificates(roots);
    let config = match &up.tls.client {
        Some(id) => {
            let what = format!("upstreams.{}", up.name);
            let key =
                load_certified_key(&what, ("client_cert", &id.cert), ("client_key", &id.key))?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
