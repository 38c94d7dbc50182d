//! Balancing, breaking and resolution through the whole stack, against raw sockets on loopback.

use crate::error::CallErrorKind;
use crate::upstream::{Budget, Read, Upstream};
use bytes::Bytes;
use http::{Request, StatusCode};
use manifold_config::policy::{Balance, BreakerPolicy};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
const ALL: Read = Read::All { max: 1 << 20 };

/// The stack of upstream `u` over these endpoints, 100 ms timeout, with these policies.
fn stack(endpoints: &[String], balance: Balance, breaker: Option<BreakerPolicy>) -> Upstream {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let src = format!(
        "[upstreams.u]\nendpoints = [{}]\ntimeout = \"100ms\"\n\
         [routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
        list.join(", ")
    );
    let mut config = manifold_config::compile(std::path::Path::new("test.toml"), &src)
        .expect("the test config compiles");
    let up = &mut config.upstreams[0];
    up.policies.balance = balance;
    up.policies.circuit_breaker = breaker;
    // The endpoint set alone: one attempt per call, so each failure shows (the default retries
    // a failed connect on another endpoint; tests/policies.rs covers that).
    up.policies.retry.attempts = 1;
    Upstream::new(up).expect("the stack")
}

fn breaker(min_requests: u32) -> BreakerPolicy {
    BreakerPolicy {
        failure_rate: 0.5,
        min_requests,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        max_ejected: 0.5,
    }
}

/// A server on 127.0.0.1 that sends each request head (lowercased) on the channel, then
/// answers `OK`, or nothing at all (it hangs) when `answer` is false.
async fn server(answer: bool) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, tx.clone(), answer));
        }
    });
    (port, rx)
}

async fn serve(mut conn: TcpStream, tx: mpsc::UnboundedSender<String>, answer: bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let _ = tx.send(String::from_utf8_lossy(&head).to_lowercase());
            if !answer {
                std::future::pending::<()>().await;
            }
            if conn.write_all(OK.as_bytes()).await.is_err() {
                return;
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn get() -> Request<Bytes> {
    Request::get("/x").body(Bytes::new()).expect("request")
}

fn budget() -> Budget {
    Budget {
        deadline: None,
        timeout: None,
        announce: false,
        idempotent: None,
        connect_only: false,
    }
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_is_ejected_and_later_requests_succeed() {
    let (live, _) = server(true).await;
    let (hung, mut hung_heads) = server(false).await;
    let up = stack(
        &[
            format!("http://127.0.0.1:{hung}"),
            format!("http://127.0.0.1:{live}"),
        ],
        Balance::RoundRobin,
        Some(breaker(4)),
    );
    // Round robin alternates: four timeouts on the hung one (its `min_requests`, all failed)
    // in eight requests trip it.
    let mut failures = 0;
    for _ in 0..8 {
        let start = Instant::now();
        if let Err(e) = up.fetch(get(), budget(), ALL).await {
            assert_eq!(e.kind, CallErrorKind::Timeout, "{e}");
            failures += 1;
        }
        assert!(start.elapsed() <= Duration::from_millis(102));
    }
    assert_eq!(failures, 4);
    let seen = hung_heads.len();
    for _ in 0..20 {
        let start = Instant::now();
        let a = up
            .fetch(get(), budget(), ALL)
            .await
            .expect("the live endpoint answers");
        assert_eq!(a.status, StatusCode::OK);
        assert!(start.elapsed() < Duration::from_millis(100));
    }
    assert_eq!(
        hung_heads.len(),
        seen,
        "the ejected endpoint got no traffic"
    );
    // After open_for its one probe goes out (and hangs), and the rest still succeed.
    tokio::time::advance(Duration::from_secs(5)).await;
    let (probe, rest) = tokio::join!(up.fetch(get(), budget(), ALL), async {
        tokio::task::yield_now().await;
        up.fetch(get(), budget(), ALL).await
    });
    assert_eq!(
        probe.expect_err("the probe hangs").kind,
        CallErrorKind::Timeout
    );
    assert!(rest.is_ok());
    assert!(hung_heads.recv().await.is_some());
}

/// A POST whose body sends one byte of its ten and then nothing more — a client trickling its
/// upload — read as the proxy reads a client's body: metered, its wait in the extensions.
fn stalled_post() -> Request<crate::upstream::Body> {
    use http_body_util::BodyExt;
    let wait = crate::limit::ClientWait::default();
    let first = http_body::Frame::data(Bytes::from_static(b"{"));
    let frames = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::convert::Infallible>(first)]),
        futures::stream::pending(),
    );
    let body = crate::limit::Metered::new(http_body_util::StreamBody::new(frames), wait.meter());
    let mut req = Request::post("/x")
        .header(http::header::CONTENT_LENGTH, "10")
        .body(body.map_err(|never| match never {}).boxed())
        .expect("request");
    req.extensions_mut().insert(wait);
    req
}

