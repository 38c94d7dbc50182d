//! The admin listener and the router: the token that guards what changes state (fault 7),
//! secrets kept out of `/config` and dead-letter listings (fault 6), and routes that differ only
//! in parameter names (fault 5).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";

/// Send with optional `Authorization`; status, headers and body.
async fn send_auth(
    method: &str,
    url: &str,
    auth: Option<&str>,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (
        status,
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Fault 5: `GET /u/{id}` beside `POST /u/{x}` passed the check, but the router skipped the
/// second pattern and answered the POST with 405. Both must work, each reading its parameter
/// under its own name.
#[tokio::test]
async fn routes_that_differ_only_in_parameter_names_are_both_served() {
    let up = Upstream::start(vec![("GET", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.a]
endpoints = ["{}"]
[routes.read]
path = "/u/{{id}}"
  [[routes.read.calls]]
  name = "a"
  upstream = "a"
  path = "/read/{{path.id}}"
  [routes.read.response]
  body = {{ read = "{{path.id}}" }}
[routes.write]
method = "POST"
path = "/u/{{x}}"
  [[routes.write.calls]]
  name = "a"
  upstream = "a"
  path = "/write/{{path.x}}"
  [routes.write.response]
  body = {{ wrote = "{{path.x}}" }}
"#,
        up.url()
    ))
    .await;
    let (s, _, b) = send("GET", &gw.url("/u/7"), None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b), json!({"read": "7"}));
    let (s, _, b) = send("POST", &gw.url("/u/9"), None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b), json!({"wrote": "9"}));
    assert_eq!(up.find("/write").path_and_query, "/write/9");
    assert_eq!(up.find("/read").path_and_query, "/read/7");
    let (s, h, _) = send("DELETE", &gw.url("/u/9"), None).await;
    assert_eq!(s, 405);
    assert_eq!(h["allow"], "GET, POST, HEAD");
    gw.shutdown().await;
}

