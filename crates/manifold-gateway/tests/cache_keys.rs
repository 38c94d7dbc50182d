//! Cached answers never cross users (issue 12, fault 2): a call's key covers every request value
//! its request depends on, a proxy route's cache skips requests carrying credentials unless it
//! keys on them (`vary`) or is `shared`, and answers meant for one client (`private`,
//! `no-store`, `Set-Cookie`) are never stored. A proxy route's key holds the host it forwards,
//! and an answer that varies on a header its key does not hold is never stored.

use crate::support::{client, json, TestGateway};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use tokio::net::TcpListener;

/// An upstream answering every request with what identifies its caller (`authorization`,
/// `cookie`, the query) and a counter `n` that grows with every request it serves, so a
/// repeated `n` means the gateway answered from its cache. Paths containing `private`,
/// `nostore` or `cookie` answer with `Cache-Control: private, max-age=60`, `no-store` or a
/// `Set-Cookie`.
async fn identity_upstream() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, SeqCst) + 1;
                    async move { Ok::<_, Infallible>(identity_answer(&req, n)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), served)
}

fn identity_answer(req: &Request<Incoming>, n: u64) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let body = json!({
        "auth": header("authorization"),
        "cookie": header("cookie"),
        "query": req.uri().query(),
        "xfh": header("x-forwarded-host"),
        "lang": header("accept-language"),
        "n": n,
    });
    let path = req.uri().path().to_owned();
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    if path.contains("private") {
        h.insert("cache-control", "private, max-age=60".parse().unwrap());
    }
    if path.contains("nostore") {
        h.insert("cache-control", "no-store".parse().unwrap());
    }
    if path.contains("cookie") {
        h.insert("set-cookie", format!("sid={n}").parse().unwrap());
    }
    if path.contains("by-lang") {
        h.insert("vary", "Accept-Language".parse().unwrap());
    }
    if path.contains("by-star") {
        h.insert("vary", "*".parse().unwrap());
    }
    resp
}

/// GET `url` with these request headers; (the JSON body, the `Manifold-Cache` header).
async fn get(url: &str, headers: &[(&str, &str)]) -> (serde_json::Value, String) {
    let mut b = Request::builder().method("GET").uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let cache = resp
        .headers()
        .get("manifold-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (json(&body), cache)
}

const ALICE: (&str, &str) = ("authorization", "Bearer alice");
const BOB: (&str, &str) = ("authorization", "Bearer bob");

#[tokio::test]
async fn a_cached_call_keys_on_every_request_value_it_forwards() {
    let (up, _) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.me]
path = "/me"
  [[routes.me.calls]]
  name = "me"
  upstream = "u"
  path = "/me"
  headers = {{ authorization = "{{header.authorization}}" }}
  cache = {{ ttl = "60s" }}

[routes.search]
path = "/search"
  [[routes.search.calls]]
  name = "s"
  upstream = "u"
  path = "/search"
  query = {{ q = "{{query.q}}" }}
  cache = {{ ttl = "60s" }}

[routes.keyed]
path = "/keyed/{{id}}"
  [[routes.keyed.calls]]
  name = "k"
  upstream = "u"
  path = "/items/{{path.id}}"
  headers = {{ authorization = "{{header.authorization}}" }}
  cache = {{ ttl = "60s", key = "item:{{path.id}}" }}
"#
    ))
    .await;

    let (a1, c) = get(&gw.url("/me"), &[ALICE]).await;
    assert_eq!(
        (a1["me"]["auth"].as_str(), c.as_str()),
        (Some("Bearer alice"), "me=miss")
    );
    let (a2, c) = get(&gw.url("/me"), &[ALICE]).await;
    assert_eq!(c, "me=hit", "the same user still gets the cache");
    assert_eq!(a2["me"]["n"], a1["me"]["n"]);

    let (b, c) = get(&gw.url("/me"), &[BOB]).await;
    assert_eq!(
        b["me"]["auth"], "Bearer bob",
        "bob got someone else's answer ({c})"
    );
    assert_eq!(c, "me=miss");
    let (anon, c) = get(&gw.url("/me"), &[]).await;
    assert_eq!(
        anon["me"]["auth"], "",
        "an anonymous client got a user's answer ({c})"
    );
    assert_eq!(c, "me=miss");
    let (_, c) = get(&gw.url("/me"), &[]).await;
    assert_eq!(c, "me=hit");
    // An empty Authorization is sent like an absent one, but is not the same request value.
    let (_, c) = get(&gw.url("/me"), &[("authorization", "")]).await;
    assert_eq!(c, "me=miss", "absent and empty share an entry");

    // Query values: absent and empty render alike (`q=`) but are kept apart.
    let (_, c) = get(&gw.url("/search"), &[]).await;
    assert_eq!(c, "s=miss");
    let (_, c) = get(&gw.url("/search?q="), &[]).await;
    assert_eq!(c, "s=miss", "absent and empty query values share an entry");
    let (_, c) = get(&gw.url("/search?q=a"), &[]).await;
    assert_eq!(c, "s=miss");
    let (_, c) = get(&gw.url("/search?q=a"), &[]).await;
    assert_eq!(c, "s=hit");

    // A `key` template that forgets a forwarded header still cannot cross users.
    let (a, c) = get(&gw.url("/keyed/1"), &[ALICE]).await;
    assert_eq!(
        (a["k"]["auth"].as_str(), c.as_str()),
        (Some("Bearer alice"), "k=miss")
    );
    let (b, c) = get(&gw.url("/keyed/1"), &[BOB]).await;
    assert_eq!(
        b["k"]["auth"], "Bearer bob",
        "a custom key crossed users ({c})"
    );
    let (_, c) = get(&gw.url("/keyed/1"), &[BOB]).await;
    assert_eq!(c, "k=hit");
}

