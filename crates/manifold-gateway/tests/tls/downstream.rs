//! The HTTPS listener: ALPN, the connection limits on the handshake, the scheme told to
//! upstreams, and the certificate reloaded without dropping a connection.

use super::certs::*;
use crate::support::*;
use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway with an HTTPS listener (and a plaintext one) from `toml`, and the HTTPS address.
async fn start_tls(dir: &Dir, server: &str, toml: &str) -> (TestGateway, SocketAddr) {
    let config = compile(dir, server, toml);
    let gw = TestGateway::spawn(manifold_gateway::Gateway::bind(config).await.unwrap());
    let tls = gw.tls.expect("a TLS listener");
    (gw, tls)
}

#[tokio::test]
async fn https_serves_http1_and_h2_by_alpn_and_tells_upstreams_it_was_https() {
    let dir = Dir::new("alpn");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let (gw, tls) = start_tls(&dir, TLS_SERVER, &proxy_to(&up.url())).await;
    let url = format!("https://127.0.0.1:{}/p", tls.port());
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
        .get(format!("http://{}/p", gw.addr).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(up.requests()[3].headers["x-forwarded-proto"], "http");
    gw.shutdown().await;
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
    TestGateway::spawn(gw).shutdown().await;
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
    let (gw, tls) = start_tls(&dir, &server, "").await;
    // Nothing at all, and the first bytes of a ClientHello record that never completes.
    for bytes in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let started = tokio::time::Instant::now();
        let mut s = TcpStream::connect(tls).await.unwrap();
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
    let url = format!("https://127.0.0.1:{}/nothing-here", tls.port());
    let resp = tokio::time::timeout(BOUND, client.get(url.parse().unwrap()))
        .await
        .expect("in time")
        .expect("an answer");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_handshaking_socket_holds_its_connection_slot_until_it_is_closed() {
    let dir = Dir::new("slot");
    let ca = Ca::new("downstream CA");
    listener_files(&dir, &ca);
    let server = format!("{TLS_SERVER}\nheader_read_timeout = \"500ms\"\nmax_connections = 1");
    let (gw, tls) = start_tls(&dir, &server, "").await;
    let started = tokio::time::Instant::now();
    let stalled = TcpStream::connect(tls).await.unwrap();
    // Let the listener take the stalled socket first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = https_client(&ca, Alpn::Http1);
    let url = format!("https://127.0.0.1:{}/nothing-here", tls.port());
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
    gw.shutdown().await;
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
    let config_reloader = gw.reloader();
    let gw = TestGateway::spawn(gw);
    let url: http::Uri = format!("https://127.0.0.1:{}/p", tls.port())
        .parse()
        .unwrap();
    // An HTTP/2 connection trusting only the old CA.
    let old_client = https_client(&old_ca, Alpn::H2);
    let get = |c: &Client<_, Empty<Bytes>>| c.get(url.clone());
    assert_eq!(get(&old_client).await.unwrap().status(), StatusCode::OK);
    // Renewed on disk (from another CA, so a new handshake would tell), then reloaded.
    listener_files(&dir, &new_ca);
    // A config reload (what SIGHUP, `POST /reload` and `--watch` do) re-reads them.
    config_reloader.reload().await.expect("the reload");
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
    // A config reload is refused whole for it, naming the file.
    let err = config_reloader.reload().await.unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    let another = https_client(&new_ca, Alpn::Http1);
    assert_eq!(get(&another).await.unwrap().status(), StatusCode::OK);
    gw.shutdown().await;
}
