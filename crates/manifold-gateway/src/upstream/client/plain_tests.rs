//! The plaintext pool against raw upstream sockets on loopback: which connections it opens,
//! reuses and closes, and what it writes.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the test upstream saw: a request head (lowercased), or a connection's end.
#[derive(Debug, PartialEq)]
enum Seen {
    Head(String),
    Closed,
}

/// An upstream on 127.0.0.1 that answers each request head with `answer` (then closes the
/// connection when `close_after` is set; never answers when `answer` is empty), counting the
/// connections it accepts.
async fn upstream(
    answer: &'static str,
    close_after: bool,
) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let _ = tx.send(Seen::Head(String::from_utf8_lossy(&head).to_lowercase()));
                        if !answer.is_empty() && conn.write_all(answer.as_bytes()).await.is_err() {
                            let _ = tx.send(Seen::Closed);
                            return;
                        }
                        if close_after {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Seen::Closed);
                            return;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, accepted, rx)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn pool(addr: SocketAddr) -> Plain {
    let mut http = HttpConnector::new_with_resolver(Dial::Fixed(addr));
    http.set_nodelay(true);
    http.enforce_http(true);
    Plain::new(http, host_value(&addr.to_string()))
}

fn get(addr: SocketAddr, path: &str) -> Request<Body> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

async fn body(res: Response<Incoming>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

/// Wait (bounded) until the pool holds `n` idle connections: a connection goes back once
/// hyper's task has finished with the answer, which may be just after the caller has it.
async fn settle(pool: &Plain, n: usize) {
    for _ in 0..500 {
        if pool.idle() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(pool.idle(), n, "idle connections");
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the upstream saw something in time")
        .expect("the upstream runs")
}

#[tokio::test]
async fn requests_in_turn_share_one_connection_in_origin_form_with_the_host() {
    let (addr, accepted, mut seen) = upstream(OK, false).await;
    let pool = pool(addr);
    for path in ["/a?x=1", "/", "/b"] {
        let res = pool.send(get(addr, path)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(body(res).await, "ok");
        let Seen::Head(head) = next(&mut seen).await else {
            panic!("a head")
        };
        assert!(
            head.starts_with(&format!("get {path} http/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
        settle(&pool, 1).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_host_the_caller_set_is_kept() {
    let (addr, _, mut seen) = upstream(OK, false).await;
    let pool = pool(addr);
    let mut req = get(addr, "/");
    req.headers_mut()
        .insert(HOST, HeaderValue::from_static("shop.example"));
    body(pool.send(req).await.unwrap()).await;
    let Seen::Head(head) = next(&mut seen).await else {
        panic!("a head")
    };
    assert!(head.contains("\r\nhost: shop.example\r\n"), "{head}");
    assert!(!head.contains(&addr.to_string()), "{head}");
}

#[test]
fn the_default_port_is_left_out_of_the_host() {
    assert_eq!(host_value("example.com:80").unwrap(), "example.com");
    assert_eq!(host_value("example.com:8080").unwrap(), "example.com:8080");
    assert_eq!(host_value("[::1]:9000").unwrap(), "[::1]:9000");
    assert_eq!(host_value("example.com").unwrap(), "example.com");
}

#[tokio::test]
async fn an_answer_with_connection_close_is_not_reused() {
    let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    let (addr, accepted, mut seen) = upstream(close, false).await;
    let pool = pool(addr);
    for _ in 0..2 {
        body(pool.send(get(addr, "/")).await.unwrap()).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert!(matches!(next(&mut seen).await, Seen::Head(_)));
    assert_eq!(next(&mut seen).await, Seen::Closed, "the gateway closed it");
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn an_answer_not_read_to_its_end_closes_its_connection() {
    // Five of the ten bytes announced: the rest never comes.
    let short = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
    let (addr, accepted, mut seen) = upstream(short, false).await;
    let pool = pool(addr);
    let res = pool.send(get(addr, "/")).await.unwrap();
    drop(res);
    assert!(matches!(next(&mut seen).await, Seen::Head(_)));
    assert_eq!(next(&mut seen).await, Seen::Closed);
    let _unread = pool.send(get(addr, "/")).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dropped_request_closes_its_connection() {
    // A hedge's loser: its future is dropped while the upstream has not answered.
    let (addr, _, mut seen) = upstream("", false).await;
    let pool = pool(addr);
    let pending = pool.send(get(addr, "/slow"));
    let waited = tokio::time::timeout(Duration::from_millis(200), pending).await;
    assert!(waited.is_err(), "no answer came");
    assert!(matches!(next(&mut seen).await, Seen::Head(_)));
    assert_eq!(next(&mut seen).await, Seen::Closed);
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (addr, accepted, mut seen) = upstream(OK, true).await;
    let pool = pool(addr);
    body(pool.send(get(addr, "/")).await.unwrap()).await;
    assert!(matches!(next(&mut seen).await, Seen::Head(_)));
    // hyper's task sees the end of the connection soon after.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let res = pool.send(get(addr, "/")).await.unwrap();
    assert_eq!(body(res).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = pool(addr).send(get(addr, "/")).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    let chain = crate::upstream::error_chain(&e);
    assert!(
        chain.starts_with("client error (Connect): tcp connect error"),
        "{chain}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_after_the_idle_timeout() {
    let (addr, accepted, mut seen) = upstream(OK, false).await;
    let pool = pool(addr);
    body(pool.send(get(addr, "/")).await.unwrap()).await;
    assert!(matches!(next(&mut seen).await, Seen::Head(_)));
    settle(&pool, 1).await;
    // The sweep closes it without a request coming.
    tokio::time::sleep(IDLE_TIMEOUT * 2 + Duration::from_secs(1)).await;
    assert_eq!(pool.idle(), 0);
    assert_eq!(next(&mut seen).await, Seen::Closed);
    body(pool.send(get(addr, "/")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_is_not_checked_out() {
    let (addr, accepted, _seen) = upstream(OK, false).await;
    let pool = pool(addr);
    body(pool.send(get(addr, "/")).await.unwrap()).await;
    settle(&pool, 1).await;
    // Past the timeout, before the sweep's next round (it started with the first return).
    tokio::time::advance(IDLE_TIMEOUT / 2).await;
    let young = pool.send(get(addr, "/")).await.unwrap();
    body(young).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "still young: reused");
    settle(&pool, 1).await;
    tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
    body(pool.send(get(addr, "/")).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "expired: a new one");
}

/// A connection over an in-memory pipe, ready to send (its far end kept in `ends`).
async fn piped(ends: &mut Vec<tokio::io::DuplexStream>) -> SendRequest<Body> {
    let (near, far) = tokio::io::duplex(64);
    ends.push(far);
    let (mut tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(near))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx.ready().await.unwrap();
    tx
}

#[tokio::test]
async fn idle_connections_are_capped() {
    let pool = pool("127.0.0.1:9".parse().unwrap());
    let mut ends = Vec::new();
    for _ in 0..MAX_IDLE_PER_ENDPOINT + 3 {
        let tx = piped(&mut ends).await;
        pool.shared.put(tx);
    }
    assert_eq!(pool.idle(), MAX_IDLE_PER_ENDPOINT);
    // Checked out most recent first, each once.
    assert!(pool.shared.checkout().is_some());
    assert_eq!(pool.idle(), MAX_IDLE_PER_ENDPOINT - 1);
}