#[tokio::test(start_paused = true)]
async fn clients_trickling_their_uploads_do_not_eject_endpoints() {
    let (live, _) = server(true).await;
    let (hung, _) = server(false).await;
    let up = stack(
        &[
            format!("http://127.0.0.1:{hung}"),
            format!("http://127.0.0.1:{live}"),
        ],
        Balance::RoundRobin,
        Some(breaker(4)),
    );
    // Eight uploads that stall after their first byte: the four on `hung` time out while
    // their bodies wait on the client (an endpoint that only waits for the body would too).
    let mut timeouts = 0;
    for _ in 0..8 {
        if let Err(e) = up.send(stalled_post(), budget(), None).await {
            assert_eq!(e.kind, CallErrorKind::Timeout, "{e}");
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 4);
    // The client's stall is no failure of the endpoint: nothing is ejected.
    let states: Vec<_> = up
        .endpoint_gauges()
        .into_iter()
        .map(|(_, state, _)| state)
        .collect();
    assert!(
        states
            .iter()
            .all(|s| *s == manifold_telemetry::metrics::BreakerState::Closed),
        "{states:?}"
    );
    // The same timeouts with the body all sent are the endpoint's: it is ejected.
    for _ in 0..8 {
        let _ = up.fetch(get(), budget(), ALL).await;
    }
    assert!(up
        .endpoint_gauges()
        .iter()
        .any(|(_, s, _)| *s != manifold_telemetry::metrics::BreakerState::Closed),);
}

#[tokio::test(start_paused = true)]
async fn p2c_steers_away_from_a_dead_endpoint_after_one_failure() {
    let (live, _) = server(true).await;
    let dead = closed_port().await;
    let up = stack(
        &[
            format!("http://127.0.0.1:{dead}"),
            format!("http://127.0.0.1:{live}"),
        ],
        Balance::P2c,
        None,
    );
    let mut failed = 0;
    for _ in 0..30 {
        if let Err(e) = up.fetch(get(), budget(), ALL).await {
            assert_eq!(e.kind, CallErrorKind::Connect, "{e}");
            failed += 1;
        }
    }
    // Both start at 30 ms: the first request may draw the dead one, never again after.
    assert!(failed <= 1, "{failed} of 30 failed");
}

#[tokio::test(start_paused = true)]
async fn with_its_only_endpoint_open_a_call_fails_at_once_with_503_naming_the_upstream() {
    let dead = closed_port().await;
    let up = stack(
        &[format!("http://127.0.0.1:{dead}")],
        Balance::P2c,
        Some(breaker(2)),
    );
    for _ in 0..2 {
        let e = up.fetch(get(), budget(), ALL).await.expect_err("refused");
        assert_eq!(e.kind, CallErrorKind::Connect, "{e}");
    }
    let start = Instant::now();
    let e = up.fetch(get(), budget(), ALL).await.expect_err("open");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no waiting on a dead dependency"
    );
    assert_eq!(e.kind, CallErrorKind::BreakerOpen);
    assert_eq!(e.kind.as_str(), "breaker_open");
    assert_eq!(e.kind.client_status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(e.message.contains("upstream `u`"), "{e}");
}

/// Wait (bounded) until the resolver has replaced the configured name by addresses.
async fn resolved(up: &Upstream) -> Vec<String> {
    for _ in 0..500 {
        let shown: Vec<String> = up
            .endpoints()
            .current()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        if shown.iter().all(|s| s.contains('(')) {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("localhost was not resolved within 5 s");
}

#[tokio::test]
async fn a_hostname_is_resolved_to_addresses_and_still_sent_as_host() {
    let (port, mut heads) = server(true).await;
    let up = stack(&[format!("http://localhost:{port}/v1")], Balance::P2c, None);
    let shown = resolved(&up).await;
    assert!(
        shown.contains(&format!("localhost:{port} (127.0.0.1:{port})")),
        "{shown:?}"
    );
    // Every address is an endpoint; one the server does not listen on (::1, where localhost
    // has it) refuses the connection: without a retry that request fails `connect`.
    let mut answered = 0;
    for _ in 0..10 {
        match up.fetch(get(), budget(), ALL).await {
            Ok(a) => {
                assert_eq!(a.status, StatusCode::OK);
                answered += 1;
            }
            Err(e) => assert_eq!(e.kind, CallErrorKind::Connect, "{e}"),
        }
    }
    assert!(answered > 0);
    let head = heads.recv().await.expect("a request arrived");
    assert!(head.starts_with("get /v1/x http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nhost: localhost:{port}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn the_resolver_task_ends_with_its_upstream() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let up = stack(&["http://localhost:1".to_owned()], Balance::P2c, None);
    assert_eq!(metrics.num_alive_tasks(), before + 1, "one resolver task");
    let _ = resolved(&up).await;
    drop(up);
    for _ in 0..500 {
        if metrics.num_alive_tasks() == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the resolver task outlived its upstream");
}
