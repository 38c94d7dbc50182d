//! The measured floor: a server that makes no upstream call but waits the critical path.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use manifold_timer::Timer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The floor's answer to one checkout: the shape and about the size of the aggregators' answer
/// (`{order: {id, status}, payment, shipping: {label}}`), so writing it costs what theirs does.
pub(super) fn floor_answer(seq: u64) -> Value {
    json!({
        "order": {"id": format!("00000000-0000-4000-8000-{seq:012x}"), "status": "confirmed"},
        "payment": "paid",
        "shipping": {"label": format!("L-{seq}")},
    })
}

/// One checkout on the floor: read and parse the body as the simulator does, then wait the
/// critical path the way the simulator's services wait, with no HTTP in between: three
/// sequential waits (order; payment ∥ inventory ∥ shipping, joined, so the longest decides;
/// confirm). Each wait is a `tokio::time::sleep` on this process's runtime, as in
/// `manifold-sim`'s handler, so the timer's rounding up to the next millisecond tick is paid
/// once per wait, as the aggregators pay it once per upstream call.
pub(super) async fn floor_checkout(
    delays: [Duration; 5],
    timer: Timer,
    seq: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let bytes = req.into_body().collect().await?.to_bytes();
    let _parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let [order, payment, inventory, shipping, confirm] = delays;
    timer.sleep(order).await;
    tokio::join!(
        timer.sleep(payment),
        timer.sleep(inventory),
        timer.sleep(shipping),
    );
    timer.sleep(confirm).await;
    let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
    let mut resp = Response::new(Full::new(Bytes::from(floor_answer(n).to_string())));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Serve the measured floor for service times `delays_ms` (order, payment, inventory, shipping,
/// confirm) on `127.0.0.1:0` until `stop`, on the caller's runtime (the simulator's); returns the
/// bound address. Connections are served as the simulator serves them (hyper's auto builder,
/// `TCP_NODELAY`).
pub async fn start_floor(
    delays_ms: [u64; 5],
    timer: Timer,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let delays = delays_ms.map(Duration::from_millis);
    let seq = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let seq = Arc::clone(&seq);
                    let timer = timer.clone();
                    let conn = builder
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| {
                                floor_checkout(delays, timer.clone(), Arc::clone(&seq), req)
                            }),
                        )
                        .into_owned();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                _ = stop.cancelled() => break,
            }
        }
    });
    Ok(addr)
}
