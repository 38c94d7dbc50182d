//! The stack alone, on paused time, against real upstream sockets on loopback: raw
//! `TcpListener`s that record each request head and answer (or do not) as a test needs.

use super::*;
use crate::error::{CallErrorKind, Fault};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod policies;

/// The stack of upstream `u` with these endpoints and `timeout`, balanced round robin (so that
/// which endpoint a request reaches is known).
fn stack(endpoints: &[String], timeout: &str) -> Upstream {
    stack_with(endpoints, timeout, |_| {})
}

/// The same, with its policies set by `policies` (as the config's `retry`, `hedge` keys would).
fn stack_with(
    endpoints: &[String],
    timeout: &str,
    policies: impl FnOnce(&mut manifold_config::policy::UpstreamPolicies),
) -> Upstream {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let src = format!(
        "[upstreams.u]\nendpoints = [{}]\ntimeout = \"{timeout}\"\n\
         [routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
        list.join(", ")
    );
    let mut config = manifold_config::compile(std::path::Path::new("test.toml"), &src)
        .expect("the test config compiles");
    config.upstreams[0].policies.balance = manifold_config::policy::Balance::RoundRobin;
    policies(&mut config.upstreams[0].policies);
    Upstream::new(&config.upstreams[0]).expect("the stack")
}

/// An upstream on 127.0.0.1:0 that sends each request head it reads (lowercased) on the channel
/// and then writes `answer` (nothing at all when `answer` is `None`: it hangs).
async fn upstream(answer: Option<&'static str>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, tx.clone(), answer));
        }
    });
    (format!("http://{addr}"), rx)
}