#[tokio::test]
async fn a_proxy_route_cache_does_not_serve_one_users_answer_to_another() {
    let (up, _) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.raw]
path = "/raw/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}

[routes.keyed]
path = "/keyed/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s", vary = ["authorization"] }}
"#
    ))
    .await;

    let (a, c) = get(&gw.url("/raw/me"), &[ALICE]).await;
    assert_eq!(a["auth"], "Bearer alice");
    assert_eq!(c, "raw=bypass", "a request with credentials was cached");
    let (b, c) = get(&gw.url("/raw/me"), &[BOB]).await;
    assert_eq!(b["auth"], "Bearer bob", "bob got alice's answer ({c})");
    let (anon, c) = get(&gw.url("/raw/me"), &[]).await;
    assert_eq!(
        anon["auth"],
        serde_json::Value::Null,
        "anonymous got a user's answer ({c})"
    );
    assert_eq!(c, "raw=miss");
    let (_, c) = get(&gw.url("/raw/me"), &[]).await;
    assert_eq!(c, "raw=hit", "anonymous requests are still cached");
    let (carol, c) = get(&gw.url("/raw/me"), &[("cookie", "sid=carol")]).await;
    assert_eq!(
        carol["cookie"], "sid=carol",
        "a cookie-carrying client got another's answer ({c})"
    );
    assert_eq!(c, "raw=bypass");

    // Keyed on authorization: each user has an entry of their own.
    let (a, c) = get(&gw.url("/keyed/me"), &[ALICE]).await;
    assert_eq!(
        (a["auth"].as_str(), c.as_str()),
        (Some("Bearer alice"), "keyed=miss")
    );
    let (_, c) = get(&gw.url("/keyed/me"), &[ALICE]).await;
    assert_eq!(c, "keyed=hit");
    let (b, c) = get(&gw.url("/keyed/me"), &[BOB]).await;
    assert_eq!(
        (b["auth"].as_str(), c.as_str()),
        (Some("Bearer bob"), "keyed=miss")
    );
    // `vary` names authorization, not cookie: a cookie still bypasses.
    let (_, c) = get(&gw.url("/keyed/me"), &[ALICE, ("cookie", "x=1")]).await;
    assert_eq!(c, "keyed=bypass");
}

#[tokio::test]
async fn a_shared_proxy_route_cache_answers_everyone_alike() {
    let (up, _) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.pub]
