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
