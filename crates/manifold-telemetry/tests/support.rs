//! Shared helpers: a loopback HTTP receiver that captures requests, and the CI rule for tools.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request a receiver got.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How a receiver answers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    /// 200 with an empty body.
    Ok,
    /// 200 after this long (a slow collector).
    After(Duration),
    /// This status, at once.
    Status(u16),
}

/// A loopback HTTP/1 server capturing every request; stops when the test's runtime ends.
pub(crate) async fn receiver(answer: Answer) -> (SocketAddr, mpsc::UnboundedReceiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send(Captured {
                            path: parts.uri.path().to_owned(),
                            headers: parts.headers,
                            body,
                        });
                        let status = match answer {
                            Answer::Ok => 200,
                            Answer::After(d) => {
                                tokio::time::sleep(d).await;
                                200
                            }
                            Answer::Status(s) => s,
                        };
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Whether an external tool the test needs is here. Missing: a loud skip on a developer's
/// machine, a failure under `CI=true` (where `.ci/run` installs it).
pub(crate) fn tool_available(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is missing under CI=true: .ci/run must install it");
    }
    eprintln!("\n!!! SKIPPED: {what} is not installed; this check FAILS under CI=true. Install it as .ci/run does.\n");
    false
}

/// The Python the checks use (`MANIFOLD_PYTHON`, else `python3`).
pub(crate) fn python() -> String {
    std::env::var("MANIFOLD_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether `python -c "import MODULE"` works.
pub(crate) fn python_has(module: &str) -> bool {
    std::process::Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