path = "/pub/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s", shared = true }}
"#
    ))
    .await;
    let (a, c) = get(&gw.url("/pub/me"), &[ALICE]).await;
    assert_eq!(
        (a["auth"].as_str(), c.as_str()),
        (Some("Bearer alice"), "pub=miss")
    );
    let (b, c) = get(&gw.url("/pub/me"), &[BOB]).await;
    assert_eq!(
        c, "pub=hit",
        "the operator said the answers are the same for all"
    );
    assert_eq!(b["n"], a["n"]);
}

#[tokio::test]
async fn private_no_store_and_cookie_setting_answers_are_not_stored() {
    let (up, served) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.calls]
path = "/calls"
  [[routes.calls.calls]]
  name = "p"
  upstream = "u"
  path = "/private"
  cache = {{ ttl = "60s" }}
  [[routes.calls.calls]]
  name = "ns"
  upstream = "u"
  path = "/nostore"
  cache = {{ ttl = "60s" }}
  [[routes.calls.calls]]
  name = "ck"
  upstream = "u"
  path = "/cookie"
  cache = {{ ttl = "60s" }}
  [[routes.calls.calls]]
  name = "ok"
  upstream = "u"
  path = "/plain"
  cache = {{ ttl = "60s" }}

[routes.raw]
path = "/raw/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}
"#
    ))
    .await;

    let (_, c) = get(&gw.url("/calls"), &[]).await;
    assert_eq!(c, "p=miss, ns=miss, ck=miss, ok=miss");
    let before = served.load(SeqCst);
    let (_, c) = get(&gw.url("/calls"), &[]).await;
    assert_eq!(
        c, "p=miss, ns=miss, ck=miss, ok=hit",
        "an answer meant for one client was stored"
    );
    assert_eq!(served.load(SeqCst), before + 3);

    for path in ["/raw/private", "/raw/nostore"] {
        let (first, c) = get(&gw.url(path), &[]).await;
        assert_eq!(c, "raw=miss", "{path}");
        let (second, c) = get(&gw.url(path), &[]).await;
        assert_eq!(c, "raw=miss", "{path} was stored");
        assert_ne!(first["n"], second["n"], "{path}");
    }
    // A cookie-setting answer is passed on, cookie included, to the client it was for, and
    // never stored.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = client()
            .request(
                Request::get(gw.url("/raw/cookie"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let cookie = resp.headers().get("set-cookie").cloned();
        let body = json(&resp.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(
            cookie.map(|c| c.to_str().unwrap().to_owned()),
            Some(format!("sid={}", body["n"])),
            "the client lost the cookie set for it"
        );
        seen.push(body["n"].clone());
    }
    assert_ne!(seen[0], seen[1], "a cookie-setting answer was stored");
    let (_, c) = get(&gw.url("/raw/plain"), &[]).await;
    assert_eq!(c, "raw=miss");
    let (_, c) = get(&gw.url("/raw/plain"), &[]).await;
    assert_eq!(c, "raw=hit");
}

#[tokio::test]
async fn replicas_sharing_redis_keep_users_apart_and_never_store_their_credentials() {
    let (up, _) = identity_upstream().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("manifold-gw-test:{}:{nanos}:keys:", std::process::id());
    let config = format!(
        r#"
[cache]
redis = "redis://127.0.0.1:6379"
prefix = "{prefix}"

[upstreams.u]
endpoints = ["{up}"]

[routes.me]
path = "/me"
  [[routes.me.calls]]
  name = "me"
  upstream = "u"
  path = "/me"
  headers = {{ authorization = "{{header.authorization}}" }}
  cache = {{ ttl = "60s" }}
"#
    );
    let one = TestGateway::start(&config).await;
    let two = TestGateway::start(&config).await;
    let (a, c) = get(&one.url("/me"), &[ALICE]).await;
    assert_eq!(
        (a["me"]["auth"].as_str(), c.as_str()),
        (Some("Bearer alice"), "me=miss")
    );
    // The entry reaches Redis in the background: wait until the other replica reads it.
    let mut seen = String::new();
    for _ in 0..500 {
        let (_, c) = get(&two.url("/me"), &[ALICE]).await;
        seen = c;
        if seen == "me=hit-l2" || seen == "me=hit" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        seen.starts_with("me=hit"),
        "alice's entry never reached the other replica: {seen}"
    );
    let (b, c) = get(&two.url("/me"), &[BOB]).await;
    assert_eq!(
        b["me"]["auth"], "Bearer bob",
        "bob got alice's answer from Redis ({c})"
    );

    let mut conn = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| !k.contains("alice") && !k.contains("bob")),
        "{keys:?}"
    );
    let (s, _, _) = crate::support::send(
        "DELETE",
        &format!("http://{}/cache?prefix=", one.admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
}

/// Web cache poisoning: the host a client names is forwarded (`X-Forwarded-Host`), and an
/// upstream may build links from it, so it is part of a proxy route's key.
#[tokio::test]
async fn a_proxy_route_cache_keys_on_the_host_it_forwards() {
    let (up, _) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.raw]
path = "/raw/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}
"#
    ))
    .await;
    let (evil, c) = get(&gw.url("/raw/page"), &[("host", "evil.example")]).await;
    assert_eq!(
        (evil["xfh"].as_str(), c.as_str()),
        (Some("evil.example"), "raw=miss")
    );
    let (shop, c) = get(&gw.url("/raw/page"), &[("host", "shop.example")]).await;
    assert_eq!(
        shop["xfh"], "shop.example",
        "another host's answer was served from the cache ({c})"
    );
    assert_eq!(c, "raw=miss");
    let (again, c) = get(&gw.url("/raw/page"), &[("host", "shop.example")]).await;
    assert_eq!(
        (again["n"].clone(), c.as_str()),
        (shop["n"].clone(), "raw=hit")
    );
}

