//! Following an offloaded call: the receipt's `status_url`, `GET /tasks/{id}` through
//! queued → done with the upstream's answer, dead after `max_attempts`, the long poll, and the
//! hostile ids and waits a client can send.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let n: u64 = rand_tag();
        Dir(std::env::temp_dir().join(format!(
            "manifold-status-{tag}-{}-{n:x}",
            std::process::id()
        )))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn config(shipping: &str, dir: &Dir, queue_extra: &str) -> String {
    format!(
        r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "20ms"
backoff_max = "50ms"
max_attempts = 2
{queue_extra}

[upstreams.shipping]
endpoints = ["{shipping}"]
timeout = "2s"

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = 7 }}
  mode = "async"
  [routes.checkout.response]
  status = 202
  body = {{ shipping = "{{shipping.task_id}}", follow = "{{shipping.status_url}}" }}
"#,
        dir.0.display()
    )
}

async fn get(
    url: &str,
    authorization: Option<&str>,
) -> (http::StatusCode, http::HeaderMap, serde_json::Value) {
    let mut b = http::Request::get(url);
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, v)
}

async fn checkout(gw: &TestGateway, authorization: Option<&str>) -> (String, String) {
    let mut b = http::Request::post(gw.url("/checkout")).header("content-type", "application/json");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body = json(&resp.into_body().collect().await.unwrap().to_bytes());
    let id = body["shipping"].as_str().unwrap().to_owned();
    let url = body["follow"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/tasks/{id}"));
    (id, url)
}

#[tokio::test]
async fn a_task_is_followed_from_queued_to_done_with_the_upstreams_answer() {
    let dir = Dir::new("done");
    // The label takes 400 ms: long enough to see the task before it is done.
    let shipping = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(400, json!({"label": "L-1", "tracking": "T-42"})),
    )])
    .await;
    let gw = TestGateway::start(&config(&shipping.url(), &dir, "")).await;
    let (id, url) = checkout(&gw, None).await;

    let (s, headers, body) = get(&gw.url(&url), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["task_id"], id.as_str());
    let early = body["status"].as_str().unwrap().to_owned();
    assert!(["queued", "delivering"].contains(&early.as_str()), "{body}");
    assert!(body["result"].is_null());

    // The long poll returns once the task is done, long before its 30 s wait.
    let started = tokio::time::Instant::now();
    let (s, _, body) = get(&gw.url(&format!("{url}?wait=30s")), None).await;
    assert_eq!(s, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "held for the whole wait"
    );
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["result_status"], 200);
    assert_eq!(body["result"], json!({"label": "L-1", "tracking": "T-42"}));
    assert_eq!(body["attempts"], 0);
    assert!(body["updated_at"].as_u64().unwrap() > 0);
    assert!(body.get("history").is_none() && body.get("auth").is_none());

    // Operators (`manifold queue status ID`) read the history on the admin listener.
    let admin = format!("http://{}/queue/status/{id}", gw.admin);
    let (s, _, body) = get(&admin, None).await;
    assert_eq!(s, 200, "{body}");
    let steps: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["queued", "delivering", "done"]);
    assert!(body.get("auth").is_none());
    let (s, _, _) = get(&format!("http://{}/queue/status/..%2Fx", gw.admin), None).await;
    assert_eq!(s, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_task_that_keeps_failing_is_dead_after_max_attempts() {
    let dir = Dir::new("dead");
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::raw(0, 503, "busy"))]).await;
    let gw = TestGateway::start(&config(&shipping.url(), &dir, "")).await;
    let (_, url) = checkout(&gw, None).await;
    let (s, _, body) = get(&gw.url(&format!("{url}?wait=20s")), None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "dead", "{body}");
    assert_eq!(body["attempts"], 2);
    assert!(
        body["last_error"].as_str().unwrap().contains("503"),
        "{body}"
    );
    assert!(body["result"].is_null());
    gw.shutdown().await;
}

