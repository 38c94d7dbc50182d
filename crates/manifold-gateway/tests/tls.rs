//! TLS both ways, with certificates made in the test (rcgen): the HTTPS listener (HTTP/1.1 and
//! HTTP/2 chosen by ALPN, a stalled handshake closed at `header_read_timeout`, the scheme told
//! to upstreams), and `https://` upstreams (a private CA, SNI and `Host` from the configured
//! name, ALPN h2, mutual TLS, and a wrong CA failing the call with the upstream's name).

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Upper bound on every wait here.
const BOUND: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A directory of its own per test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "manifold-tls-it-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
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
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
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

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP literals).
    fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
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
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap()
    }
}

/// Which protocols a test client offers by ALPN.
#[derive(Debug, Clone, Copy)]
enum Alpn {
    Http1,
    H2,
    Both,
}

/// A client of the gateway's HTTPS listener trusting `ca`, naming `localhost`.
fn https_client(
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

/// A gateway with an HTTPS listener (and a plaintext one) from `toml`.
struct TlsGateway {
    plain: SocketAddr,
    tls: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TlsGateway {
    async fn start(dir: &Dir, server: &str, toml: &str) -> TlsGateway {
        let config = compile(dir, server, toml);
        let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
        let (plain, tls) = (gw.local_addr(), gw.tls_addr().expect("a TLS listener"));
        let stop = CancellationToken::new();
        let task = tokio::spawn(gw.run(stop.clone()));
        TlsGateway {
            plain,
            tls,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(BOUND, self.task).await;
    }
}

/// Compile `toml` as a file in `dir` (TLS paths are relative to it), with `[server]` lines.
fn compile(dir: &Dir, server: &str, toml: &str) -> manifold_config::Config {
    let text = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\ndrain_timeout = \"2s\"\n{server}\n{toml}"
    );
    let file = dir.0.join("manifold.toml");
    manifold_config::compile(&file, &text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

/// A downstream certificate for `localhost` from `ca`, written as cert.pem / key.pem.
fn listener_files(dir: &Dir, ca: &Ca) {
    let leaf = ca.server(&["localhost"]);
    dir.write("cert.pem", &leaf.cert);
    dir.write("key.pem", &leaf.key);
}

const TLS_SERVER: &str = "listen = \"127.0.0.1:0\"\ntls = { listen = \"127.0.0.1:0\", cert = \"cert.pem\", key = \"key.pem\" }";

fn proxy_to(url: &str) -> String {
    format!("[upstreams.u]\nendpoints = [\"{url}\"]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n")
}

#[tokio::test]
async fn https_serves_http1_and_h2_by_alpn_and_tells_upstreams_it_was_https() {
    let dir = Dir::new("alpn");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TlsGateway::start(&dir, TLS_SERVER, &proxy_to(&up.url())).await;
    let url = format!("https://127.0.0.1:{}/p", gw.tls.port());
    for (alpn, version) in [
        (Alpn::Http1, Version::HTTP_11),
        (Alpn::H2, Version::HTTP_2),
        (Alpn::Both, Version::HTTP_2),
    ] {
        let client = https_client(&ca, alpn);
        let resp = tokio::time::timeout(BOUND, client.get(url.parse().unwrap()))
            .await
            .expect("in time")
            .expect("an answer over TLS");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), version, "ALPN {alpn:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"ok":true}"#);
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.headers["x-forwarded-proto"], "https");
    }
    // The plaintext listener beside it still says http.
    let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = plain
        .get(format!("http://{}/p", gw.plain).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(up.requests()[3].headers["x-forwarded-proto"], "http");
    gw.stop().await;
}

#[tokio::test]
async fn a_tls_only_gateway_has_no_plaintext_listener() {
    let dir = Dir::new("only");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let server = "tls = { listen = \"127.0.0.1:0\", cert = \"cert.pem\", key = \"key.pem\" }";
    let config = compile(&dir, server, "");
    assert_eq!(config.server.listen, None, "`listen` left out: TLS only");
    let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
    assert_eq!(Some(gw.local_addr()), gw.tls_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(gw.run(stop.clone()));
    stop.cancel();
    let _ = tokio::time::timeout(BOUND, task).await;
}

/// The gateway closed this socket: a read ends (EOF or reset) within the bound.
async fn closed_within(mut s: TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(bound, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A TLS alert may come before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_at_header_read_timeout() {
    let dir = Dir::new("stall");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let server = format!("{TLS_SERVER}\nheader_read_timeout = \"300ms\"\nmax_connections = 1");
    let gw = TlsGateway::start(&dir, &server, "").await;
    // Nothing at all, and the first bytes of a ClientHello record that never completes.
    for bytes in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let started = tokio::time::Instant::now();
        let mut s = TcpStream::connect(gw.tls).await.unwrap();
        s.write_all(bytes).await.unwrap();
        assert!(
            closed_within(s, BOUND).await,
            "a handshake that never finishes must not keep its socket ({bytes:?})"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "closed after {took:?}, before header_read_timeout"
        );
    }
    // The one connection slot is free again: a real client is served.
    let client = https_client(&ca, Alpn::H2);
    let url = format!("https://127.0.0.1:{}/nothing-here", gw.tls.port());
    let resp = tokio::time::timeout(BOUND, client.get(url.parse().unwrap()))
        .await
        .expect("in time")
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test]
async fn a_handshaking_socket_holds_its_connection_slot_until_it_is_closed() {
    let dir = Dir::new("slot");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let server = format!("{TLS_SERVER}\nheader_read_timeout = \"500ms\"\nmax_connections = 1");
    let gw = TlsGateway::start(&dir, &server, "").await;
    let started = tokio::time::Instant::now();
    let stalled = TcpStream::connect(gw.tls).await.unwrap();
    // Let the listener take the stalled socket first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = https_client(&ca, Alpn::Http1);
    let url = format!("https://127.0.0.1:{}/nothing-here", gw.tls.port());
    let resp = tokio::time::timeout(BOUND, client.get(url.parse().unwrap()))
        .await
        .expect("in time")
        .expect("an answer once the slot is free");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let took = started.elapsed();
    // The real client waited in the backlog until the stalled handshake was closed.
    assert!(
        took >= Duration::from_millis(400),
        "served after {took:?}: the stalled socket did not hold the one slot"
    );
    drop(stalled);
    gw.stop().await;
}

#[tokio::test]
async fn reload_tls_presents_the_new_certificate_without_dropping_connections() {
    let dir = Dir::new("reload");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    listener_files(&dir, &old_ca);
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let config = compile(&dir, TLS_SERVER, &proxy_to(&up.url()));
    let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
    let tls = gw.tls_addr().unwrap();
    let reloader = gw.tls_reloader();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gw.run(stop.clone()));
    let url: http::Uri = format!("https://127.0.0.1:{}/p", tls.port())
        .parse()
        .unwrap();
    // An HTTP/2 connection trusting only the old CA.
    let old_client = https_client(&old_ca, Alpn::H2);
    let get = |c: &Client<_, Empty<Bytes>>| c.get(url.clone());
    assert_eq!(get(&old_client).await.unwrap().status(), StatusCode::OK);
    // Renewed on disk (from another CA, so a new handshake would tell), then reloaded.
    listener_files(&dir, &new_ca);
    reloader.reload_tls().unwrap();
    // The open connection is kept: the old-CA client is still served on it (a new handshake
    // would fail, since it does not trust the new certificate).
    for _ in 0..3 {
        assert_eq!(get(&old_client).await.unwrap().status(), StatusCode::OK);
    }
    // A new connection gets the new certificate.
    let new_client = https_client(&new_ca, Alpn::Both);
    assert_eq!(get(&new_client).await.unwrap().status(), StatusCode::OK);
    let fresh_old = https_client(&old_ca, Alpn::Both);
    assert!(
        get(&fresh_old).await.is_err(),
        "new handshakes present the new certificate"
    );
    // A broken renewal is refused, naming the file, and the current certificate stays.
    dir.write("key.pem", "garbage");
    let err = reloader.reload_tls().unwrap_err().to_string();
    assert!(
        err.contains("server.tls.key") && err.contains("key.pem"),
        "{err}"
    );
    let another = https_client(&new_ca, Alpn::Http1);
    assert_eq!(get(&another).await.unwrap().status(), StatusCode::OK);
    stop.cancel();
    let _ = tokio::time::timeout(BOUND, task).await;
}

/// What an HTTPS upstream saw of one request.
#[derive(Debug, Clone)]
struct TlsSeen {
    sni: Option<String>,
    version: Version,
    host: Option<String>,
    authority: Option<String>,
    client_cert: bool,
}

/// An HTTPS upstream on `localhost` (127.0.0.1 and, where it exists, ::1, on one port),
/// answering `{"tls": true}` and recording what it saw. With `client_ca`, a client certificate
/// from that CA is required.
struct TlsUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<TlsSeen>>>,
}

impl TlsUpstream {
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> TlsUpstream {
        Self::start_alpn(leaf, client_ca, &[b"h2", b"http/1.1"]).await
    }

    async fn start_alpn(leaf: &Leaf, client_ca: Option<&Ca>, alpn: &[&[u8]]) -> TlsUpstream {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(leaf.chain(), leaf.private_key())
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let seen: Arc<Mutex<Vec<TlsSeen>>> = Arc::default();
        for listener in std::iter::once(v4).chain(v6) {
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let (_, conn) = tls.get_ref();
                        let sni = conn.server_name().map(str::to_owned);
                        let client_cert = conn.peer_certificates().is_some();
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let seen = Arc::clone(&seen);
                            let sni = sni.clone();
                            async move {
                                let header = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned)
                                };
                                seen.lock().unwrap().push(TlsSeen {
                                    sni,
                                    version: req.version(),
                                    host: header("host"),
                                    authority: req.uri().authority().map(|a| a.to_string()),
                                    client_cert,
                                });
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from_static(br#"{"tls":true}"#),
                                )))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        }
        TlsUpstream { port, seen }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn seen(&self) -> Vec<TlsSeen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A plain gateway whose route `/p` proxies to `up` with the given upstream keys.
async fn gateway_to(dir: &Dir, up: &TlsUpstream, keys: &str) -> TestGatewayish {
    let toml = format!(
        "[upstreams.secure]\nendpoints = [\"{}\"]\nretry = {{ attempts = 1 }}\n{keys}\n[routes.p]\npath = \"/p\"\nproxy = \"secure\"\n",
        up.url()
    );
    let config = compile(dir, "listen = \"127.0.0.1:0\"", &toml);
    let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
    let addr = gw.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gw.run(stop.clone()));
    TestGatewayish { addr, stop, task }
}

struct TestGatewayish {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestGatewayish {
    async fn get(&self) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let resp = tokio::time::timeout(
            BOUND,
            client.get(format!("http://{}/p", self.addr).parse().unwrap()),
        )
        .await
        .expect("in time")
        .expect("an answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(BOUND, self.task).await;
    }
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_gets_sni_host_and_h2() {
    let dir = Dir::new("private-ca");
    let ca = Ca::new("private CA");
    dir.write("ca.pem", &ca.pem());
    let up = TlsUpstream::start(&ca.server(&["localhost"]), None).await;
    let gw = gateway_to(&dir, &up, "ca = \"ca.pem\"").await;
    for _ in 0..2 {
        let (status, body) = gw.get().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, r#"{"tls":true}"#);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        // The name as configured, although the request went to a resolved address.
        assert_eq!(s.sni.as_deref(), Some("localhost"), "{s:?}");
        // The upstream offered h2 and the gateway took it.
        assert_eq!(s.version, Version::HTTP_2, "{s:?}");
        assert!(!s.client_cert);
        // HTTP/2's `:authority` is the configured host too, not the address dialled.
        let name = format!("localhost:{}", up.port);
        assert_eq!(s.authority.as_deref(), Some(name.as_str()), "{s:?}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_https_upstream_offering_http1_only_gets_http1_and_the_configured_host() {
    let dir = Dir::new("h1-host");
    let ca = Ca::new("private CA");
    dir.write("ca.pem", &ca.pem());
    let up = TlsUpstream::start_alpn(&ca.server(&["localhost"]), None, &[b"http/1.1"]).await;
    let gw = gateway_to(&dir, &up, "ca = \"ca.pem\"").await;
    let (status, body) = gw.get().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &up.seen()[0];
    assert_eq!(s.version, Version::HTTP_11, "{s:?}");
    assert_eq!(s.sni.as_deref(), Some("localhost"), "{s:?}");
    assert_eq!(
        s.host.clone(),
        Some(format!("localhost:{}", up.port)),
        "{s:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_ca_fails_the_call_naming_the_upstream() {
    let dir = Dir::new("wrong-ca");
    let real = Ca::new("the upstream's CA");
    let other = Ca::new("some other CA");
    dir.write("other.pem", &other.pem());
    let up = TlsUpstream::start(&real.server(&["localhost"]), None).await;
    let gw = gateway_to(&dir, &up, "ca = \"other.pem\"").await;
    let (status, body) = gw.get().await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream `secure`"), "{body}");
    assert!(
        body.contains("connect"),
        "a TLS failure is a connect error: {body}"
    );
    assert!(
        body.to_lowercase().contains("certificate"),
        "the cause is shown: {body}"
    );
    assert!(up.seen().is_empty(), "nothing was sent");
    gw.stop().await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let dir = Dir::new("mtls");
    let ca = Ca::new("private CA");
    let clients = Ca::new("client CA");
    dir.write("ca.pem", &ca.pem());
    let id = clients.client("gateway");
    dir.write("client.pem", &id.cert);
    dir.write("client.key", &id.key);
    let up = TlsUpstream::start(&ca.server(&["localhost"]), Some(&clients)).await;
    // Without a client certificate: refused by the upstream.
    let gw = gateway_to(&dir, &up, "ca = \"ca.pem\"").await;
    let (status, body) = gw.get().await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream `secure`"), "{body}");
    gw.stop().await;
    assert!(up.seen().is_empty());
    // With it: served, and the upstream saw the certificate.
    let keys = "ca = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"";
    let gw = gateway_to(&dir, &up, keys).await;
    let (status, body) = gw.get().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(up.seen()[0].client_cert);
    gw.stop().await;
}

/// `path` as it appears in an error (the compiler joins it to the config's directory).
fn shown(dir: &Dir, name: &str) -> String {
    Path::new(&dir.0).join(name).display().to_string()
}

#[tokio::test]
async fn bad_tls_files_are_refused_at_start_naming_the_file() {
    let dir = Dir::new("bad-files");
    let ca = Ca::new("downstream CA");
    let a = ca.server(&["localhost"]);
    let b = ca.server(&["localhost"]);
    dir.write("cert.pem", &a.cert);
    dir.write("key.pem", &a.key);
    dir.write("other.key", &b.key);
    dir.write("junk.pem", "this is not PEM\n");
    let cases = [
        (
            "missing.pem",
            "key.pem",
            "server.tls.cert",
            "missing.pem",
            "cannot read",
        ),
        (
            "junk.pem",
            "key.pem",
            "server.tls.cert",
            "junk.pem",
            "no PEM",
        ),
        (
            "cert.pem",
            "junk.pem",
            "server.tls.key",
            "junk.pem",
            "no PEM",
        ),
        (
            "cert.pem",
            "other.key",
            "server.tls.key",
            "other.key",
            "is not the key of the certificate",
        ),
    ];
    for (cert, key, what, file, why) in cases {
        let text = format!(
            "[server]\ntls = {{ listen = \"127.0.0.1:0\", cert = \"{cert}\", key = \"{key}\" }}\n"
        );
        let err = manifold_config::compile(&dir.0.join("manifold.toml"), &text)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(what), "{err}");
        assert!(err.contains(&shown(&dir, file)), "{err}");
        assert!(err.contains(why), "{err}");
    }
}
