//! The adaptive limit's latency on real sockets: clients trickling their bodies on loopback,
//! a fast upstream behind the gateway.

use crate::Gateway;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An upstream that reads each request's body whole and answers `{"ok":true}` at once.
async fn fast_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut resp =
                        http::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A client that sends `path`'s head at once and its 12-byte body one byte per `every`; the
/// status line it gets back.
async fn trickle(addr: std::net::SocketAddr, path: &str, every: Duration) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let body = b"{\"a\":123456}";
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    for b in body {
        tokio::time::sleep(every).await;
        conn.write_all(&[*b]).await.expect("a byte of the body");
    }
    let mut answer = vec![0u8; 1024];
    let n = conn.read(&mut answer).await.expect("the answer");
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn clients_trickling_their_bodies_are_not_the_latency_the_limit_measures() {
    let up = fast_upstream().await;
    for path in ["/proxy", "/compose"] {
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain_delay = "0s"
[upstreams.u]
endpoints = ["{up}"]
[routes.proxy]
method = "POST"
path = "/proxy"
proxy = "u"
[routes.compose]
method = "POST"
path = "/compose"
  [[routes.compose.calls]]
  name = "x"
  upstream = "u"
  method = "POST"
  path = "/x"
  body = "{{request.body}}"
"#
        );
        let config = manifold_config::compile("socket-test.toml".as_ref(), &toml)
            .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
        let gw = Gateway::bind(config).await.expect("the gateway binds");
        let (addr, live) = (gw.local_addr(), std::sync::Arc::clone(&gw.live));
        let stop = CancellationToken::new();
        let run = tokio::spawn(gw.run(stop.clone()));
        // Twelve clients (a window needs ten answers), each taking ~600 ms to send 12 bytes;
        // the gateway and its upstream answer in a few milliseconds once the body is in.
        let clients: Vec<_> = (0..12)
            .map(|_| tokio::spawn(trickle(addr, path, Duration::from_millis(50))))
            .collect();
        for c in clients {
            let status = c.await.expect("a client");
            assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        }
        let baseline = live
            .current
            .load()
            .limit
            .baseline()
            .expect("a window of ten answers closed");
        assert!(
            baseline < Duration::from_millis(300),
            "{path}: the limit measured {baseline:?}: the clients' upload time, not the gateway's"
        );
        stop.cancel();
        let _ = run.await;
    }
}

/// The gateway's config: `/proxy` and `/big` proxied to `up`, `/compose` composing a call.
fn config(up: &str) -> manifold_config::Config {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain_delay = "0s"
[upstreams.u]
endpoints = ["{up}"]
[routes.big]
path = "/big"
proxy = "u"
"#
    );
    manifold_config::compile("socket-test.toml".as_ref(), &toml)
        .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"))
}

#[tokio::test]
async fn clients_reading_slowly_or_granting_no_window_are_not_the_latency_the_limit_measures() {
    let up = fast_upstream().await;
    let gw = Gateway::bind(config(&up)).await.expect("the gateway binds");
    let (addr, live) = (gw.local_addr(), std::sync::Arc::clone(&gw.live));
    let stop = CancellationToken::new();
    let run = tokio::spawn(gw.run(stop.clone()));
    // A window lasts at least 100 ms from the limiter's start: these answers' heads come at
    // once, so they must come after that for their window to close.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // HTTP/1.1 clients that ask for a 4 MiB answer and read none of it for 700 ms, then
    // read it all; HTTP/2 clients whose stream window is 1 byte for the same 700 ms.
    let h1 = (0..6).map(|_| {
        tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            conn.write_all(b"GET /big HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
                .await
                .expect("head");
            tokio::time::sleep(Duration::from_millis(700)).await;
            let mut all = Vec::new();
            conn.read_to_end(&mut all).await.expect("the answer");
            assert!(
                all.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &all[..all.len().min(40)]
            );
        })
    });
    let h2 = (0..6).map(|_| {
        tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .http2_only(true)
                    .http2_initial_stream_window_size(1)
                    .http2_initial_connection_window_size(1)
                    .build_http::<Full<Bytes>>();
            let req = http::Request::get(format!("http://{addr}/big"))
                .body(Full::new(Bytes::new()))
                .expect("a request");
            let resp = client.request(req).await.expect("the head");
            assert_eq!(resp.status(), 200);
            tokio::time::sleep(Duration::from_millis(700)).await;
            drop(resp);
        })
    });
    let all: Vec<_> = h1.chain(h2).collect();
    for c in all {
        c.await.expect("a client");
    }
    let baseline = live
        .current
        .load()
        .limit
        .baseline()
        .expect("a window of ten answers closed");
    assert!(
        baseline < Duration::from_millis(300),
        "the limit measured {baseline:?}: the clients' reading, not the gateway's work"
    );
    stop.cancel();
    let _ = run.await;
}