/// An answer whose `Vary` names a header the key holds is stored per value; one whose `Vary`
/// names another (or `*`) is answered, not stored, and the route's cache is bypassed after it.
#[tokio::test]
async fn a_proxy_route_stores_only_answers_whose_vary_its_key_covers() {
    let (up, served) = identity_upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.lang]
path = "/lang/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s", vary = ["accept-language"] }}

[routes.raw]
path = "/raw/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}

[routes.star]
path = "/star/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s", vary = ["accept-language"] }}
"#
    ))
    .await;
    let fr = ("accept-language", "fr");
    let de = ("accept-language", "de");
    let (_, c) = get(&gw.url("/lang/by-lang"), &[fr]).await;
    assert_eq!(c, "lang=miss");
    let (a, c) = get(&gw.url("/lang/by-lang"), &[fr]).await;
    assert_eq!((a["lang"].as_str(), c.as_str()), (Some("fr"), "lang=hit"));
    let (b, c) = get(&gw.url("/lang/by-lang"), &[de]).await;
    assert_eq!((b["lang"].as_str(), c.as_str()), (Some("de"), "lang=miss"));

    // Answered as fetched, like any answer the cache may not keep (no outcome to name).
    let (a, _) = get(&gw.url("/raw/by-lang"), &[fr]).await;
    assert_eq!(a["lang"], "fr");
    let before = served.load(SeqCst);
    let (b, c) = get(&gw.url("/raw/by-lang"), &[de]).await;
    assert_eq!(
        b["lang"], "de",
        "an answer that varies on accept-language was served to another language ({c})"
    );
    assert_eq!(c, "raw=bypass");
    assert_eq!(
        served.load(SeqCst),
        before + 1,
        "forwarded, not answered from the cache"
    );
    // The route's other paths skip its cache too, until the config is loaded again.
    let (_, c) = get(&gw.url("/raw/other"), &[]).await;
    assert_eq!(c, "raw=bypass");

    let (_, c) = get(&gw.url("/star/by-star"), &[fr]).await;
    assert_eq!(c, "");
    let (_, c) = get(&gw.url("/star/by-star"), &[fr]).await;
    assert_eq!(c, "star=bypass", "`Vary: *` is never stored");
}
