//! The policies through the whole stack, against raw upstreams on loopback: retries across
//! endpoints, what is never sent twice, hedges whose losers are closed, deadlines.

use super::*;
use crate::upstream::error::{Ended, Stop};
use manifold_config::policy::{HedgeAfter, HedgePolicy, RetryOn, RetryPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a raw upstream does once it has read a request (head and, with a content-length, body).
#[derive(Clone, Copy)]
enum Then {
    /// Answer this.
    Answer(&'static str),
    /// Close the connection without answering.
    Close,
    /// Say nothing; report on the channel when the client closes the connection.
    HangUntilEof,
}

/// An upstream that counts requests (on the counter) and reports each head and `eof` events.
async fn raw(then: Then) -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve_raw(conn, then, Arc::clone(&counter), tx.clone()));
        }
    });
    (format!("http://{addr}"), count, rx)
}

async fn serve_raw(
    mut conn: TcpStream,
    then: Then,
    count: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<String>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(format!("{head}{body}"));
                match then {
                    Then::Answer(a) => {
                        if conn.write_all(a.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Then::Close => return,
                    Then::HangUntilEof => {
                        while let Ok(n) = conn.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                        }
                        let _ = tx.send("eof".to_owned());
                        return;
                    }
                }
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

fn every_outcome(p: &mut manifold_config::policy::UpstreamPolicies) {
    p.retry = RetryPolicy {
        on: vec![
            RetryOn::Connect,
            RetryOn::Reset,
            RetryOn::Timeout,
            RetryOn::Status(503),
        ],
        ..RetryPolicy::default()
    };
}

fn post(body: &'static str) -> Request<Bytes> {
    Request::post("/orders")
        .header("content-length", body.len())
        .body(Bytes::from_static(body.as_bytes()))
        .expect("request")
}

#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_among_two_costs_no_failed_request() {
    let dead = closed_port().await;
    let (live, count, _rx) = raw(Then::Answer(OK)).await;
    // The default policy: connect failures are retried, for any method.
    let up = stack(&[format!("http://{dead}"), live], "1s");
    for n in 0..10 {
        let answer = up
            .fetch(get("/x"), budget(None), ALL)
            .await
            .unwrap_or_else(|e| panic!("GET {n}: {e}"));
        assert_eq!(answer.status, StatusCode::OK);
        let answer = up
            .fetch(post("{}"), budget(None), ALL)
            .await
            .unwrap_or_else(|e| panic!("POST {n}: {e}"));
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);

    // The proxy's streamed body too: it was never read, so it goes to the other endpoint whole.
    let (live, count, mut rx) = raw(Then::Answer(OK)).await;
    let up = stack(&[format!("http://{dead}"), live], "1s");
    for _ in 0..4 {
        let req = Request::post("/stream")
            .header("content-length", "5")
            .body(stream_body(&["he", "llo"]))
            .expect("request");
        let response = up.send(req, budget(None), None).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let seen = rx.recv().await.expect("the request arrived");
        assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

/// A POST that failed to connect is sent to the other endpoint as it was: its attempt took the
/// request itself (no copy) and got it back unsent, with what the attempt changed undone — one
/// `Host` (the live endpoint's), the origin-form target, its headers and body.
#[tokio::test(start_paused = true)]
async fn a_post_retried_after_a_failed_connect_arrives_whole_and_once() {
    let dead = closed_port().await;
    let (live, count, mut rx) = raw(Then::Answer(OK)).await;
    let host = live.trim_start_matches("http://").to_owned();
    let up = stack(&[format!("http://{dead}"), live], "1s");
    for n in 0..10 {
        let mut req = post("{\"n\":1}");
        req.headers_mut()
            .insert("x-order", http::HeaderValue::from_static("42"));
        let answer = up
            .fetch(req, budget(None), ALL)
            .await
            .unwrap_or_else(|e| panic!("POST {n}: {e}"));
        assert_eq!(answer.status, StatusCode::OK);
        let seen = rx.recv().await.expect("the request arrived");
        assert!(seen.starts_with("post /orders http/1.1\r\n"), "{seen}");
        let hosts: Vec<&str> = seen.lines().filter(|l| l.starts_with("host:")).collect();
        assert_eq!(hosts, [format!("host: {host}")], "{seen}");
        assert_eq!(seen.matches("x-order: 42\r\n").count(), 1, "{seen}");
        assert_eq!(seen.matches("content-length: 7\r\n").count(), 1, "{seen}");
        assert!(seen.ends_with("\r\n\r\n{\"n\":1}"), "{seen}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 10, "each POST was sent once");
}

/// A streamed body of these chunks, which is not at its end before it is read.
fn stream_body(chunks: &[&'static str]) -> Body {
    let frames: Vec<Result<http_body::Frame<Bytes>, crate::error::BoxError>> = chunks
        .iter()
        .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed()
}

#[tokio::test(start_paused = true)]
async fn a_post_is_never_retried_once_sent() {
    // Both endpoints read the request and close the connection: a reset after bytes were sent.
    let (a, a_count, _ra) = raw(Then::Close).await;
    let (b, b_count, _rb) = raw(Then::Close).await;
    let up = stack_with(&[a, b], "1s", every_outcome);
    let e = up
        .fetch(post("{\"pay\":1}"), budget(None), ALL)
        .await
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Io, "{e}");
    let total = a_count.load(Ordering::SeqCst) + b_count.load(Ordering::SeqCst);
    assert_eq!(total, 1, "the upstreams saw the POST once");
    let trail = e.trail.as_deref().expect("trail");
    assert_eq!(
        (trail.attempts, trail.stopped),
        (1, Some(Stop::NotIdempotent))
    );

    // A streamed body that was sent is not sent again, whatever the method.
    let req = Request::put("/stream")
        .header("content-length", "5")
        .body(stream_body(&["he", "llo"]))
        .expect("request");
    let e = up.send(req, budget(None), None).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Io, "{e}");
    let total = a_count.load(Ordering::SeqCst) + b_count.load(Ordering::SeqCst);
    assert_eq!(total, 2, "the streamed PUT was seen once");

    // The same reset on a GET is retried (on `reset`), up to the attempts.
    let e = up.fetch(get("/x"), budget(None), ALL).await.unwrap_err();
    let trail = e.trail.as_deref().expect("trail");
    assert_eq!((trail.attempts, trail.stopped), (3, Some(Stop::Attempts)));
    let total = a_count.load(Ordering::SeqCst) + b_count.load(Ordering::SeqCst);
    assert_eq!(total, 5);
}

#[tokio::test(start_paused = true)]
async fn a_hedged_loser_is_cancelled_and_its_connection_closed() {
    let (slow, _, mut slow_rx) = raw(Then::HangUntilEof).await;
    let (fast, fast_count, _rf) = raw(Then::Answer(OK)).await;
    let up = stack_with(&[slow, fast], "5s", |p| {
        p.hedge = Some(HedgePolicy {
            after: HedgeAfter::Fixed(Duration::from_millis(20)),
            max: 1,
            budget: 1.0,
        });
    });
    let start = Instant::now();
    let answer = up
        .fetch(get("/x"), budget(None), ALL)
        .await
        .expect("the hedge's answer");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(fast_count.load(Ordering::SeqCst), 1);
    let head = slow_rx
        .recv()
        .await
        .expect("the slow endpoint got the request");
    assert!(head.starts_with("get /x"), "{head}");
    let eof = tokio::time::timeout(Duration::from_secs(1), slow_rx.recv()).await;
    assert_eq!(
        eof.ok().flatten().as_deref(),
        Some("eof"),
        "the loser's connection was closed"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_every_attempt() {
    let (a, _, mut a_rx) = raw(Then::HangUntilEof).await;
    let (b, _, mut b_rx) = raw(Then::HangUntilEof).await;
    let up = stack_with(&[a, b], "200ms", every_outcome);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(300);
    let e = up
        .fetch(get("/x"), budget(Some(deadline)), ALL)
        .await
        .unwrap_err();
    assert!(Instant::now() <= deadline + Duration::from_millis(2));
    assert_eq!(e.kind, CallErrorKind::Deadline, "{e}");
    let trail = e.trail.as_deref().expect("trail");
    assert_eq!(trail.attempts, 2);
    assert_eq!(
        trail.records[0].ended,
        Ended::Failed(CallErrorKind::Timeout)
    );
    assert_eq!(
        trail.records[1].ended,
        Ended::Failed(CallErrorKind::Deadline)
    );
    let first = a_rx.recv().await.expect("first attempt");
    assert!(first.contains("manifold-deadline-ms: 200\r\n"), "{first}");
    // The second was told what was left: under 100 ms (after the backoff).
    let second = b_rx.recv().await.expect("second attempt");
    let ms: u64 = second
        .lines()
        .find_map(|l| l.strip_prefix("manifold-deadline-ms: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("announced");
    assert!(ms <= 100, "{ms}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_tells_its_upstream_endpoints_and_attempts() {
    let busy = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy";
    let (a, _, _ra) = raw(Then::Answer(busy)).await;
    let dead = closed_port().await;
    let up = stack_with(&[format!("http://{dead}"), a.clone()], "1s", every_outcome);
    let e = up.fetch(get("/x"), budget(None), ALL).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Connect);
    let trail = e.trail.as_deref().expect("trail");
    assert_eq!(trail.upstream, "u");
    assert_eq!(trail.attempts, 3);
    assert_eq!(trail.stopped, Some(Stop::Attempts));
    let ended: Vec<_> = trail.records.iter().map(|r| r.ended.label()).collect();
    assert_eq!(ended, ["connect", "503", "connect"]);
    assert_eq!(trail.endpoint(), Some(dead.to_string().as_str()));
    assert_eq!(
        trail.records[1].endpoint.as_deref(),
        a.strip_prefix("http://")
    );
    let shown = e.to_string();
    assert!(shown.contains("upstream `u`, 3 attempts: "), "{shown}");
}
