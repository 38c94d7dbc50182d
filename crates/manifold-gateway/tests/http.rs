//! The HTTP surface: 400 / 404 / 405 / 413, pass-through proxying, HTTP/2, admin, shutdown.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_gateway() -> (Upstream, TestGateway) {
    let up = Upstream::start(vec![
        ("*", "/slow", Reply::json(300, json!({"slow": true}))),
        ("*", "/", Reply::json(0, json!({"ok": true}))),
    ])
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{0}"]
[upstreams.u2]
endpoints = ["{0}/base"]

[routes.echo]
method = "POST"
path = "/echo"
  [[routes.echo.calls]]
  name = "e"
  upstream = "u"
  method = "POST"
  path = "/e"
  body = {{ got = "{{request.body.x}}" }}

[routes.slow]
path = "/slow"
  [[routes.slow.calls]]
  name = "s"
  upstream = "u"
  path = "/slow"

[routes.api]
method = "POST"
path = "/api/{{*rest}}"
proxy = "u2"

[routes.api_get]
method = "GET"
path = "/api/{{*rest}}"
proxy = "u2"
"#,
        up.url()
    ))
    .await;
    (up, gw)
}

#[tokio::test]
async fn client_errors_get_clear_answers() {
    let (_up, gw) = echo_gateway().await;
    let (s, _, b) = send("POST", &gw.url("/echo"), Some("{not json")).await;
    assert_eq!(s, 400);
    assert_eq!(json(&b)["error"]["kind"], "bad_json");

    let (s, _, b) = send("GET", &gw.url("/nowhere"), None).await;
    assert_eq!(s, 404);
    assert_eq!(json(&b)["error"]["kind"], "no_route");

    let (s, h, _) = send("GET", &gw.url("/echo"), None).await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "POST");

    let (s, _, b) = send(
        "POST",
        &gw.url("/echo"),
        Some(&format!("{{\"x\": \"{}\"}}", "a".repeat(5000))),
    )
    .await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&b));

    let (s, _, b) = send("POST", &gw.url("/echo"), Some(r#"{"x": [1, 2]}"#)).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b), json!({"e": {"ok": true}}));
}

#[tokio::test]
async fn head_is_served_by_the_get_route() {
    let (up, gw) = echo_gateway().await;
    // A composed GET route: the plan runs, the answer comes without its body.
    let (s, h, b) = send("HEAD", &gw.url("/slow"), None).await;
    assert_eq!(s, 200);
    assert!(b.is_empty(), "{b:?}");
    let (_, get_h, get_b) = send("GET", &gw.url("/slow"), None).await;
    assert_eq!(h["content-length"], get_b.len().to_string().as_str());
    assert_eq!(h["content-type"], get_h["content-type"]);
    // A proxied GET route forwards HEAD as HEAD.
    let (s, _, b) = send("HEAD", &gw.url("/api/things"), None).await;
    assert_eq!(s, 200);
    assert!(b.is_empty());
    assert_eq!(up.find("/base/api/things").method, "HEAD");
    // A route with no GET still refuses HEAD, and GET routes list HEAD as allowed.
    let (s, h, _) = send("HEAD", &gw.url("/echo"), None).await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "POST");
    let (s, h, _) = send("PUT", &gw.url("/slow"), None).await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, HEAD");
}

/// An upstream that answers each request with a head promising 100 bytes and sends `hello`,
/// then one more byte every `every` (bounded: at most 200), or nothing more at all; it keeps the
/// connection open either way (for at most 30 s).
async fn stalling_upstream(every: Option<Duration>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nhello";
                if conn.write_all(head).await.is_err() {
                    return;
                }
                if let Some(every) = every {
                    for _ in 0..200 {
                        tokio::time::sleep(every).await;
                        if conn.write_all(b"x").await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

/// GET `url` and read the body until it ends or breaks (at most 10 s): the bytes that came, and
/// whether it broke.
async fn read_until_cut(url: &str) -> (Vec<u8>, bool) {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or(&[])),
                Err(_) => return true,
            }
        }
        false
    };
    let broke = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the stalled answer was never cut");
    (got, broke)
}

#[tokio::test]
async fn a_proxied_answer_that_stalls_is_cut_after_the_upstream_timeout() {
    let up = stalling_upstream(None).await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"http://{up}\"]\ntimeout = \"300ms\"\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n"
    ))
    .await;
    let (got, broke) = read_until_cut(&gw.url("/p")).await;
    assert!(broke, "the body ended cleanly with {got:?}");
    assert_eq!(got, b"hello");
}

#[tokio::test]
async fn a_proxied_answer_still_streaming_at_the_route_deadline_is_cut() {
    // A byte every 50 ms never trips the 10 s per-read timeout: only the deadline ends it.
    let up = stalling_upstream(Some(Duration::from_millis(50))).await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"http://{up}\"]\ntimeout = \"10s\"\n[routes.p]\npath = \"/p\"\ndeadline = \"500ms\"\nproxy = \"u\"\n"
    ))
    .await;
    let (got, broke) = read_until_cut(&gw.url("/p")).await;
    assert!(broke, "the body ended cleanly with {} bytes", got.len());
    assert!(got.starts_with(b"hello") && got.len() < 100, "{got:?}");
}

