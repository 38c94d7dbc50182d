//! One HTTP/2 stream whose client stops reading, while the connection goes on, gives its
//! upstream connection back after `send_timeout` (the connection's own send timeout never
//! rings: its socket keeps taking the other streams' bytes).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Upper bound on every wait here: the configured timeout is far shorter.
const BOUND: Duration = Duration::from_secs(10);
const BIG: u64 = 256 << 20;

/// An upstream that answers every request with a `BIG`-byte body, written until the gateway
/// closes the connection; it reports how many body bytes went out then.
async fn endless_upstream() -> (String, mpsc::UnboundedReceiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = conn.read(&mut head).await;
                let start = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                if conn.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                let mut sent = 0u64;
                while sent < BIG {
                    if conn.write_all(&chunk).await.is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
                let _ = tx.send(sent);
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_stalled_http2_stream_gives_its_upstream_back_after_send_timeout() {
    let (endless, mut closed) = endless_upstream().await;
    let ok = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start_with_server(
        "send_timeout = \"300ms\"",
        &format!(
            r#"
[upstreams.big]
endpoints = ["{endless}"]
timeout = "30s"
[upstreams.ok]
endpoints = ["{ok}"]
[routes.big]
path = "/big"
proxy = "big"
[routes.ok]
path = "/ok"
proxy = "ok"
"#,
            ok = ok.url()
        ),
    )
    .await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(gw.url(path))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    // The stream is opened and its answer's head read, and then nothing more of it.
    let stalled = send.send_request(get("/big")).await.expect("an answer");
    assert_eq!(stalled.status(), 200);
    // Meanwhile the connection goes on: other streams are answered, so it is never idle and its
    // socket never stops taking bytes.
    let ask = |mut send: hyper::client::conn::http2::SendRequest<Full<Bytes>>| async move {
        let resp = send.send_request(get("/ok")).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(json(&body), json!({"ok": true}));
    };
    let upstream_freed = async {
        loop {
            ask(send.clone()).await;
            match tokio::time::timeout(Duration::from_millis(100), closed.recv()).await {
                Ok(sent) => return sent,
                Err(_) => continue,
            }
        }
    };
    let sent = tokio::time::timeout(BOUND, upstream_freed)
        .await
        .expect("the stalled stream kept its upstream connection")
        .expect("the upstream reported");
    assert!(sent < BIG, "the upstream sent its whole answer");
    // The connection still serves.
    ask(send.clone()).await;
    drop(stalled);
}
