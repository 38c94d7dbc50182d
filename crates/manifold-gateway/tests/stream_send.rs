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

/// An HTTP/2 connection whose streams start with a window of 0: hyper never polls an answer's
/// body until the client opens it. The connection's task opens the streams' window when
/// `open` fires.
async fn zero_window_client(
    gw: &TestGateway,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::sync::oneshot::Sender<()>,
) {
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (client, mut conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut conn => return,
            _ = opened => {}
        }
        conn.set_initial_window_size(1 << 20).expect("settings");
        let _ = conn.await;
    });
    (client, open)
}

/// A proxied answer a client never lets start (window 0) gives its upstream connection back
/// after `send_timeout`, as one it stopped reading does. This holds because hyper polls the
/// body for a frame before it waits for the window (`stream_send`'s docs): the test pins that.
#[tokio::test]
async fn a_proxied_answer_never_let_start_gives_its_upstream_back() {
    let (endless, mut closed) = endless_upstream().await;
    let gw = TestGateway::start_with_server(
        "send_timeout = \"300ms\"",
        &format!(
            r#"
[upstreams.big]
endpoints = ["{endless}"]
timeout = "30s"
[routes.big]
path = "/big"
proxy = "big"
"#
        ),
    )
    .await;
    let (mut client, _open) = zero_window_client(&gw).await;
    let get = http::Request::get(gw.url("/big"))
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(get, true).expect("a stream");
    let resp = tokio::time::timeout(BOUND, resp)
        .await
        .expect("a head")
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let sent = tokio::time::timeout(BOUND, closed.recv())
        .await
        .expect("the unread answer kept its upstream connection")
        .expect("the upstream reported");
    assert!(sent < BIG, "the upstream sent its whole answer");
    drop(resp);
}

/// A large composed answer a client never lets start is dropped after `send_timeout` (it would
/// be held whole until the connection ends, up to 200 a connection): when the client opens
/// its window later, the stream is reset instead of sent. A small one is sent whenever the
/// client is ready.
#[tokio::test]
async fn a_large_composed_answer_never_let_start_is_dropped_after_send_timeout() {
    let big = "x".repeat(200 << 10);
    let up = Upstream::start(vec![
        ("GET", "/big", Reply::json(0, json!({ "s": big }))),
        ("GET", "/small", Reply::json(0, json!({ "s": "tiny" }))),
    ])
    .await;
    let gw = TestGateway::start_with_server(
        "send_timeout = \"300ms\"",
        &format!(
            r#"
[upstreams.up]
endpoints = ["{}"]
[routes.big]
path = "/big"
  [[routes.big.calls]]
  name = "c"
  upstream = "up"
  path = "/big"
  [routes.big.response]
  body = {{ c = "{{c}}" }}
[routes.small]
path = "/small"
  [[routes.small.calls]]
  name = "c"
  upstream = "up"
  path = "/small"
  [routes.small.response]
  body = {{ c = "{{c}}" }}
"#,
            up.url()
        ),
    )
    .await;
    let (mut client, open) = zero_window_client(&gw).await;
    let mut ask = |path: &str| {
        let get = http::Request::get(gw.url(path)).body(()).expect("request");
        client.send_request(get, true).expect("a stream").0
    };
    let (big_resp, small_resp) = (ask("/big"), ask("/small"));
    let big_resp = tokio::time::timeout(BOUND, big_resp)
        .await
        .expect("a head")
        .expect("an answer");
    let small_resp = tokio::time::timeout(BOUND, small_resp)
        .await
        .expect("a head")
        .expect("an answer");
    assert_eq!(
        (big_resp.status().as_u16(), small_resp.status().as_u16()),
        (200, 200)
    );
    // Past send_timeout, the client opens its window.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    open.send(()).expect("the connection task");
    let read = |resp: http::Response<h2::RecvStream>| async move {
        let mut body = resp.into_body();
        let mut n = 0usize;
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            n += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok::<usize, h2::Error>(n)
    };
    // Both at once: the client gives the connection's window back only as it reads.
    let (small, big) = tokio::time::timeout(BOUND, async {
        tokio::join!(read(small_resp), read(big_resp))
    })
    .await
    .expect("both bodies end");
    assert!(small.is_ok_and(|n| n > 0), "the small answer was not sent");
    assert!(
        big.is_err(),
        "the large answer was held until the client read it: {big:?}"
    );
}
