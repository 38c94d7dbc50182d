//! A cached route answers a hit with the headers its miss went out with: the upstream's CORS,
//! security and `Link` headers on a proxy route, the configured response headers on a composed
//! one. Only the headers of one exchange (framing, date, the filling request's id) are not
//! replayed.

use crate::support::{client, Reply, TestGateway, Upstream};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;

/// GET `url`; (the `Manifold-Cache` header, the response headers, the body).
async fn get(url: &str) -> (String, http::HeaderMap, Bytes) {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let headers = resp.headers().clone();
    let cache = headers
        .get("manifold-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (cache, headers, body)
}

const FROM_UPSTREAM: [(&str, &str); 5] = [
    ("access-control-allow-origin", "https://shop.example"),
    ("content-security-policy", "default-src 'self'"),
    ("strict-transport-security", "max-age=63072000"),
    ("link", "</style.css>; rel=preload; as=style"),
    ("content-disposition", "inline; filename=\"a.json\""),
];

#[tokio::test]
async fn a_cache_hit_carries_the_headers_its_miss_went_out_with() {
    let mut reply = Reply::json(0, json!({"ok": true}))
        .header("x-request-id", "the-request-that-filled-it")
        .header("server-timing", "db;dur=53");
    for (n, v) in FROM_UPSTREAM {
        reply = reply.header(n, v);
    }
    let up = Upstream::start(vec![("GET", "/", reply)]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{up}"]

[routes.files]
path = "/files/{{*rest}}"
proxy = "u"
cache = {{ ttl = "60s" }}

[routes.card]
path = "/card/{{id}}"
cache = {{ ttl = "60s" }}
  [[routes.card.calls]]
  name = "a"
  upstream = "u"
  path = "/a/{{path.id}}"
  [routes.card.response]
  headers = {{ access-control-allow-origin = "*", x-card = "{{path.id}}" }}
  body = {{ a = "{{a.ok}}" }}
"#,
        up = up.url()
    ))
    .await;

    let (c, miss, body) = get(&gw.url("/files/a.json")).await;
    assert_eq!(c, "files=miss");
    let (c, hit, again) = get(&gw.url("/files/a.json")).await;
    assert_eq!(c, "files=hit");
    assert_eq!(body, again);
    for (name, value) in FROM_UPSTREAM {
        assert_eq!(miss.get(name).map(|v| v.as_bytes()), Some(value.as_bytes()));
        assert_eq!(
            hit.get(name).map(|v| v.as_bytes()),
            Some(value.as_bytes()),
            "a hit lost `{name}`"
        );
    }
    assert!(
        hit.get("server-timing").is_none(),
        "the filling request's timings were replayed"
    );
    assert_ne!(
        hit.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"the-request-that-filled-it"[..]),
        "the filling request's id was replayed"
    );
    assert_eq!(hit.get_all("date").iter().count(), 1);
    assert_eq!(hit.get_all("content-length").iter().count(), 1);

    let (c, miss, _) = get(&gw.url("/card/7")).await;
    assert_eq!(c, "card=miss");
    let (c, hit, _) = get(&gw.url("/card/7")).await;
    assert_eq!(c, "card=hit");
    for h in [&miss, &hit] {
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["x-card"], "7");
    }
    let fetched = up
        .requests()
        .iter()
        .filter(|s| s.path_and_query == "/a/7")
        .count();
    assert_eq!(fetched, 1);
}
