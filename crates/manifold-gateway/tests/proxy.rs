//! Pass-through routes at the edge: path traversal, bodies over the limit or malformed,
//! `X-Forwarded-*` from untrusted peers, `Expect: 100-continue` (issue 12, faults 3, 11, 13, 14).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Send `raw` on a fresh connection and read until the gateway closes it (at most 10 s).
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_raw(addr: SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, req.as_bytes()).await
}

async fn traversal_gateway() -> (Upstream, TestGateway) {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{0}/base"]
[routes.public]
path = "/public/{{*rest}}"
proxy = "u"
[routes.bp]
path = "/bp/{{*rest}}"
proxy = "u"
[routes.item]
path = "/item/{{id}}/view"
proxy = "u"
[routes.keep]
path = "/keep/{{*rest}}"
proxy = "u"
escaped_slashes = "keep"
"#,
        up.url()
    ))
    .await;
    (up, gw)
}

#[tokio::test]
async fn proxy_routes_refuse_paths_that_leave_them() {
    let (up, gw) = traversal_gateway().await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/..%2fadmin",
        "/public/..%5cadmin",
        "/public/a/../../admin",
        "/public/..;/admin",
        "/public/..\\admin",
        "/bp/../../etc",
        "/bp/%2e%2e/%2e%2e/etc",
        "/item/../view",
        "/item/%2e/view",
    ] {
        let answer = get_raw(gw.addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        if answer.contains("\r\n\r\n{") {
            assert!(answer.contains("bad_path"), "{path}: {answer}");
        }
    }
    let seen: Vec<String> = up
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert!(seen.is_empty(), "forwarded: {seen:?}");
}

#[tokio::test]
async fn proxy_routes_forward_the_normalized_path() {
    let (up, gw) = traversal_gateway().await;
    for (path, upstream) in [
        ("/public/a/./b//c?x=%2F..", "/base/public/a/b/c?x=%2F.."),
        ("/public/a/../b", "/base/public/b"),
        ("/public/%61%62", "/base/public/ab"),
        ("/public/x/", "/base/public/x/"),
        ("/item/7/view", "/base/item/7/view"),
        ("/keep/a%2fb", "/base/keep/a%2Fb"),
    ] {
        let answer = get_raw(gw.addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let seen = up.requests().pop().unwrap();
        assert_eq!(seen.path_and_query, upstream, "{path}");
    }
}

/// An upstream on a raw socket: reads one connection to its end, answers nothing, and reports
/// what it got.
async fn silent_upstream() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        got
    });
    (addr, task)
}