#[tokio::test]
async fn oversized_body_is_refused_before_it_is_read() {
    let (_up, gw) = echo_gateway().await;
    // Announce 100 MB, send 10 bytes, then wait: the answer must come without the rest.
    let (head, _conn) = answer_before_the_body_ends(&gw, 100_000_000).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn proxy_forwards_method_path_query_headers_and_body() {
    let (up, gw) = echo_gateway().await;
    let req = http::Request::builder()
        .method("POST")
        .uri(gw.url("/api/things/1?a=b&c=%2F"))
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Full::new(Bytes::from_static(b"raw body, not json")))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body), json!({"ok": true}));
    let seen = up.find("/base/api");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/base/api/things/1?a=b&c=%2F");
    assert_eq!(seen.body, Bytes::from_static(b"raw body, not json"));
    assert_eq!(seen.headers["x-custom"], "kept");
    assert!(
        !seen.headers.contains_key("x-hop"),
        "a header named by Connection was forwarded"
    );
    assert!(seen.headers["x-forwarded-host"]
        .to_str()
        .unwrap()
        .starts_with("127.0.0.1"));
    // The client is no trusted proxy: what it wrote in X-Forwarded-For is replaced.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
}

/// Send `POST /echo` announcing a body of `announced` bytes, then only 10 bytes of it, and wait
/// for the gateway's answer (at most 10 s): it must come while the rest is still unsent.
async fn answer_before_the_body_ends(
    gw: &TestGateway,
    announced: u64,
) -> (String, tokio::net::TcpStream) {
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {announced}\r\n\r\n{{\"x\": 1, "
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("no answer while the body was still unsent")
        .unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), conn)
}

const ECHO_ROUTE: &str = r#"
[routes.echo]
method = "POST"
path = "/echo"
DEADLINE
  [[routes.echo.calls]]
  name = "e"
  upstream = "u"
  method = "POST"
  path = "/e"
  body = { got = "{request.body.x}" }
"#;

#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start_with_server(
        "body_read_timeout = \"300ms\"",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n{}",
            up.url(),
            ECHO_ROUTE.replace("DEADLINE", "")
        ),
    )
    .await;
    let (head, mut conn) = answer_before_the_body_ends(&gw, 50).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(head.contains("\"body_timeout\""), "{head}");
    // The gateway hangs up rather than wait for the rest.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("the connection was kept open")
        .unwrap();
    assert!(up.requests().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn a_body_still_arriving_at_the_route_deadline_gets_504() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n{}",
        up.url(),
        ECHO_ROUTE.replace("DEADLINE", "deadline = \"300ms\"")
    ))
    .await;
    let (head, _conn) = answer_before_the_body_ends(&gw, 50).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(head.contains("\"deadline\""), "{head}");
    assert!(up.requests().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start_with_server(
        "max_connections = 2",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
            up.url()
        ),
    )
    .await;
    let request = b"GET /p HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut buf = vec![0u8; 2048];
    // Two connections take both slots (each answered once, then kept alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        c.write_all(request).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("a connection within the limit was not served")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    // A third is not served while both are open...
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf))
            .await
            .is_err(),
        "a connection over the limit was served"
    );
    // ...and is as soon as one closes.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("the waiting connection was not served after a slot freed")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn http2_both_ways() {
    let up = Upstream::start_with(
        vec![("GET", "/", Reply::json(0, json!({"h2": true})))],
        true,
    )
    .await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\nhttp2 = true\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"u\"\n  path = \"/x\"\n",
        up.url()
    ))
    .await;
    // The client speaks h2c with prior knowledge to the gateway.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = h2
        .request(
            http::Request::get(gw.url("/r"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body), json!({"x": {"h2": true}}));
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn admin_endpoints_and_graceful_shutdown() {
    let (up, gw) = echo_gateway().await;
    let admin = format!("http://{}", gw.admin);
    let (s, _, b) = send("GET", &format!("{admin}/healthz"), None).await;
    assert_eq!((s.as_u16(), &b[..]), (200, &b"ok\n"[..]));
    let (s, _, _) = send("GET", &format!("{admin}/readyz"), None).await;
    assert_eq!(s, 200);
    let (s, _, b) = send("GET", &format!("{admin}/config"), None).await;
    assert_eq!(s, 200);
    let cfg = json(&b);
    assert_eq!(cfg["routes"][0]["name"], "echo");
    assert_eq!(
        cfg["routes"][0]["compose"]["calls"][0]["upstream_name"],
        "u"
    );

    // A request in flight when shutdown begins still gets its answer.
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move { send("GET", &url, None).await });
    for _ in 0..200 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.stop.cancel();
    let (s, _, b) = inflight.await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(json(&b), json!({"s": {"slow": true}}));
    let addr = gw.addr;
    gw.shutdown_within(Duration::from_secs(10)).await;
    // And then it no longer accepts.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
