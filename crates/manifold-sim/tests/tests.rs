//! The sim over real loopback sockets. Most tests run on paused time: the only timers are the
//! sim's own latency sleeps, so each request's virtual duration is exactly its sampled latency.

mod faults;
mod replicas;
mod shop;
mod timing;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::time::Instant;

/// One request on a fresh connection (no pool: a pool's idle timers would move paused time).
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Value), hyper::Error> {
    let (status, bytes) = send_raw(addr, method, path, body).await?;
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("the sim answers JSON")
    };
    Ok((status, v))
}

/// Like [`send`], returning the raw body.
pub(crate) async fn send_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Bytes), hyper::Error> {
    send_with(addr, method, path, body, &[]).await
}

/// Like [`send_raw`], with extra request headers.
pub(crate) async fn send_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Bytes), hyper::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = tx.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// Virtual time one request takes.
pub(crate) async fn timed(addr: SocketAddr, method: &str, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let (status, _) = send(addr, method, path, "").await.expect("request");
    (status, t.elapsed())
}