async fn serve(mut conn: TcpStream, tx: mpsc::UnboundedSender<String>, answer: Option<&str>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head per turn: the test requests carry no body.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase());
            match answer {
                Some(a) => {
                    if conn.write_all(a.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn get(path: &'static str) -> Request<Bytes> {
    Request::get(path).body(Bytes::new()).expect("request")
}

fn budget(deadline: Option<Instant>) -> Budget {
    Budget {
        deadline,
        timeout: None,
        announce: true,
        idempotent: None,
        connect_only: false,
    }
}

/// On paused time the attempt ends at its bound (to the timer wheel's millisecond).
fn assert_bounded(start: Instant, ms: u64) {
    let took = start.elapsed();
    let bound = Duration::from_millis(ms);
    assert!(
        took >= bound && took <= bound + Duration::from_millis(2),
        "{took:?} for {bound:?}"
    );
}

const ALL: Read = Read::All { max: 1 << 20 };

/// A free loopback port with nothing listening on it.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(start_paused = true)]
async fn the_attempt_bound_is_the_smaller_of_timeout_and_deadline() {
    let now = Instant::now();
    let t = Duration::from_millis(200);
    let b = Bound::new(now, t, None);
    assert_eq!((b.until, b.within, b.by_deadline), (now + t, t, false));
    let b = Bound::new(now, t, Some(now + Duration::from_millis(50)));
    assert_eq!(b.within, Duration::from_millis(50));
    assert!(b.by_deadline);
    let b = Bound::new(now, t, Some(now + Duration::from_secs(5)));
    assert_eq!((b.within, b.by_deadline), (t, false));
    // A deadline already past leaves nothing, and says so.
    let b = Bound::new(now + Duration::from_secs(1), t, Some(now));
    assert_eq!((b.within, b.by_deadline), (Duration::ZERO, true));
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_costs_the_timeout_or_the_deadline_whichever_is_sooner() {
    let (url, mut heads) = upstream(None).await;
    let up = stack(&[url], "200ms");

    let start = Instant::now();
    let e = up.fetch(get("/a"), budget(None), ALL).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Timeout, "{e}");
    assert_bounded(start, 200);
    assert!(
        e.message.contains("upstream `u`") && e.message.contains("200ms"),
        "{e}"
    );
    let head = heads
        .recv()
        .await
        .expect("the request reached the upstream");
    assert!(head.contains("manifold-deadline-ms: 200\r\n"), "{head}");

    let start = Instant::now();
    let deadline = Some(start + Duration::from_millis(50));
    let e = up
        .fetch(get("/b"), budget(deadline), ALL)
        .await
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Deadline, "{e}");
    assert!(!e.kind.is_retryable());
    assert_bounded(start, 50);
    let head = heads
        .recv()
        .await
        .expect("the request reached the upstream");
    assert!(head.starts_with("get /b http/1.1"), "{head}");
    assert!(head.contains("manifold-deadline-ms: 50\r\n"), "{head}");

    // A streamed send is bounded the same way (up to the response head).
    let start = Instant::now();
    let req = Request::get("/c")
        .body(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let quiet = Budget {
        announce: false,
        ..budget(Some(start + Duration::from_millis(80)))
    };
    let e = up.send(req, quiet, None).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Deadline, "{e}");
    assert_bounded(start, 80);
    let head = heads
        .recv()
        .await
        .expect("the request reached the upstream");
    assert!(!head.contains("manifold-deadline-ms"), "{head}");
}

#[tokio::test(start_paused = true)]
async fn endpoints_take_turns_and_base_paths_prefix_the_path() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    let (a, mut a_heads) = upstream(Some(ok)).await;
    let (b, mut b_heads) = upstream(Some(ok)).await;
    let up = stack(&[a, format!("{b}/base")], "1s");
    for _ in 0..2 {
        let answer = up
            .fetch(get("/x?q=1"), budget(None), ALL)
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{}");
        let answer = up
            .fetch(get("/x?q=1"), budget(None), ALL)
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
    }
    for _ in 0..2 {
        let head = a_heads.recv().await.expect("a saw a request");
        assert!(head.starts_with("get /x?q=1 http/1.1"), "{head}");
        let head = b_heads.recv().await.expect("b saw a request");
        assert!(head.starts_with("get /base/x?q=1 http/1.1"), "{head}");
    }
    assert!(a_heads.try_recv().is_err() && b_heads.try_recv().is_err());
}

/// A proxied request refused a connection by one endpoint goes to the next as that endpoint's
/// own request: the attempt took the head instead of a copy and got it back unsent, its URI
/// and `Host` as they were before the first endpoint's were put in.
#[tokio::test(start_paused = true)]
async fn a_proxied_request_refused_a_connection_goes_whole_to_the_next_endpoint() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    let dead = closed_port().await;
    let (live, mut heads) = upstream(Some(ok)).await;
    let up = stack(&[format!("http://{dead}/one"), format!("{live}/two")], "1s");
    // Round robin: one of the two requests tries the dead endpoint first.
    for _ in 0..2 {
        let req = Request::get("/x?q=1")
            .body(crate::handler::empty())
            .expect("request");
        let answer = up.send(req, budget(None), None).await.expect("an answer");
        assert_eq!(answer.status(), StatusCode::OK);
        let head = heads.recv().await.expect("the live endpoint saw it");
        assert!(head.starts_with("get /two/x?q=1 http/1.1"), "{head}");
        let host = live.trim_start_matches("http://");
        assert!(head.contains(&format!("\r\nhost: {host}\r\n")), "{head}");
        assert_eq!(head.matches("host:").count(), 1, "{head}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_a_retryable_connect_error_of_the_upstream() {
    let addr = closed_port().await;
    let up = stack(&[format!("http://{addr}")], "1s");
    let e = up.fetch(get("/"), budget(None), ALL).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Connect, "{e}");
    assert!(e.kind.is_retryable());
    assert_eq!(e.kind.fault(), Fault::Upstream);
    assert!(e.message.starts_with("upstream `u`: "), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_5xx_is_an_answer_that_classifies_as_a_retryable_status() {
    let busy =
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 4\r\n\r\nbusy";
    let (url, _heads) = upstream(Some(busy)).await;
    let up = stack(&[url], "1s");
    let answer = up
        .fetch(get("/"), budget(None), ALL)
        .await
        .expect("an answer");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "2");
    let e = error::status("u", answer.status);
    assert_eq!(e.kind, CallErrorKind::Status(503));
    assert!(e.kind.is_retryable());
    assert_eq!(e.kind.fault(), Fault::Upstream);
    assert_eq!(e.kind.client_status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test(start_paused = true)]
async fn an_answer_over_the_limit_is_too_large_and_a_kept_one_is_omitted() {
    let big = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";
    let (url, _heads) = upstream(Some(big)).await;
    let up = stack(&[url], "1s");
    let e = up
        .fetch(get("/"), budget(None), Read::All { max: 4 })
        .await
        .unwrap_err();
    assert_eq!(e.kind, CallErrorKind::TooLarge, "{e}");
    let answer = up
        .fetch(get("/"), budget(None), Read::Keep { max: 4 })
        .await
        .expect("the status is what counts");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());
    assert!(answer.headers.contains_key(super::RESULT_OMITTED_HEADER));
    let answer = up
        .fetch(get("/"), budget(None), Read::Keep { max: 10 })
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"0123456789");
    assert!(!answer.headers.contains_key(super::RESULT_OMITTED_HEADER));
}

/// A delivery's answer whose body is cut off after a 2xx head failed (`io`, so the queue
/// delivers it again): a head can be sent before the work is done, so it proves nothing. Only
/// an answer over the limit is kept as omitted.
#[tokio::test(start_paused = true)]
async fn a_kept_answer_cut_off_after_its_head_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut chunk = [0u8; 4096];
            let _ = conn.read(&mut chunk).await;
            let cut = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123";
            let _ = conn.write_all(cut.as_bytes()).await;
            // Dropped: the connection closes six bytes short.
        }
    });
    let up = stack(&[url], "1s");
    for max in [4, 64] {
        let e = up
            .fetch(get("/"), budget(None), Read::Keep { max })
            .await
            .expect_err("a cut-off answer is not a delivery");
        assert_eq!(e.kind, CallErrorKind::Io, "max {max}: {e}");
    }
}