#[tokio::test]
async fn requests_no_route_serves_do_not_feed_the_limit() {
    let up = fast_upstream().await;
    let gw = Gateway::bind(config(&up)).await.expect("the gateway binds");
    let (addr, live) = (gw.local_addr(), std::sync::Arc::clone(&gw.live));
    let stop = CancellationToken::new();
    let run = tokio::spawn(gw.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Forty answers in microseconds: 404 for a path no route has, 405 for a method.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    for i in 0..40 {
        let head: &[u8] = if i % 2 == 0 {
            b"GET /no-such-route HTTP/1.1\r\nhost: gw\r\n\r\n"
        } else {
            b"DELETE /big HTTP/1.1\r\nhost: gw\r\n\r\n"
        };
        conn.write_all(head).await.expect("head");
        let mut answer = vec![0u8; 4096];
        let n = conn.read(&mut answer).await.expect("the answer");
        let text = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 404") || text.starts_with("HTTP/1.1 405"),
            "{text}"
        );
    }
    let baseline = live.current.load().limit.baseline();
    assert_eq!(baseline, None, "unrouted answers fed the limit's baseline");
    stop.cancel();
    let _ = run.await;
}

/// An upstream that reads what it is sent and never answers.
async fn hung_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn clients_trickling_uploads_through_the_proxy_eject_no_endpoint() {
    let (a, b) = (hung_upstream().await, hung_upstream().await);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain_delay = "0s"
[upstreams.u]
endpoints = ["{a}", "{b}"]
timeout = "100ms"
circuit_breaker = {{ failure_rate = 0.5, min_requests = 2, window = "10s", open_for = "5s" }}
[routes.proxy]
method = "POST"
path = "/proxy"
proxy = "u"
"#
    );
    let config = manifold_config::compile("socket-test.toml".as_ref(), &toml)
        .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
    let gw = Gateway::bind(config).await.expect("the gateway binds");
    let (addr, live) = (gw.local_addr(), std::sync::Arc::clone(&gw.live));
    let stop = CancellationToken::new();
    let run = tokio::spawn(gw.run(stop.clone()));
    // Eight clients announce 10 bytes, send one, and stall: each attempt times out (100 ms)
    // while the body waits on its client.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await.expect("connect");
                conn.write_all(b"POST /proxy HTTP/1.1\r\nhost: gw\r\ncontent-length: 10\r\n\r\n{")
                    .await
                    .expect("head");
                let mut answer = vec![0u8; 1024];
                let n = conn.read(&mut answer).await.unwrap_or(0);
                String::from_utf8_lossy(&answer[..n]).into_owned()
            })
        })
        .collect();
    for c in clients {
        let answer = c.await.expect("a client");
        assert!(answer.starts_with("HTTP/1.1 5"), "{answer}");
    }
    let shared = live.current.load();
    let states: Vec<_> = shared.clients[0]
        .endpoint_gauges()
        .into_iter()
        .map(|(name, state, _)| (name, state))
        .collect();
    assert!(
        states
            .iter()
            .all(|(_, s)| *s == manifold_telemetry::metrics::BreakerState::Closed),
        "a client's stalled upload ejected an endpoint: {states:?}"
    );
    stop.cancel();
    let _ = run.await;
}