/// With `error_detail = "brief"` the status a client reads names nothing behind the gateway:
/// the stored `last_error` of a failed delivery is the call's error with its upstream and each
/// attempt's endpoint, which only the admin listener shows.
#[tokio::test]
async fn brief_tells_a_client_following_its_task_no_upstream_or_address() {
    let dir = Dir::new("brief");
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = spare.local_addr().expect("addr");
    drop(spare);
    let toml = config(&format!("http://{dead}"), &dir, "");
    let gw = TestGateway::start_with_server("error_detail = \"brief\"", &toml).await;
    let (id, url) = checkout(&gw, None).await;
    let (s, _, body) = get(&gw.url(&format!("{url}?wait=20s")), None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "dead", "{body}");
    assert!(body["last_error"].is_string(), "{body}");
    let text = body.to_string();
    let port = dead.port().to_string();
    assert!(
        !text.contains(&port) && !text.contains("127.0.0.1") && !text.contains("shipping"),
        "{text}"
    );
    // Operators still read what happened.
    let admin = format!("http://{}/queue/status/{id}", gw.admin);
    let (s, _, body) = get(&admin, None).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&port)),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn results_over_max_result_bytes_are_omitted() {
    let dir = Dir::new("big");
    let big = json!({"blob": "x".repeat(2000)});
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::json(0, big))]).await;
    let gw = TestGateway::start(&config(&shipping.url(), &dir, "max_result_bytes = 1024")).await;
    let (_, url) = checkout(&gw, None).await;
    let (_, _, body) = get(&gw.url(&format!("{url}?wait=20s")), None).await;
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["result_omitted"], true);
    assert!(body["result"].is_null());
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_and_hostile_ids_and_bad_waits_are_answered_not_crashed_on() {
    let dir = Dir::new("hostile");
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&config(&shipping.url(), &dir, "")).await;
    let (id, url) = checkout(&gw, None).await;
    let long = "a".repeat(4000);
    for path in [
        "/tasks/0123456789abcdef0123456789abcdef".to_owned(),
        format!("/tasks/{long}"),
        "/tasks/%C3%A9t%C3%A9".to_owned(),
        "/tasks/..%2F..%2Fadmin".to_owned(),
        "/tasks/%2e%2e".to_owned(),
        "/tasks/a%00b".to_owned(),
        format!("/tasks/{}", id.to_uppercase()),
        format!("/tasks/{}", &id[..31]),
        format!("/tasks/{id}x"),
    ] {
        let (s, _, body) = get(&gw.url(&path), None).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_eq!(body["error"]["kind"], "not_found");
    }
    // Paths that are not the status route at all are routing's business.
    let (s, _, _) = get(&gw.url(&format!("/tasks/{id}/../x")), None).await;
    assert_eq!(s, 404);
    for wait in ["31s", "1h", "soon", "", "-1s", "5s&wait=1s", "%00"] {
        let (s, _, body) = get(&gw.url(&format!("{url}?wait={wait}")), None).await;
        assert_eq!(s, 400, "wait={wait}: {body}");
    }
    let (s, headers, _) = send("DELETE", &gw.url(&url), None).await;
    assert_eq!(s, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    // The real id still answers after all that.
    let (s, _, _) = get(&gw.url(&url), None).await;
    assert_eq!(s, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn status_requires_authorization_answers_only_the_creating_header() {
    let dir = Dir::new("auth");
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&config(
        &shipping.url(),
        &dir,
        "status_requires = \"authorization\"",
    ))
    .await;
    let (_, url) = checkout(&gw, Some("Bearer alice")).await;
    assert_eq!(get(&gw.url(&url), None).await.0, 404);
    assert_eq!(get(&gw.url(&url), Some("Bearer mallory")).await.0, 404);
    assert_eq!(get(&gw.url(&url), Some("bearer alice")).await.0, 404);
    assert_eq!(get(&gw.url(&url), Some("Bearer alice")).await.0, 200);
    // Created without the header: nobody may read it, not even a request without one.
    let (_, url) = checkout(&gw, None).await;
    assert_eq!(get(&gw.url(&url), None).await.0, 404);
    assert_eq!(get(&gw.url(&url), Some("")).await.0, 404);
    // The header is not what the queue stores.
    let stored = std::fs::read(dir.0.join("queue.redb")).unwrap();
    assert!(!stored.windows(5).any(|w| w == b"alice"));
    gw.shutdown().await;
}

#[tokio::test]
async fn status_path_is_configurable_and_can_be_turned_off() {
    let dir = Dir::new("path");
    let shipping = Upstream::start(vec![("POST", "/shipping", Reply::json(0, json!({})))]).await;
    let toml = config(&shipping.url(), &dir, "status_path = \"/v1/jobs\"").replace(
        "follow = \"{shipping.status_url}\"",
        "follow = \"/v1/jobs/{shipping.task_id}\"",
    );
    let gw = TestGateway::start(&toml).await;
    let resp = send("POST", &gw.url("/checkout"), Some("{}")).await;
    let id = json(&resp.2)["shipping"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw.url(&format!("/v1/jobs/{id}")), None).await.0, 200);
    assert_eq!(get(&gw.url(&format!("/tasks/{id}")), None).await.0, 404);
    gw.shutdown().await;

    let dir = Dir::new("off");
    let toml = config(&shipping.url(), &dir, "status_path = \"\"")
        .replace(", follow = \"{shipping.status_url}\"", "");
    let gw = TestGateway::start(&toml).await;
    let resp = send("POST", &gw.url("/checkout"), Some("{}")).await;
    let id = json(&resp.2)["shipping"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw.url(&format!("/tasks/{id}")), None).await.0, 404);
    gw.shutdown().await;
}

