//! HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets them at once. Each
//! costs it two frames, and costs the gateway a request and, on a proxy route, an upstream
//! request; nothing bounds the rate but the connection. A connection whose client cancels more
//! than half of at least 500 requests before their answers is dropped (Envoy's rule); a client
//! cancelling the odd request keeps its connection.

use crate::support::*;
use bytes::Bytes;
use http::Request;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Upper bound on every wait here.
const BOUND: Duration = Duration::from_secs(10);
/// Streams opened, then reset, a round.
const ROUND: usize = 50;
/// Rounds at most: 600 requests, past the rule's 500.
const ROUNDS: usize = 12;

/// An upstream that counts the requests it receives; `/slow` answers after 5 s (so a request
/// is surely in flight when its client resets it), anything else at once.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"{}")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

async fn gateway(url: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
[upstreams.up]
endpoints = ["{url}"]
timeout = "30s"
[routes.slow]
path = "/slow"
proxy = "up"
[routes.fast]
path = "/fast"
proxy = "up"
"#
    ))
    .await
}

type H2 = h2::client::SendRequest<Bytes>;

async fn h2_connect(gw: &TestGateway) -> (H2, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

fn get(gw: &TestGateway, path: &str) -> Request<()> {
    Request::get(gw.url(path)).body(()).expect("request")
}

/// One `/fast` request on `client`, read to its end: its status.
async fn fast(client: H2, gw: &TestGateway) -> Result<u16, h2::Error> {
    let mut client = client.ready().await?;
    let (resp, _) = client.send_request(get(gw, "/fast"), true)?;
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

/// Wait until the upstream has seen `n` requests, or the connection ended, or [`BOUND`].
async fn upstream_saw(seen: &AtomicUsize, n: usize, conn: &tokio::task::JoinHandle<()>) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while seen.load(Ordering::SeqCst) < n
        && !conn.is_finished()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_resets_most_of_its_streams_is_disconnected() {
    let (url, seen) = counting_upstream().await;
    let gw = gateway(&url).await;
    let (mut client, conn) = h2_connect(&gw).await;
    let mut opened = 0usize;
    let mut closed = false;
    'rounds: for _ in 0..ROUNDS {
        let mut streams = Vec::with_capacity(ROUND);
        for _ in 0..ROUND {
            let sent = match client.clone().ready().await {
                Ok(ready) => {
                    client = ready;
                    client.send_request(get(&gw, "/slow"), true)
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(stream) => streams.push(stream),
                Err(_) => {
                    closed = true;
                    break 'rounds;
                }
            }
            opened += 1;
        }
        // Each request of the round is in flight upstream: then reset them all.
        upstream_saw(&seen, opened, &conn).await;
        for (resp, mut send) in streams {
            send.send_reset(h2::Reason::CANCEL);
            drop(resp);
        }
        if conn.is_finished() {
            closed = true;
            break;
        }
    }
    if !closed {
        // The last round's resets may still be on their way: the connection must end soon.
        closed = tokio::time::timeout(BOUND, async {
            while !conn.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok();
    }
    assert!(
        closed,
        "a client that opened and reset {opened} streams still has its connection"
    );
    let upstream = seen.load(Ordering::SeqCst);
    assert!(
        (500..=500 + ROUND).contains(&upstream),
        "the upstream saw {upstream} requests before the connection was dropped"
    );
    // Other clients are served as before.
    let (other, _conn) = h2_connect(&gw).await;
    assert_eq!(fast(other, &gw).await.expect("a new connection"), 200);
}

#[tokio::test]
async fn a_client_that_cancels_a_minority_of_its_requests_keeps_its_connection() {
    let (url, seen) = counting_upstream().await;
    let gw = gateway(&url).await;
    let (client, conn) = h2_connect(&gw).await;
    // 600 requests, one in three cancelled while in flight upstream: past 500 requests, but
    // far from half cancelled.
    let mut opened = 0usize;
    for _ in 0..200 {
        let mut ready = client
            .clone()
            .ready()
            .await
            .expect("the connection is open");
        let (resp, mut send) = ready
            .send_request(get(&gw, "/slow"), true)
            .expect("a stream");
        opened += 1;
        for _ in 0..2 {
            assert_eq!(fast(client.clone(), &gw).await.expect("an answer"), 200);
            opened += 1;
        }
        upstream_saw(&seen, opened, &conn).await;
        send.send_reset(h2::Reason::CANCEL);
        drop(resp);
    }
    assert_eq!(fast(client.clone(), &gw).await.expect("still open"), 200);
    assert!(!conn.is_finished());
}
