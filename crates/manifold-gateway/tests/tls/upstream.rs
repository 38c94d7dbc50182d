//! `https://` upstreams: a private CA, SNI / `Host` / `:authority` from the configured name,
//! ALPN, mutual TLS, a wrong CA, and bad files at start.

use super::certs::*;
use crate::support::TestGateway;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

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
async fn gateway_to(dir: &Dir, up: &TlsUpstream, keys: &str) -> TestGateway {
    let toml = format!(
        "[upstreams.secure]\nendpoints = [\"{}\"]\nretry = {{ attempts = 1 }}\n{keys}\n[routes.p]\npath = \"/p\"\nproxy = \"secure\"\n",
        up.url()
    );
    let config = compile(dir, "listen = \"127.0.0.1:0\"", &toml);
    TestGateway::spawn(manifold_gateway::Gateway::bind(config).await.unwrap())
}

/// `GET /p` through `gw`: the status and the body.
async fn get(gw: &TestGateway) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = tokio::time::timeout(BOUND, client.get(gw.url("/p").parse().unwrap()))
        .await
        .expect("in time")
        .expect("an answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_gets_sni_host_and_h2() {
    let dir = Dir::new("private-ca");
    let ca = Ca::new("private CA");
    dir.write("ca.pem", &ca.pem());
    let up = TlsUpstream::start(&ca.server(&["localhost"]), None).await;
    let gw = gateway_to(&dir, &up, "ca = \"ca.pem\"").await;
    for _ in 0..2 {
        let (status, body) = get(&gw).await;
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
    gw.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_offering_http1_only_gets_http1_and_the_configured_host() {
    let dir = Dir::new("h1-host");
    let ca = Ca::new("private CA");
    dir.write("ca.pem", &ca.pem());
    let up = TlsUpstream::start_alpn(&ca.server(&["localhost"]), None, &[b"http/1.1"]).await;
    let gw = gateway_to(&dir, &up, "ca = \"ca.pem\"").await;
    let (status, body) = get(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &up.seen()[0];
    assert_eq!(s.version, Version::HTTP_11, "{s:?}");
    assert_eq!(s.sni.as_deref(), Some("localhost"), "{s:?}");
    assert_eq!(
        s.host.clone(),
        Some(format!("localhost:{}", up.port)),
        "{s:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_wrong_ca_fails_the_call_naming_the_upstream() {
    let dir = Dir::new("wrong-ca");
    let real = Ca::new("the upstream's CA");
    let other = Ca::new("some other CA");
    dir.write("other.pem", &other.pem());
    let up = TlsUpstream::start(&real.server(&["localhost"]), None).await;
    let gw = gateway_to(&dir, &up, "ca = \"other.pem\"").await;
    let (status, body) = get(&gw).await;
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
    gw.shutdown().await;
}

/// An upstream whose port takes the TCP connection and never answers the ClientHello (a stuck
/// process whose listen backlog still completes TCP handshakes): opening the connection is
/// bounded by `connect_timeout`, handshake included, and fails as `connect` (nothing was sent,
/// so it is retried like a refused connection), not after the attempt's whole `timeout`.
#[tokio::test]
async fn a_tls_handshake_that_never_ends_is_bounded_by_connect_timeout() {
    let dir = Dir::new("silent-tls");
    let ca = Ca::new("private CA");
    dir.write("ca.pem", &ca.pem());
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let toml = format!(
        "[upstreams.secure]\nendpoints = [\"https://127.0.0.1:{port}\"]\nca = \"ca.pem\"\n\
         connect_timeout = \"200ms\"\ntimeout = \"5s\"\nretry = {{ attempts = 1 }}\n\
         [routes.p]\npath = \"/p\"\nproxy = \"secure\"\n"
    );
    let config = compile(&dir, "listen = \"127.0.0.1:0\"", &toml);
    let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
    let gw = TestGateway::spawn(gw);
    let (status, body) = get(&gw).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(r#""kind":"connect""#), "{body}");
    assert!(body.contains("connect_timeout"), "{body}");
    gw.shutdown().await;
    held.abort();
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
    let (status, body) = get(&gw).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream `secure`"), "{body}");
    gw.shutdown().await;
    assert!(up.seen().is_empty());
    // With it: served, and the upstream saw the certificate.
    let keys = "ca = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"";
    let gw = gateway_to(&dir, &up, keys).await;
    let (status, body) = get(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(up.seen()[0].client_cert);
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_files_gone_bad_after_check_fail_the_start_naming_the_file() {
    let dir = Dir::new("bad-at-start");
    let ca = Ca::new("private CA");
    listener_files(&dir, &ca);
    dir.write("ca.pem", &ca.pem());
    let toml = "[upstreams.secure]\nendpoints = [\"https://localhost:1\"]\nca = \"ca.pem\"\n\
                [routes.p]\npath = \"/p\"\nproxy = \"secure\"\n";
    // Valid when checked; then the key is truncated before `serve` binds.
    let config = compile(&dir, TLS_SERVER, toml);
    dir.write("key.pem", "-----BEGIN PRIVATE KEY-----\n");
    let err = manifold_gateway::Gateway::bind(config)
        .await
        .expect_err("refused at start")
        .to_string();
    assert!(err.contains("`server.tls.key`"), "{err}");
    assert!(
        err.contains(&dir.0.join("key.pem").display().to_string()),
        "{err}"
    );
    // The listener's files are fine again, the upstream's CA is gone.
    listener_files(&dir, &ca);
    let config = compile(&dir, TLS_SERVER, toml);
    std::fs::remove_file(dir.0.join("ca.pem")).unwrap();
    let err = manifold_gateway::Gateway::bind(config)
        .await
        .expect_err("refused at start")
        .to_string();
    assert!(err.contains("`upstreams.secure.ca`"), "{err}");
    assert!(err.contains("cannot read"), "{err}");
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