/// `check` and `serve` apply one rule: a status path that would shadow a route is refused.
#[test]
fn a_status_path_that_would_shadow_a_route_is_refused_by_check() {
    let dir = Dir::new("shadow");
    let toml = format!(
        "{}\n[routes.any]\nmethod = \"GET\"\npath = \"/tasks/{{id}}\"\nproxy = \"shipping\"\n",
        config("http://127.0.0.1:1", &dir, "")
    );
    let e = manifold_config::compile("t.toml".as_ref(), &toml)
        .unwrap_err()
        .to_string();
    assert!(e.contains("status_path") && e.contains("`any`"), "{e}");
    let ok = toml.replace(
        "max_attempts = 2",
        "max_attempts = 2\nstatus_path = \"/jobs\"",
    );
    manifold_config::compile("t.toml".as_ref(), &ok).unwrap();
}

/// A status read is answered by the gateway itself, and shows like a route of its own: in
/// flight and by status class under its path template, with an `X-Request-Id` on the answer
/// (the client's when it sent one).
#[tokio::test]
async fn status_reads_are_measured_and_carry_a_request_id() {
    let dir = Dir::new("seen");
    let shipping = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(0, json!({"label": "L-1"})),
    )])
    .await;
    let gw = TestGateway::start(&config(&shipping.url(), &dir, "")).await;
    let (_, url) = checkout(&gw, None).await;
    let (s, headers, _) = get(&gw.url(&url), None).await;
    assert_eq!(s, 200);
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    let (s, headers, _) = get(&gw.url("/tasks/no-such-task"), None).await;
    assert_eq!(s, 404);
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    let resp = client()
        .request(
            http::Request::get(gw.url(&url))
                .header("x-request-id", "poll-7")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "poll-7");

    let resp = client()
        .request(
            http::Request::get(format!("http://{}/metrics", gw.admin))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let series = |class: &str| {
        let name = format!(
            "manifold_http_server_request_duration_seconds_count{{route=\"/tasks/{{task_id}}\",status_class=\"{class}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(series("2xx"), Some(2.0), "{text}");
    assert_eq!(series("4xx"), Some(1.0), "{text}");
    assert!(
        text.contains("manifold_http_server_active_requests{route=\"/tasks/{task_id}\"} 0"),
        "{text}"
    );
    gw.shutdown().await;
}
