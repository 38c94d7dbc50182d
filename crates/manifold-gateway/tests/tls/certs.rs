//! Certificates made in the test (rcgen), a client of the HTTPS listener, and config helpers.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on every wait here.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A directory of its own per test, removed at the end.
pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "manifold-tls-it-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for the test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub(crate) struct Leaf {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP literals).
    pub(crate) fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub(crate) fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub(crate) fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, "manifold test");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

impl Leaf {
    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap()
    }
}

/// Which protocols a test client offers by ALPN.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Alpn {
    Http1,
    H2,
    Both,
}

/// A client of the gateway's HTTPS listener trusting `ca`, naming `localhost`.
pub(crate) fn https_client(
    ca: &Ca,
    alpn: Alpn,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            ServerName::try_from("localhost").unwrap(),
        ));
    let (connector, h2_only) = match alpn {
        Alpn::Http1 => (builder.enable_http1().wrap_connector(http), false),
        Alpn::H2 => (builder.enable_http2().wrap_connector(http), true),
        Alpn::Both => (builder.enable_all_versions().wrap_connector(http), false),
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2_only)
        .build(connector)
}

/// Compile `toml` as a file in `dir` (TLS paths are relative to it), with `[server]` lines.
pub(crate) fn compile(dir: &Dir, server: &str, toml: &str) -> manifold_config::Config {
    let text = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\ndrain_timeout = \"2s\"\n{server}\n{toml}"
    );
    let file = dir.0.join("manifold.toml");
    // On disk too, so a reload (which re-reads the file) finds it.
    std::fs::write(&file, &text).expect("write the config");
    manifold_config::compile(&file, &text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

/// A downstream certificate for `localhost` from `ca`, written as cert.pem / key.pem.
pub(crate) fn listener_files(dir: &Dir, ca: &Ca) {
    let leaf = ca.server(&["localhost"]);
    dir.write("cert.pem", &leaf.cert);
    dir.write("key.pem", &leaf.key);
}

pub(crate) const TLS_SERVER: &str = "listen = \"127.0.0.1:0\"\ntls = { listen = \"127.0.0.1:0\", cert = \"cert.pem\", key = \"key.pem\" }";

pub(crate) fn proxy_to(url: &str) -> String {
    format!("[upstreams.u]\nendpoints = [\"{url}\"]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n")
}
