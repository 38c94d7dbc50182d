//! Requests waiting on one shared fetch of a cached proxy route: an answer the upstream meant
//! for one client (`Cache-Control: private`, `Set-Cookie`, a `Vary` on a header the key does
//! not hold) is neither stored nor handed to the others, which send their own requests. A
//! proxy route's key holds the path, the forwarded host and its `vary` headers, not every
//! header it forwards (here an `X-Api-Key`, which is no credential header the route's cache
//! skips), so the waiters' requests can differ from the first in what made the answer private.
//! And an answer the route does not store goes out with every header the upstream sent.

use crate::support::{client, json, TestGateway};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// An upstream that counts the requests it receives, holds each until the test gives it a
/// permit, and answers with the caller's `X-Api-Key`, marked for that caller alone by
/// `header: value`.
async fn gated_private_upstream(
    header: &'static str,
    value: &'static str,
) -> (String, Arc<AtomicU64>, Arc<Semaphore>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let (counter, permits) = (Arc::clone(&received), Arc::clone(&gate));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (counter, permits) = (Arc::clone(&counter), Arc::clone(&permits));
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (counter, permits) = (Arc::clone(&counter), Arc::clone(&permits));
                    async move {
                        counter.fetch_add(1, SeqCst);
                        permits.acquire().await.unwrap().forget();
                        let key = req
                            .headers()
                            .get("x-api-key")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = serde_json::json!({ "key": &key }).to_string();
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        let h = resp.headers_mut();
                        h.insert("content-type", "application/json".parse().unwrap());
                        let value = value.replace("{key}", key.as_deref().unwrap_or(""));
                        h.insert(header, value.parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), received, gate)
}

/// GET `url` with `X-Api-Key: key`; (the JSON body, its `Set-Cookie` if any).
async fn get_with_key(url: String, key: &'static str) -> (serde_json::Value, Option<String>) {
    let req = Request::get(url)
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        json(&resp.into_body().collect().await.unwrap().to_bytes()),
        cookie,
    )
}

#[tokio::test]
async fn a_private_answer_is_not_handed_to_requests_that_waited_for_it() {
    let (alice, bob) = alice_then_bob("cache-control", "private, max-age=60").await;
    assert_eq!(
        (alice.0["key"].as_str(), bob.0["key"].as_str()),
        (Some("alice"), Some("bob"))
    );
}

#[tokio::test]
async fn a_cookie_and_its_answer_go_to_the_request_that_fetched_them() {
    let (alice, bob) = alice_then_bob("set-cookie", "sid={key}").await;
    assert_eq!(
        (alice.0["key"].as_str(), alice.1.as_deref()),
        (Some("alice"), Some("sid=alice"))
    );
    assert_eq!(
        (bob.0["key"].as_str(), bob.1.as_deref()),
        (Some("bob"), Some("sid=bob"))
    );
}

#[tokio::test]
async fn an_answer_varying_on_a_header_the_key_lacks_is_not_handed_to_waiters() {
    let (alice, bob) = alice_then_bob("vary", "X-Api-Key").await;
    assert_eq!(
        (alice.0["key"].as_str(), bob.0["key"].as_str()),
        (Some("alice"), Some("bob"))
    );
}

type Answer = (serde_json::Value, Option<String>);

/// Alice's request reaches the upstream, which holds it; bob's arrives meanwhile (waiting on
/// alice's fetch); then the upstream answers both. Each answer is marked `header: value`.
async fn alice_then_bob(header: &'static str, value: &'static str) -> (Answer, Answer) {
    let (up, received, gate) = gated_private_upstream(header, value).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.me]
path = "/me"
proxy = "u"
cache = {{ ttl = "60s" }}
"#
    ))
    .await;
    let alice = tokio::spawn(get_with_key(gw.url("/me"), "alice"));
    for _ in 0..1_000 {
        if received.load(SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        received.load(SeqCst),
        1,
        "alice's request reached the upstream"
    );
    // Bob's request arrives while alice's fetch is held: it waits on that fetch. (The pause
    // only orders the two; nothing asserted depends on how long anything took.)
    let bob = tokio::spawn(get_with_key(gw.url("/me"), "bob"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(2);
    let answers = (alice.await.unwrap(), bob.await.unwrap());
    assert_eq!(received.load(SeqCst), 2, "{header}: bob's request was sent");
    answers
}

/// An answer the route's cache does not store is answered as the upstream sent it: only
/// stored entries are cut to the headers that describe the body.
#[tokio::test]
async fn an_answer_not_stored_keeps_every_header() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                    *resp.status_mut() = if req.uri().path() == "/gone" {
                        http::StatusCode::NOT_FOUND
                    } else {
                        http::StatusCode::OK
                    };
                    let h = resp.headers_mut();
                    if req.uri().path() == "/report" {
                        h.insert("cache-control", "no-store".parse().unwrap());
                    }
                    h.insert("content-disposition", "attachment".parse().unwrap());
                    h.insert("x-request-cost", "7".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["http://{addr}"]

[routes.files]
path = "/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}
"#
    ))
    .await;
    // `no-store`, and a 404 with no negative caching: neither is stored.
    for path in ["/report", "/gone"] {
        let resp = client()
            .request(
                Request::get(gw.url(path))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                resp.headers()
                    .get("content-disposition")
                    .map(|v| v.to_str().unwrap()),
                resp.headers()
                    .get("x-request-cost")
                    .map(|v| v.to_str().unwrap()),
            ),
            (Some("attachment"), Some("7")),
            "{path}"
        );
    }
}

/// A redirect the route keeps (`errors`: non-2xx answers too) is answered from the cache with
/// the `Location` it points to: a 301 without one is no answer at all.
#[tokio::test]
async fn a_stored_redirect_keeps_its_location() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = http::StatusCode::MOVED_PERMANENTLY;
                    resp.headers_mut()
                        .insert("location", "/new".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["http://{addr}"]

[routes.old]
path = "/old"
proxy = "u"
cache = {{ ttl = "60s", errors = "60s" }}
"#
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = client()
            .request(
                Request::get(gw.url("/old"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        seen.push((
            resp.status().as_u16(),
            header("location"),
            header("manifold-cache"),
        ));
    }
    let (location, miss, hit) = (Some("/new".to_owned()), "old=miss", "old=hit");
    assert_eq!(
        seen,
        [
            (301, location.clone(), Some(miss.to_owned())),
            (301, location, Some(hit.to_owned()))
        ]
    );
}