/// Fault 7: with a token, purges and dead-letter operations need it; probes do not.
#[tokio::test]
async fn mutating_admin_endpoints_need_the_bearer_token() {
    let gw = TestGateway::start_with_server(&format!("admin_token = \"{TOKEN}\""), "").await;
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    for (m, p) in [
        ("DELETE", "/cache?prefix="),
        ("POST", "/queue/replay?all=1"),
        ("DELETE", "/queue/dead?all=1"),
        ("GET", "/queue/dead"),
        ("GET", "/traces"),
        ("GET", "/traces?format=jaeger"),
        ("GET", "/traces/0af7651916cd43dd8448eb211c80319c"),
    ] {
        let (s, h, b) = send_auth(m, &admin(p), None).await;
        assert_eq!(s, 401, "{m} {p}: {}", String::from_utf8_lossy(&b));
        assert_eq!(h["www-authenticate"], "Bearer realm=\"manifold-admin\"");
        let (s, h, _) = send_auth(m, &admin(p), Some("Bearer wrong-token-0123456789")).await;
        assert_eq!(s, 401, "{m} {p}");
        assert!(h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
    let bearer = format!("Bearer {TOKEN}");
    let (s, _, b) = send_auth("DELETE", &admin("/cache?prefix="), Some(&bearer)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["removed"], 0);
    let (s, _, b) = send_auth("GET", &admin("/traces"), Some(&bearer)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    for p in ["/healthz", "/readyz", "/config", "/cache"] {
        let (s, _, _) = send_auth("GET", &admin(p), None).await;
        assert_eq!(s, 200, "{p}");
    }
    let (_, _, b) = send_auth("GET", &admin("/config"), None).await;
    let shown = String::from_utf8_lossy(&b);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert_eq!(json(&b)["server"]["admin_token"], "***");
    gw.shutdown().await;
}

/// Fault 7: an admin listener beyond loopback without a token is refused at start (this is
/// also how `manifold serve --admin 0.0.0.0:…` reaches the gateway).
#[tokio::test]
async fn a_non_loopback_admin_without_a_token_does_not_start() {
    let mut config = manifold_config::compile(
        "t.toml".as_ref(),
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    config.server.admin = "0.0.0.0:0".parse().unwrap();
    let e = manifold_gateway::Gateway::bind(config.clone())
        .await
        .expect_err("an exposed admin listener must not start");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    config.server.admin_token = Some(manifold_config::Secret::new(TOKEN));
    let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
    assert!(gw.admin_addr().ip().is_unspecified());
}

/// Fault 6: a dead letter's `Authorization` header was listed as sent.
#[tokio::test]
async fn dead_letter_listings_hide_credentials() {
    let dir = std::env::temp_dir().join(format!("manifold-admin-dead-{}", std::process::id()));
    // 400: a failure that will repeat, dead-lettered at once.
    let up = Upstream::start(vec![("POST", "/", Reply::raw(0, 400, "{}"))]).await;
    let gw = TestGateway::start_with_server(
        &format!("admin_token = \"{TOKEN}\""),
        &format!(
            r#"
[queue]
backend = "embedded"
path = "{}"
[upstreams.a]
endpoints = ["{}"]
[routes.r]
method = "POST"
path = "/r"
  [[routes.r.calls]]
  name = "a"
  upstream = "a"
  method = "POST"
  path = "/hook"
  mode = "async"
  headers = {{ authorization = "{{header.authorization}}", x-api-key = "static-api-key-value", accept = "application/json" }}
  [routes.r.response]
  status = 202
  body = {{ task = "{{a.task_id}}" }}
"#,
            dir.display(),
            up.url()
        ),
    )
    .await;
    let req = http::Request::post(gw.url("/r"))
        .header("authorization", "Bearer user-secret-credential")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 202);
    let task = json(&resp.into_body().collect().await.unwrap().to_bytes())["task"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {TOKEN}");
    let url = format!("http://{}/queue/dead", gw.admin);
    let mut listing = None;
    for _ in 0..200 {
        let (s, _, b) = send_auth("GET", &url, Some(&bearer)).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        if json(&b)["dead"].as_array().is_some_and(|d| !d.is_empty()) {
            listing = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let listing = listing.expect("the task was never dead-lettered");
    // A listing's size is bounded, and a limit that is not a positive number is refused.
    for (limit, status) in [
        ("0", 400),
        ("ten", 400),
        ("-1", 400),
        ("99999999999999999999", 400),
    ] {
        let (s, _, b) = send_auth("GET", &format!("{url}?limit={limit}"), Some(&bearer)).await;
        assert_eq!(s, status, "limit={limit}: {}", String::from_utf8_lossy(&b));
    }
    let (s, _, b) = send_auth("GET", &format!("{url}?limit=1000000"), Some(&bearer)).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["dead"].as_array().map(Vec::len), Some(1));
    // The upstream did get the credentials: only the listing hides them.
    assert_eq!(
        up.find("/hook").headers["authorization"],
        "Bearer user-secret-credential"
    );
    let (s, _, one) = send_auth("GET", &format!("{url}/{task}"), Some(&bearer)).await;
    assert_eq!(s, 200);
    // A task's status holds its result: the token is needed for it too.
    let status = format!("http://{}/queue/status/{task}", gw.admin);
    let (s, _, _) = send_auth("GET", &status, None).await;
    assert_eq!(s, 401, "a task's status without the admin token");
    let (s, _, b) = send_auth("GET", &status, Some(&bearer)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    for shown in [&listing, &one] {
        let text = String::from_utf8_lossy(shown);
        assert!(!text.contains("user-secret-credential"), "{text}");
        assert!(!text.contains("static-api-key-value"), "{text}");
        assert!(text.contains("application/json"), "{text}");
    }
    // The trace context the task carries (so its delivery joins the request's trace) is
    // listed as it is; the credentials are not.
    let headers: Vec<serde_json::Value> = json(&one)["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] != "traceparent" && h[0] != "x-request-id")
        .cloned()
        .collect();
    assert_eq!(
        serde_json::Value::from(headers),
        json!([
            ["accept", "application/json"],
            ["authorization", "***"],
            ["x-api-key", "***"]
        ])
    );
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Fault 5: a route the router cannot register stops the start (it was logged as "route
/// skipped" and the gateway served without it). The compiler rejects such configs, so this one
/// is altered after compiling.
#[tokio::test]
async fn a_route_the_router_cannot_register_stops_the_start() {
    let mut config = manifold_config::compile(
        "t.toml".as_ref(),
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n[routes.one]\npath = \"/a/{x}\"\nproxy = \"a\"\n[routes.two]\npath = \"/b/{*rest}\"\nproxy = \"a\"\n",
    )
    .unwrap();
    config.routes[1].path = "/a/{*rest}".into();
    let e = manifold_gateway::Gateway::bind(config)
        .await
        .expect_err("a route left out must stop the start");
    assert!(
        e.to_string()
            .contains("route `two` (/a/{*rest}) cannot be served"),
        "{e}"
    );
}
