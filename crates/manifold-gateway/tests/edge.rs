//! The connection edge, tried as an attacker would: sockets that send nothing or half a
//! preface, idle HTTP/2 connections, requests without a proper `Host`, the shutdown sequence,
//! and the log line every gateway-made 5xx must leave.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on every wait here: the configured timeouts are far shorter.
const BOUND: Duration = Duration::from_secs(10);

async fn ok_upstream() -> Upstream {
    Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await
}

fn proxy_route(up: &Upstream) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
        up.url()
    )
}

/// Open a socket to `addr` and send `bytes` (maybe nothing), then leave it idle.
async fn idle_socket(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if !bytes.is_empty() {
        s.write_all(bytes).await.expect("write");
    }
    s
}

/// The gateway closed this socket: a read ends (EOF, or a reset) within the bound.
async fn assert_closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(BOUND, s.read(&mut buf)).await {
            Err(_) => panic!("{what}: the gateway kept the socket open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // An answer (e.g. a 408 or an HTTP/2 GOAWAY) may come before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// One raw HTTP/1.1 exchange on a fresh connection: the answer's head and what followed it.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(BOUND, s.read(&mut buf))
        .await
        .expect("no answer")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn sockets_that_send_no_request_head_do_not_lock_out_the_listener() {
    let up = ok_upstream().await;
    let gw = TestGateway::start_with_server(
        "max_connections = 4\nheader_read_timeout = \"200ms\"",
        &proxy_route(&up),
    )
    .await;
    // Every slot taken by a socket stuck before hyper-util knows the protocol version.
    let stuck = vec![
        idle_socket(gw.addr, b"").await,
        idle_socket(gw.addr, b"").await,
        idle_socket(gw.addr, b"PRI * HTTP/2.0\r\n").await,
        idle_socket(gw.addr, b"PRI * HTTP/2.0\r\n\r\nSM").await,
    ];
    // Anyone else is still served...
    let answer = raw(gw.addr, b"GET /p HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...because the stuck sockets were closed, and so is a half-sent request line.
    for (i, s) in stuck.into_iter().enumerate() {
        assert_closed(s, &format!("stuck socket {i}")).await;
    }
    assert_closed(
        idle_socket(gw.addr, b"GET /p HT").await,
        "half a request line",
    )
    .await;
}

/// Read one whole answer to `GET /p` (its body is the upstream's `{"ok":true}`).
async fn answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("{\"ok\":true}") {
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .expect("no answer")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn keep_alive_connections_serve_again_after_idling_and_close_after_header_read_timeout() {
    let up = ok_upstream().await;
    let gw =
        TestGateway::start_with_server("header_read_timeout = \"300ms\"", &proxy_route(&up)).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    // Idle between requests (the connection gives up hyper's buffers), well within the timeout.
    for _ in 0..3 {
        s.write_all(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Pipelined: both answered, in order, on the same connection.
    s.write_all(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\nGET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let first = answer(&mut s).await;
    let second = if first.matches("HTTP/1.1 200").count() == 2 {
        first.clone()
    } else {
        answer(&mut s).await
    };
    assert!(second.contains("HTTP/1.1 200"), "{first} / {second}");
    // Then nothing: the idle keep-alive connection is closed.
    assert_closed(s, "an idle keep-alive connection").await;
}

#[tokio::test]
async fn the_admin_listener_closes_sockets_that_send_no_request_head() {
    let up = ok_upstream().await;
    let gw =
        TestGateway::start_with_server("header_read_timeout = \"200ms\"", &proxy_route(&up)).await;
    // The admin listener's own limit is 256 connections: fill it.
    let mut stuck = Vec::new();
    for i in 0..256 {
        let bytes: &[u8] = if i % 2 == 0 {
            b""
        } else {
            b"PRI * HTTP/2.0\r\n"
        };
        stuck.push(idle_socket(gw.admin, bytes).await);
    }
    let answer = raw(gw.admin, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for (i, s) in stuck.into_iter().enumerate() {
        assert_closed(s, &format!("admin socket {i}")).await;
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_h2_idle_timeout() {
    let up = ok_upstream().await;
    let gw = TestGateway::start_with_server("h2_idle_timeout = \"300ms\"", &proxy_route(&up)).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/p"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(json(&body), json!({"ok": true}));
    // Nothing more is sent: the gateway ends the connection (GOAWAY, then close), although the
    // client would answer every keep-alive PING.
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the idle HTTP/2 connection was kept open")
        .expect("the connection task")
        .expect("a clean close");
    assert!(send.is_closed());
}

#[tokio::test]
async fn http11_requests_need_exactly_one_valid_host() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_route(&up)).await;
    for (request, what) in [
        (&b"GET /p HTTP/1.1\r\n\r\n"[..], "no Host"),
        (
            b"GET /p HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            "two Hosts",
        ),
        (
            b"GET /p HTTP/1.1\r\nhost: a\r\nHost: a\r\n\r\n",
            "the same Host twice",
        ),
        (
            b"GET /p HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
            "two Hosts in HTTP/1.0",
        ),
        (
            b"GET /p HTTP/1.1\r\nhost: user@evil\r\n\r\n",
            "userinfo in Host",
        ),
    ] {
        let answer = raw(gw.addr, request).await;
        let status = answer.lines().next().unwrap_or_default();
        assert!(status.ends_with(" 400 Bad Request"), "{what}: {answer}");
        assert!(answer.contains("bad_host"), "{what}: {answer}");
    }
    assert!(up.requests().is_empty(), "a bad request was forwarded");
    // HTTP/1.0 may omit Host.
    let answer = raw(gw.addr, b"GET /p HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let answer = raw(gw.addr, b"GET /p HTTP/1.1\r\nhost: example.com:80\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_flips_readyz_then_closes_the_listener_after_drain_delay_and_aborts_at_drain_timeout(
) {
    let up = Upstream::start(vec![
        ("*", "/hang", Reply::json(60_000, json!({"late": true}))),
        ("*", "/", Reply::json(0, json!({"ok": true}))),
    ])
    .await;
    let gw = TestGateway::start_with_server(
        "drain_delay = \"1500ms\"\ndrain_timeout = \"500ms\"",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\ntimeout = \"60s\"\n[routes.p]\npath = \"/{{*rest}}\"\nproxy = \"u\"\n",
            up.url()
        ),
    )
    .await;
    // A request that will still be running at the drain timeout.
    let mut hung = TcpStream::connect(gw.addr).await.expect("connect");
    hung.write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..400 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        up.requests().len(),
        1,
        "the hung request never reached the upstream"
    );

    gw.stop.cancel();
    tokio::task::yield_now().await;
    // Not ready at once, while the client listener still serves new connections.
    let (s, _, b) = send("GET", &format!("http://{}/readyz", gw.admin), None).await;
    assert_eq!((s.as_u16(), &b[..]), (503, &b"draining\n"[..]));
    let (s, _, b) = send("GET", &gw.url("/ok"), None).await;
    assert_eq!(s, 200, "a new connection during drain_delay was not served");
    assert_eq!(json(&b), json!({"ok": true}));

    // Then the listener closes.
    let refused = async {
        while TcpStream::connect(gw.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, refused)
        .await
        .expect("the listener never closed");
    // And the hung request's connection is aborted at the drain timeout, long before the
    // upstream's 60 s.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(BOUND, hung.read_to_end(&mut buf))
        .await
        .expect("the hung connection was not aborted");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).contains("late"),
        "{buf:?}"
    );
    gw.shutdown_within(BOUND).await;
    // The upstream call went with it.
    let dropped = async {
        while !up.find("/hang").cancelled {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(BOUND, dropped)
        .await
        .expect("the upstream call was not dropped");
}

/// Log lines written while a test runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static SINK: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// The writer of the one global subscriber: each line goes to the capture of the thread that
/// logged it, if any.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| {
            if let Some(c) = &*s.borrow() {
                c.0.lock().expect("log buffer").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops a capture when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

impl Captured {
    /// What this thread logs at info and above from now on, until the guard is dropped.
    ///
    /// Why one global subscriber and not `set_default` per test: with a thread's own
    /// subscriber, tracing caches per log site whether any subscriber wants it, and a site
    /// that other tests' threads (which have none) hit at the wrong moment stayed "nobody
    /// wants this" for this one too: a 502's line went missing in most runs of the whole
    /// binary. A global subscriber is asked the same way by every thread; it writes each line
    /// to the capture of the thread that logged it, and drops the rest.
    fn info() -> (Captured, CaptureGuard) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadSink)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
        });
        let logs = Captured::default();
        SINK.with(|s| *s.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard)
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
    fn with(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

async fn send_with_id(url: &str, id: Option<&str>) -> (u16, http::HeaderMap) {
    let mut b = http::Request::get(url);
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

// The default current-thread runtime: every task of the gateway logs to this thread's
// subscriber.
#[tokio::test]
async fn every_gateway_5xx_is_logged_once_with_its_request_id_and_render_failures_are_counted() {
    let (logs, _guard) = Captured::info();

    let up = Upstream::start(vec![
        ("*", "/fail", Reply::raw(0, 500, "{\"oops\": 1}")),
        ("*", "/unavailable", Reply::raw(0, 503, "{\"busy\": 1}")),
        ("*", "/", Reply::json(0, json!({"ok": true}))),
    ])
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]
[upstreams.dead]
endpoints = ["http://{dead}"]

[routes.composed]
path = "/composed"
  [[routes.composed.calls]]
  name = "f"
  upstream = "u"
  path = "/fail"

[routes.cached]
path = "/cached"
cache = {{ ttl = "60s" }}
  [[routes.cached.calls]]
  name = "f"
  upstream = "u"
  path = "/fail"

[routes.gone]
path = "/gone"
proxy = "dead"

[routes.passed]
path = "/unavailable"
proxy = "u"

[routes.echo]
path = "/echo"
  [[routes.echo.calls]]
  name = "o"
  upstream = "u"
  path = "/ok"
  [routes.echo.response]
  headers = {{ x-echo = "{{query.v}}" }}
  body = {{ ok = "{{o.ok}}" }}
"#,
        up = up.url()
    ))
    .await;

    let (s, h) = send_with_id(&gw.url("/composed"), Some("req-composed-1")).await;
    assert_eq!(s, 502);
    assert_eq!(h["x-request-id"], "req-composed-1");
    let (s, _) = send_with_id(&gw.url("/gone"), Some("req-gone-2")).await;
    assert_eq!(s, 502);
    // A composed route's failure shared through its cache is still the gateway's.
    let (s, _) = send_with_id(&gw.url("/cached"), Some("req-cached-4")).await;
    assert_eq!(s, 502);
    // An upstream's own 503 passed through: not the gateway's error.
    let (s, h) = send_with_id(&gw.url("/unavailable"), Some("req-passed-3")).await;
    assert_eq!(s, 503);
    // Every answer carries its request id (telemetry); this one is still not logged (below).
    assert_eq!(h["x-request-id"], "req-passed-3");
    // No id from the client (or one that could forge log fields): one is made up, and the
    // client is told which.
    let (s, h) = send_with_id(&gw.url("/composed"), Some("x cause=forged")).await;
    assert_eq!(s, 502);
    let made_up = h["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(!made_up.contains(' '), "{made_up}");

    let line = logs.with("req-composed-1");
    assert_eq!(line.len(), 1, "{:#?}", logs.lines());
    assert!(line[0].contains("WARN"), "{}", line[0]);
    assert!(line[0].contains("upstream_status"), "{}", line[0]);
    assert!(line[0].contains("route `composed`"), "{}", line[0]);
    let line = logs.with("req-gone-2");
    assert_eq!(line.len(), 1, "{:#?}", logs.lines());
    assert!(line[0].contains("connect"), "{}", line[0]);
    assert!(logs.with("req-passed-3").is_empty(), "{:#?}", logs.lines());
    let line = logs.with("req-cached-4");
    assert_eq!(line.len(), 1, "{:#?}", logs.lines());
    assert!(line[0].contains("route `cached`"), "{}", line[0]);
    assert_eq!(logs.with(&made_up).len(), 1, "{:#?}", logs.lines());
    assert!(logs.with("forged").is_empty(), "{:#?}", logs.lines());
    // One line per 5xx, nothing else at warn about them.
    assert_eq!(logs.with("WARN").len(), 4, "{:#?}", logs.lines());

    // A response header whose value cannot be a header value is dropped, logged with its
    // name (not its value) and counted.
    assert_eq!(gw.stats.response_header_render_failures(), 0);
    let (s, h) = send_with_id(&gw.url("/echo?v=a%0D%0Aset-cookie:%20x"), None).await;
    assert_eq!(s, 200);
    assert!(!h.contains_key("x-echo") && !h.contains_key("set-cookie"));
    assert_eq!(gw.stats.response_header_render_failures(), 1);
    let line = logs.with("response header dropped");
    assert_eq!(line.len(), 1, "{:#?}", logs.lines());
    assert!(line[0].contains("x-echo"), "{}", line[0]);
    assert!(!line[0].contains("set-cookie"), "{}", line[0]);
    let (_, h) = send_with_id(&gw.url("/echo?v=fine"), None).await;
    assert_eq!(h["x-echo"], "fine");
    assert_eq!(gw.stats.response_header_render_failures(), 1);
}

/// A client that reads an answer's head and then nothing more is dropped `send_timeout` after
/// the gateway's writes to it began to wait (nginx's `send_timeout`), not held for
/// `h2_idle_timeout` (5 min): its answer is cut.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    const BIG: usize = 64 << 20;
    let up = Upstream::start(vec![("GET", "/", Reply::raw(0, 200, &"x".repeat(BIG)))]).await;
    let gw = TestGateway::start_with_server("send_timeout = \"300ms\"", &proxy_route(&up)).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /p HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .expect("write");
    let mut head = [0u8; 1024];
    let n = s.read(&mut head).await.expect("the answer begins");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    // Read nothing for several send timeouts: the socket buffers fill and the gateway's writes
    // wait. (Not a bound on the gateway's speed: only long enough for the timeout to pass.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut total = n;
    let mut buf = vec![0u8; 1 << 20];
    // Until the gateway closes the socket, or the whole answer is here (a kept connection).
    let read_all = async {
        while total < BIG {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => total += k,
            }
        }
    };
    tokio::time::timeout(BOUND, read_all)
        .await
        .expect("the connection was neither closed nor finished");
    assert!(
        total < BIG,
        "the whole answer ({total} bytes) was still there: the stalled client was kept"
    );
}

/// A client chooses its path, up to the 64 KiB a URI may hold: a log line records what
/// telemetry records of it (its first `URL_PATH_MAX` bytes), and a path refused for the
/// client's own fault is logged at debug, as every refused request is, not at info.
#[tokio::test]
async fn a_client_s_path_is_logged_cut_and_its_refusal_at_debug() {
    let (logs, _guard) = Captured::info();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = TestGateway::start(&format!(
        "[upstreams.dead]\nendpoints = [\"http://{dead}\"]\n[routes.gone]\npath = \"/g/{{*rest}}\"\nproxy = \"dead\"\n"
    ))
    .await;
    let long = format!("/g/{}", "a".repeat(20_000));
    let (status, _) = send_with_id(&gw.url(&long), Some("long-1")).await;
    assert_eq!(status, 502);
    let lines = logs.with("long-1");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let kept = &long[..manifold_telemetry::URL_PATH_MAX];
    assert!(lines[0].contains(kept), "the path's start is logged");
    assert!(
        lines[0].len() < manifold_telemetry::URL_PATH_MAX + 1000,
        "a {}-byte log line",
        lines[0].len()
    );
    let (status, _) = send_with_id(&gw.url("/g/%2e%2e/%2e%2e/admin"), Some("dots-1")).await;
    assert_eq!(status, 400);
    assert!(
        logs.with("proxy path refused").is_empty(),
        "{:?}",
        logs.lines()
    );
    gw.shutdown().await;
}