/// An upstream cannot make the gateway believe its answer was omitted (or hide that it was).
#[tokio::test(start_paused = true)]
async fn an_upstream_cannot_forge_the_omitted_marker() {
    let forged = "HTTP/1.1 200 OK\r\nmanifold-result-omitted: 1\r\ncontent-length: 2\r\n\r\n{}";
    let (url, _heads) = upstream(Some(forged)).await;
    let up = stack(&[url], "1s");
    let answer = up
        .fetch(get("/"), budget(None), Read::Keep { max: 64 })
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"{}");
    assert!(!answer.headers.contains_key(super::RESULT_OMITTED_HEADER));
}

/// A proxied attempt's CLIENT span records the response head's arrival (its send's end, marked
/// without a shared cell) and the path it sent, shared with the request's.
#[tokio::test(start_paused = true)]
async fn a_proxied_attempt_span_has_its_first_byte_and_path() {
    use manifold_telemetry as tm;
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    let (live, _heads) = upstream(Some(ok)).await;
    let up = stack(&[live], "1s");
    let tracer = tm::Tracer::new(
        &tm::TracingOptions::default(),
        None,
        Arc::new(tm::SpanStats::default()),
    )
    .expect("tracer");
    let trace = tracer.start(
        tm::Incoming::default(),
        tm::RootInfo {
            kind: tm::RootKind::Server,
            method: http::Method::GET,
            route: Arc::from("/x"),
            path: manifold_telemetry::UrlPath::copied("/x"),
        },
    );
    let req = Request::get("/x?q=1")
        .body(crate::handler::empty())
        .expect("request");
    let ctx = crate::telemetry::TraceCtx::new(Some(&trace), http::HeaderValue::from_static("id-1"));
    let call = crate::telemetry::CallTrace::with_path(
        ctx,
        Arc::from("p"),
        false,
        req.uri().path_and_query().cloned(),
    );
    let answer = up
        .send(req, budget(None), Some(call))
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let finished = trace.end(tm::ServerOutcome::default());
    assert_eq!(finished.calls.len(), 1);
    let span = &finished.calls[0];
    assert_eq!(span.info.path.as_str(), "/x");
    assert!(span.first_byte.is_some(), "{span:?}");
}

/// An upstream answering in one-byte chunks: the answer is copied as it arrives, not held
/// frame by frame (each frame a slice pinning hyper's read buffer: ~38 bytes held per byte
/// of an answer that may be `max_response_bytes` long). Past the bound: `too_large`, named.
#[tokio::test]
async fn an_answer_of_one_byte_chunks_is_not_held_frame_by_frame() {
    use crate::read_body::tests::Drip;
    let n = 10_000;
    let (drip, frames) = Drip::new(n);
    let body = attempt::read_all("u", drip, n as u64).await.expect("whole");
    assert_eq!(body.len(), n);
    assert!(frames.peak() <= 2, "{} frames held at once", frames.peak());
    assert_eq!(frames.live(), 0);
    let e = attempt::read_all("u", Drip::new(11).0, 10)
        .await
        .expect_err("over the bound");
    assert_eq!(e.kind, CallErrorKind::TooLarge);
    assert_eq!(e.message, "upstream `u` answered more than 10 bytes");
}