async fn body_gateway(up: SocketAddr) -> TestGateway {
    // `max_body_bytes = 4096` (the test default).
    TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"http://{up}\"]\ntimeout = \"10s\"\n[routes.up]\nmethod = \"POST\"\npath = \"/up/{{*rest}}\"\nproxy = \"u\"\n"
    ))
    .await
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_and_the_upstream_request_is_abandoned() {
    let (up, seen) = silent_upstream().await;
    let gw = body_gateway(up).await;
    let mut req =
        b"POST /up/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // Five chunks of 1,000 bytes: the fifth passes the 4,096-byte limit. Nothing more is sent,
    // so the gateway's close is not a reset that would discard its answer.
    for _ in 0..5 {
        req.extend_from_slice(b"3e8\r\n");
        req.extend_from_slice(&[b'a'; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    let answer = raw_exchange(gw.addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    let got = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the upstream connection was not closed")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("POST /up/x"), "{got}");
    // The upstream never saw the request end: no last chunk, and no more than the limit.
    assert!(
        !got.contains("\r\n0\r\n\r\n"),
        "a complete request reached the upstream"
    );
    let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.matches('a').count() <= 4096, "{} bytes", body.len());
}

/// `Transfer-Encoding: gzip, chunked`: hyper undoes the chunking only, and the coding's name
/// goes with the hop-by-hop header, so the upstream would get gzip'd bytes as the body. 501,
/// and nothing reaches the upstream.
#[tokio::test]
async fn a_transfer_coding_besides_chunked_gets_501_and_is_not_forwarded() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = body_gateway(up.addr.unwrap()).await;
    let answer = raw_exchange(
        gw.addr,
        b"POST /up/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("transfer_coding"), "{answer}");
    assert!(up.requests().is_empty(), "forwarded: {:?}", up.requests());
}

#[tokio::test]
async fn a_malformed_chunk_gets_400_without_hypers_words() {
    let (up, seen) = silent_upstream().await;
    let gw = body_gateway(up).await;
    let answer = raw_exchange(
        gw.addr,
        b"POST /up/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_body"), "{answer}");
    assert!(
        !answer.contains("user's Body") && !answer.contains("chunk size"),
        "{answer}"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the upstream connection was not closed")
        .unwrap();
    assert!(!String::from_utf8_lossy(&got).contains("\r\n0\r\n\r\n"));
}

async fn forwarded_gateway(up: &Upstream, trusted: &str) -> TestGateway {
    TestGateway::start_with_server(
        trusted,
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
            up.url()
        ),
    )
    .await
}

async fn send_spoofed(gw: &TestGateway) {
    let req = http::Request::get(gw.url("/p"))
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=10.0.0.1")
        .header("x-forwarded-ssl", "on")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-prefix", "/evil")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;

    // Default: nobody is trusted; what the client wrote is replaced.
    let gw = forwarded_gateway(&up, "").await;
    send_spoofed(&gw).await;
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
    assert!(!seen.headers.contains_key("forwarded"));
    // Nor can it claim https or another port or base path through the other `X-Forwarded-*`.
    for name in ["x-forwarded-ssl", "x-forwarded-port", "x-forwarded-prefix"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name}: {:?}",
            seen.headers
        );
    }

    // A trusted peer's list is extended and its proto and host kept.
    let gw = forwarded_gateway(&up, "trusted_proxies = [\"127.0.0.0/8\"]").await;
    send_spoofed(&gw).await;
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "evil.example");
    assert_eq!(seen.headers["x-forwarded-ssl"], "on");

    // A trusted list that does not hold the peer changes nothing.
    let gw = forwarded_gateway(&up, "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]").await;
    send_spoofed(&gw).await;
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn over_http2_the_authority_is_the_forwarded_host() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = forwarded_gateway(&up, "").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(gw.url("/p"))
        .header("x-forwarded-host", "evil.example")
        .body(Full::default())
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
}

/// A `Connection` value with an obs-text byte (hyper accepts them) still names headers that
/// belong to the client's hop only: none of them reaches the upstream.
#[tokio::test]
async fn headers_named_by_a_connection_value_with_obs_text_are_not_forwarded() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = forwarded_gateway(&up, "").await;
    let mut req =
        b"GET /p HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nConnection: x-private, caf"
            .to_vec();
    req.extend_from_slice(b"\xe9\r\nX-Private: secret\r\nX-Kept: yes\r\n\r\n");
    let answer = raw_exchange(gw.addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.headers["x-kept"], "yes");
    assert!(
        !seen.headers.contains_key("x-private"),
        "a header the client's Connection named reached the upstream: {:?}",
        seen.headers
    );
}

/// An HTTP/2 client may send each cookie as its own `cookie` field; the HTTP/1.1 upstream gets
/// them as one `Cookie` line, joined with `; ` (RFC 9113 §8.2.3).
#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = forwarded_gateway(&up, "").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(gw.url("/p"))
        .header("cookie", "a=1")
        .header("cookie", "session=s3cret")
        .body(Full::default())
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let seen = up.requests().pop().unwrap();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; session=s3cret"], "{:?}", seen.headers);
}

#[tokio::test]
async fn expect_100_continue_is_answered_once_and_not_forwarded() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.up]\nmethod = \"POST\"\npath = \"/up\"\nproxy = \"u\"\n",
        up.url()
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The interim answer comes before any of the body is sent.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert_eq!(n, 1, "closed early: {}", String::from_utf8_lossy(&interim));
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue"));
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(
        !rest.contains("100 Continue"),
        "a second 100 Continue: {rest}"
    );
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.body, Bytes::from_static(b"hello"));
    assert!(
        !seen.headers.contains_key("expect"),
        "the upstream got Expect: {:?}",
        seen.headers
    );
}
