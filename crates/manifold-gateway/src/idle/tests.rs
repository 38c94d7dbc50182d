//! Plaintext connections on real loopback sockets: parking, waking, the lot's deadlines, the
//! drain, clients that go away while parked.

use super::*;
use crate::server::Limits;
use http_body_util::{BodyExt, Full};
use std::future::Ready;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Upper bound on every wait here.
const BOUND: Duration = Duration::from_secs(10);

type Handler =
    fn(Request<Incoming>, SocketAddr, ClientId) -> Ready<Result<Response<Body>, Infallible>>;

fn ok(
    _req: Request<Incoming>,
    _peer: SocketAddr,
    _id: ClientId,
) -> Ready<Result<Response<Body>, Infallible>> {
    let body = Full::new(Bytes::from_static(b"ok"))
        .map_err(|never| match never {})
        .boxed();
    std::future::ready(Ok(Response::new(body)))
}

fn limits(header_read_timeout: Duration) -> Limits {
    Limits {
        header_read_timeout,
        h2_idle_timeout: BOUND,
        send_timeout: Duration::from_secs(60),
        max_connections: 1,
        drain: BOUND,
        passthrough: true,
    }
}

/// A listener's shared state for these tests, its lot started: `header_read_timeout` [`BOUND`].
fn plain() -> Arc<Plain<Handler>> {
    plain_with(BOUND)
}

fn plain_with(header_read_timeout: Duration) -> Arc<Plain<Handler>> {
    let mut h1 = http1::Builder::new();
    h1.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let kill = CancellationToken::new();
    let ends = Ends {
        limits: limits(header_read_timeout),
        drain: CancellationToken::new(),
        kill: kill.clone(),
    };
    let h2 = http2::Builder::new(Exec::new(kill));
    Plain::start(h1, h2, ok as Handler, ends, Some(CancellationToken::new()))
}

/// One connection served by [`connection`] (no listener around it): the client's socket, the
/// connection's activity once accepted, what it shares with its listener, and the semaphore its
/// slot came from (one permit).
struct One {
    client: TcpStream,
    activity: Arc<Activity>,
    plain: Arc<Plain<Handler>>,
    slots: Arc<Semaphore>,
}

async fn one_connection() -> One {
    one_with(plain()).await
}

async fn one_with(shared: Arc<Plain<Handler>>) -> One {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let in_task = Arc::clone(&shared);
    let slots = Arc::new(Semaphore::new(1));
    let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let activity = Arc::new(Activity::new());
        let _ = tx.send(Arc::clone(&activity));
        connection(stream, peer, activity, in_task, slot.into()).await;
    });
    let client = TcpStream::connect(addr).await.unwrap();
    One {
        client,
        activity: rx.await.unwrap(),
        plain: shared,
        slots,
    }
}

/// Read `n` whole answers (each ends with the body `ok`).
async fn answers(c: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while String::from_utf8_lossy(&got).matches("\r\n\r\nok").count() < n {
        let k = tokio::time::timeout(BOUND, c.read(&mut buf))
            .await
            .expect("an answer within the bound")
            .unwrap();
        assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn parked_now(plain: &Plain<Handler>) -> usize {
    plain.lot.as_ref().map_or(0, lot::Lot::len)
}

/// Wait until `n` connections are parked in `plain`'s lot.
async fn until_parked(plain: &Plain<Handler>, n: usize) {
    for _ in 0..1000 {
        if parked_now(plain) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} parked, not {n}", parked_now(plain));
}

/// Wait until the connection's slot is back (its socket closed).
async fn until_free(slots: &Semaphore) {
    for _ in 0..1000 {
        if slots.available_permits() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection's slot never came back");
}

/// The client's read sees the connection closed within the bound.
async fn closed(c: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(BOUND, c.read(&mut buf))
        .await
        .expect("closed within the bound");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn an_idle_keep_alive_connection_drops_hyper_and_serves_again() {
    let One {
        client: mut c,
        activity,
        plain,
        slots,
    } = one_connection().await;
    assert_eq!(parked_now(&plain), 0);
    c.write_all(GET).await.unwrap();
    assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
    until_parked(&plain, 1).await;
    assert_eq!(activity.requests(), 1);
    // Parked, and still a keep-alive connection: the next request is answered by a new task.
    c.write_all(GET).await.unwrap();
    assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
    // It parks again, its slot still held.
    until_parked(&plain, 1).await;
    assert_eq!(slots.available_permits(), 0);
    c.write_all(GET).await.unwrap();
    assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn pipelined_requests_and_request_bodies_are_all_answered() {
    let One {
        client: mut c,
        plain,
        ..
    } = one_connection().await;
    // Three requests in one write: hyper reads ahead, the read-ahead survives a rebuild.
    c.write_all(&[GET, GET, GET].concat()).await.unwrap();
    let got = answers(&mut c, 3).await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 3, "{got}");
    until_parked(&plain, 1).await;
    // A body the handler never reads: that hyper connection runs on (it must drain or
    // close), and the next request on the socket is still answered.
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
    c.write_all(GET).await.unwrap();
    assert!(answers(&mut c, 1).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_parked_connection_closes_at_once_when_the_drain_begins() {
    let One {
        client: mut c,
        plain,
        slots,
        ..
    } = one_connection().await;
    c.write_all(GET).await.unwrap();
    answers(&mut c, 1).await;
    until_parked(&plain, 1).await;
    plain.ends.drain.cancel();
    closed(&mut c).await;
    until_free(&slots).await;
    assert_eq!(parked_now(&plain), 0);
}

#[tokio::test]
async fn a_parked_connection_closes_at_header_read_timeout_after_its_answer() {
    let timeout = Duration::from_millis(400);
    let One {
        client: mut c,
        plain,
        slots,
        ..
    } = one_with(plain_with(timeout)).await;
    c.write_all(GET).await.unwrap();
    answers(&mut c, 1).await;
    let answered = Instant::now();
    until_parked(&plain, 1).await;
    closed(&mut c).await;
    let after = answered.elapsed();
    // Not before its deadline (the idle time before the park counts), nor long after it.
    assert!(after >= timeout - Duration::from_millis(50), "{after:?}");
    assert!(after < timeout * 5, "{after:?}");
    until_free(&slots).await;
    assert_eq!(parked_now(&plain), 0);
}

#[tokio::test]
async fn one_byte_after_waking_is_still_bounded_by_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let One {
        client: mut c,
        plain,
        slots,
        ..
    } = one_with(plain_with(timeout)).await;
    c.write_all(GET).await.unwrap();
    answers(&mut c, 1).await;
    until_parked(&plain, 1).await;
    // Wakes the connection, then stalls: hyper's header_read_timeout (and the woken
    // connection's clock) close it.
    c.write_all(b"G").await.unwrap();
    let woke = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(BOUND, c.read(&mut buf))
        .await
        .expect("closed within the bound");
    // hyper may answer 408 before closing; either way the socket ends.
    if let Ok(k) = n {
        if k > 0 {
            closed(&mut c).await;
        }
    }
    assert!(woke.elapsed() < timeout * 5, "{:?}", woke.elapsed());
    until_free(&slots).await;
    assert_eq!(parked_now(&plain), 0);
}

#[tokio::test]
async fn a_client_that_half_closes_or_resets_while_parked_is_cleaned_up() {
    for reset in [false, true] {
        let One {
            client: mut c,
            plain,
            slots,
            ..
        } = one_connection().await;
        c.write_all(GET).await.unwrap();
        answers(&mut c, 1).await;
        until_parked(&plain, 1).await;
        if reset {
            // SO_LINGER 0: the close sends a RST (and does not block: nothing is unsent).
            #[allow(deprecated)]
            c.set_linger(Some(Duration::ZERO)).unwrap();
            drop(c);
        } else {
            c.shutdown().await.unwrap();
            closed(&mut c).await;
        }
        until_free(&slots).await;
        assert_eq!(parked_now(&plain), 0, "reset {reset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_parked_connections_all_wake_and_are_served() {
    const N: usize = 1000;
    let plain = plain();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slots = Arc::new(Semaphore::new(N));
    let accepting = {
        let plain = Arc::clone(&plain);
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            loop {
                let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
                let (stream, peer) = listener.accept().await.unwrap();
                let activity = Arc::new(Activity::new());
                tokio::spawn(connection(
                    stream,
                    peer,
                    activity,
                    Arc::clone(&plain),
                    slot.into(),
                ));
            }
        })
    };
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(GET).await.unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        answers(c, 1).await;
    }
    until_parked(&plain, N).await;
    for c in &mut clients {
        c.write_all(GET).await.unwrap();
    }
    for c in &mut clients {
        assert!(answers(c, 1).await.starts_with("HTTP/1.1 200"));
    }
    until_parked(&plain, N).await;
    assert_eq!(slots.available_permits(), 0);
    plain.ends.drain.cancel();
    for c in &mut clients {
        closed(c).await;
    }
    accepting.abort();
}

#[tokio::test]
async fn serve_returns_at_once_when_its_connections_are_parked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits {
        max_connections: 8,
        ..limits(BOUND)
    };
    let served = tokio::spawn(crate::server::serve(
        listener,
        None,
        ok as Handler,
        limits,
        stop.clone(),
        None,
    ));
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(GET).await.unwrap();
    answers(&mut c, 1).await;
    // Well past the park wait.
    tokio::time::sleep(PARK_AFTER * 4).await;
    let stopped = Instant::now();
    stop.cancel();
    tokio::time::timeout(BOUND, served)
        .await
        .expect("serve returned within the bound")
        .unwrap();
    // Far sooner than the drain timeout: the parked connection had nothing in flight.
    assert!(stopped.elapsed() < BOUND / 2, "{:?}", stopped.elapsed());
    closed(&mut c).await;
}

#[tokio::test]
async fn a_parked_connection_s_task_has_no_room_for_hyper_s_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let shared = plain();
    let activity = Arc::new(Activity::new());
    let slot = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    // What every connection's task holds (a tokio task stores its future inline).
    let task = std::mem::size_of_val(&connection(
        stream,
        peer,
        Arc::clone(&activity),
        Arc::clone(&shared),
        slot.into(),
    ));
    // What an active HTTP/1 connection holds, boxed while it is active.
    let other = TcpStream::connect(addr).await.unwrap();
    let io = Prefixed::new(Bytes::new(), other, Arc::clone(&activity));
    let svc = service_h1(&shared, &activity, peer);
    let hyper_conn = std::mem::size_of_val(&shared.h1.serve_connection(TokioIo::new(io), svc));
    let active = std::mem::size_of_val(&serve_h1(
        TcpStream::connect(addr).await.unwrap(),
        Bytes::new(),
        peer,
        &activity,
        &shared,
    ));
    println!("bytes: connection task future {task}, hyper HTTP/1 connection {hyper_conn}, active HTTP/1 part {active}");
    assert!(task < hyper_conn, "{task} >= {hyper_conn}");
    assert!(task < active, "{task} >= {active}");
}
