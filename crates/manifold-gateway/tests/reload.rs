//! Hot reload through `POST /reload`, as an operator uses it: the file is rewritten, the
//! gateway re-reads it. Requests in flight finish on the plans they started with; unchanged
//! upstreams keep their connections; a bad file is answered with its locations and changes
//! nothing; the admin token guards it.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "reload-admin-token-0123456789";

/// A gateway started from a file on disk (a reload re-reads it).
struct FileGateway {
    file: PathBuf,
    running: TestGateway,
}

impl FileGateway {
    async fn start(tag: &str, toml: &str) -> FileGateway {
        let dir =
            std::env::temp_dir().join(format!("manifold-gw-reload-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("manifold.toml");
        std::fs::write(&file, with_server(toml)).unwrap();
        let config = manifold_config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let gw = manifold_gateway::Gateway::bind(config).await.unwrap();
        FileGateway {
            file,
            running: TestGateway::spawn(gw),
        }
    }

    fn write(&self, toml: &str) {
        std::fs::write(&self.file, with_server(toml)).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    async fn reload(&self, token: Option<&str>) -> (http::StatusCode, serde_json::Value) {
        let (status, body) = admin(self.running.admin, "POST", "/reload", token).await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }
}

/// Listeners on free ports (the same on every reload: they need a restart to change).
fn with_server(toml: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n{toml}"
    )
}

async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (http::StatusCode, Bytes) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn one_call_route(route: &str, path: &str, upstream: &str, plan: &str) -> String {
    format!(
        r#"
[routes.{route}]
path = "{path}"
  [[routes.{route}.calls]]
  name = "c"
  upstream = "{upstream}"
  path = "/data"
  [routes.{route}.response]
  body = {{ plan = "{plan}", c = "{{c}}" }}
"#
    )
}

#[tokio::test]
async fn a_request_started_before_a_reload_finishes_on_its_old_plan() {
    let up = Upstream::start(vec![("GET", "/data", Reply::json(700, json!({"n": 1})))]).await;
    let upstream = format!("[upstreams.up]\nendpoints = [\"{}\"]\n", up.url());
    let gw = FileGateway::start(
        "inflight",
        &format!("{upstream}{}", one_call_route("r", "/r", "up", "old")),
    )
    .await;
    let first = gw.url("/r");
    let in_flight = tokio::spawn(async move { send("GET", &first, None).await });
    for _ in 0..500 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        up.requests().len(),
        1,
        "the first request never reached the upstream"
    );

    // Meanwhile: the route is removed, another takes its place, and the upstream's settings
    // change (so it gets a new stack while the old request still uses the old one).
    let changed = format!(
        "[upstreams.up]\nendpoints = [\"{}\"]\ntimeout = \"9s\"\n",
        up.url()
    );
    gw.write(&format!(
        "{changed}{}",
        one_call_route("r2", "/r2", "up", "new")
    ));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["reloaded"], true);
    assert_eq!(report["upstreams"]["changed"], json!(["up"]));
    assert_eq!(report["routes"], 1);

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(json(&body), json!({"plan": "old", "c": {"n": 1}}));
    let (status, _, _) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(status, 404, "new requests use the new plans");
    let (status, _, body) = send("GET", &gw.url("/r2"), None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["plan"], "new");
    gw.running.shutdown().await;
}

/// An HTTP/1.1 upstream that counts the TCP connections it accepts.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, hyper::Error>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_connections_and_a_changed_one_opens_new_ones() {
    let (kept_url, kept) = counting_upstream().await;
    let (changed_url, changed) = counting_upstream().await;
    let config = |plan: &str, timeout: &str| {
        format!(
            "[upstreams.kept]\nendpoints = [\"{kept_url}\"]\n\
             [upstreams.changed]\nendpoints = [\"{changed_url}\"]\ntimeout = \"{timeout}\"\n{}{}",
            one_call_route("k", "/k", "kept", plan),
            one_call_route("c", "/c", "changed", plan)
        )
    };
    let gw = FileGateway::start("pools", &config("one", "2s")).await;
    let warm = |gw: &FileGateway, plan: &'static str| {
        let (k, c) = (gw.url("/k"), gw.url("/c"));
        async move {
            for _ in 0..5 {
                for url in [&k, &c] {
                    let (status, _, body) = send("GET", url, None).await;
                    assert_eq!(status, 200);
                    assert_eq!(json(&body)["plan"], plan);
                }
            }
        }
    };
    warm(&gw, "one").await;
    let (kept_before, changed_before) =
        (kept.load(Ordering::SeqCst), changed.load(Ordering::SeqCst));
    assert!(kept_before >= 1 && changed_before >= 1);

    gw.write(&config("two", "3s"));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["upstreams"]["kept"], json!(["kept"]));
    assert_eq!(report["upstreams"]["changed"], json!(["changed"]));
    warm(&gw, "two").await;
    assert_eq!(
        kept.load(Ordering::SeqCst),
        kept_before,
        "the unchanged upstream saw a new connection: its pool was not kept"
    );
    assert!(
        changed.load(Ordering::SeqCst) > changed_before,
        "the changed upstream must be reached through its new stack"
    );
    gw.running.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_is_answered_with_file_line_col_and_changes_nothing() {
    let up = Upstream::start(vec![("GET", "/data", Reply::json(0, json!({"n": 1})))]).await;
    let upstream = format!("[upstreams.up]\nendpoints = [\"{}\"]\n", up.url());
    let good = format!("{upstream}{}", one_call_route("r", "/r", "up", "old"));
    let gw = FileGateway::start("invalid", &good).await;
    // Line 12: 4 `[server]` lines, 2 of the upstream, a blank line, then the route's fifth.
    gw.write(&good.replace("upstream = \"up\"", "upstream = \"missing\""));
    let (status, answer) = gw.reload(None).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["kind"], "invalid_config");
    let at = answer["error"]["errors"][0]["at"].as_str().unwrap();
    assert_eq!(at, format!("{}:12:14", gw.file.display()), "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown upstream `missing`"));
    let (status, _, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["plan"], "old", "the running config stays");

    // A TOML syntax error, too.
    gw.write("[routes.r\npath = 1\n");
    let (status, answer) = gw.reload(None).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]["errors"][0]["line"].as_u64().unwrap() > 0,
        "{answer}"
    );
    gw.running.shutdown().await;
}

#[tokio::test]
async fn post_reload_needs_the_admin_token_when_one_is_set() {
    let up = Upstream::start(vec![("GET", "/data", Reply::json(0, json!({"n": 1})))]).await;
    let toml = format!(
        "admin_token = \"{TOKEN}\"\n[upstreams.up]\nendpoints = [\"{}\"]\n{}",
        up.url(),
        one_call_route("r", "/r", "up", "old")
    );
    let gw = FileGateway::start("token", &toml).await;
    let (status, answer) = gw.reload(None).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = gw.reload(Some("reload-admin-token-WRONG-56789")).await;
    assert_eq!(status, 401);
    // Nothing was re-read: a refused caller cannot even make the gateway parse the file.
    gw.write(&toml.replace("\"old\"", "\"new\""));
    let (_, _, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(json(&body)["plan"], "old");
    let (status, answer) = gw.reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, _, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(json(&body)["plan"], "new");
    // Only POST reloads.
    let (status, _) = admin(gw.running.admin, "GET", "/reload", Some(TOKEN)).await;
    assert_eq!(status, 405);
    // The request names no file: a query asking for another one is ignored, and the gateway
    // reads its own.
    let other = gw.file.with_file_name("other.toml");
    std::fs::write(&other, "[routes.x]\npath = \"/x\"\nproxy = \"nope\"\n").unwrap();
    let query = format!(
        "/reload?file={}&config={}",
        other.display(),
        other.display()
    );
    let (status, body) = admin(gw.running.admin, "POST", &query, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["file"], gw.file.display().to_string());
    gw.running.shutdown().await;
}

#[tokio::test]
async fn cached_results_of_unchanged_calls_survive_a_reload() {
    let up = Upstream::start(vec![("GET", "/data", Reply::json(0, json!({"n": 1})))]).await;
    let config = |plan: &str| {
        format!(
            "[upstreams.up]\nendpoints = [\"{}\"]\n{}",
            up.url(),
            one_call_route("r", "/r", "up", plan).replace(
                "path = \"/data\"",
                "path = \"/data\"\n  cache = { ttl = \"60s\" }"
            )
        )
    };
    let gw = FileGateway::start("cache", &config("one")).await;
    let (_, headers, _) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(headers["manifold-cache"], "c=miss");
    gw.write(&config("two"));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    let (status, headers, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["plan"], "two");
    assert_eq!(
        headers["manifold-cache"], "c=hit",
        "the entry did not survive"
    );
    assert_eq!(up.requests().len(), 1);
    gw.running.shutdown().await;
}

#[tokio::test]
async fn the_dispatcher_delivers_through_the_new_stack_of_a_changed_upstream() {
    let dir = std::env::temp_dir().join(format!("manifold-gw-reload-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // At accept time the upstream points at a port where nothing listens: every delivery
    // through that stack fails, and the queue retries.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", spare.local_addr().unwrap());
    drop(spare);
    let live = Upstream::start(vec![("POST", "/hook", Reply::json(0, json!({"ok": true})))]).await;
    let config = |endpoint: &str| {
        format!(
            r#"
[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "200ms"

[upstreams.hook]
endpoints = ["{endpoint}"]

[routes.t]
method = "POST"
path = "/t"
  [[routes.t.calls]]
  name = "h"
  upstream = "hook"
  method = "POST"
  path = "/hook"
  mode = "async"
  [routes.t.response]
  status = 202
  body = {{ task = "{{h.task_id}}" }}
"#,
            dir.join("queue").display()
        )
    };
    let gw = FileGateway::start("queue", &config(&dead)).await;
    let (status, _, _) = send("POST", &gw.url("/t"), Some("{}")).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(live.requests().is_empty());

    gw.write(&config(&live.url()));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["upstreams"]["changed"], json!(["hook"]));
    let mut delivered = false;
    for _ in 0..500 {
        if !live.requests().is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delivered,
        "the task accepted before the reload was never delivered through the new stack"
    );
    gw.running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream a reload removed ends its breaker and balancer series: its last breaker state
/// does not show on every scrape from then on.
#[tokio::test]
async fn a_removed_upstreams_endpoint_series_end_at_the_reload() {
    let (a_url, _) = counting_upstream().await;
    let (b_url, _) = counting_upstream().await;
    let both = format!(
        "[upstreams.a]\nendpoints = [\"{a_url}\"]\n[upstreams.b]\nendpoints = [\"{b_url}\"]\n{}{}",
        one_call_route("ra", "/a", "a", "one"),
        one_call_route("rb", "/b", "b", "one")
    );
    let gw = FileGateway::start("series", &both).await;
    let scrape = || async {
        let (status, body) = admin(gw.running.admin, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    };
    let series = |text: &str, upstream: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "manifold_upstream_breaker_state{{upstream=\"{upstream}\""
                )) || l.starts_with(&format!(
                    "manifold_upstream_balancer_cost{{upstream=\"{upstream}\""
                ))
            })
            .count()
    };
    let before = scrape().await;
    assert!(
        series(&before, "a") > 0 && series(&before, "b") > 0,
        "{before}"
    );

    gw.write(&format!(
        "[upstreams.a]\nendpoints = [\"{a_url}\"]\n{}",
        one_call_route("ra", "/a", "a", "two")
    ));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    let after = scrape().await;
    assert_eq!(series(&after, "b"), 0, "{after}");
    assert_eq!(series(&after, "a"), series(&before, "a"), "{after}");
    gw.running.shutdown().await;
}

/// A route or call a reload removed (or pointed at another upstream) ends its series: the
/// request and call counters of routes that no longer exist do not show on every scrape from
/// then on, a refused reload ends none, and a kept route counts on where it was.
#[tokio::test]
async fn a_removed_routes_series_end_at_the_reload_and_a_kept_one_counts_on() {
    let (a_url, _) = counting_upstream().await;
    let (b_url, _) = counting_upstream().await;
    let upstreams = format!(
        "[upstreams.a]\nendpoints = [\"{a_url}\"]\n[upstreams.b]\nendpoints = [\"{b_url}\"]\n"
    );
    let gw = FileGateway::start(
        "route-series",
        &format!(
            "{upstreams}{}{}",
            one_call_route("ra", "/a", "a", "one"),
            one_call_route("rb", "/b", "b", "one")
        ),
    )
    .await;
    for path in ["/a", "/b"] {
        let (status, _, body) = send("GET", &gw.url(path), None).await;
        assert_eq!(status, 200, "{body:?}");
    }
    let scrape = || async {
        let (status, body) = admin(gw.running.admin, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    };
    let count = |text: &str, needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    let before = scrape().await;
    assert!(count(&before, "route=\"rb\"") > 0, "{before}");
    assert!(
        count(&before, "route=\"ra\",call=\"c\",upstream=\"a\"") > 0,
        "{before}"
    );

    // Refused: nothing ends.
    gw.write("[upstreams.a]\nendpoints = [\"not a url\"]\n");
    let (status, _) = gw.reload(None).await;
    assert_ne!(status, 200);
    let refused = scrape().await;
    assert!(count(&refused, "route=\"rb\"") > 0, "{refused}");

    // rb goes; ra's call now goes to b.
    gw.write(&format!(
        "{upstreams}{}",
        one_call_route("ra", "/a", "b", "two")
    ));
    let (status, report) = gw.reload(None).await;
    assert_eq!(status, 200, "{report}");
    let (status, _, body) = send("GET", &gw.url("/a"), None).await;
    assert_eq!(status, 200, "{body:?}");
    let after = scrape().await;
    assert_eq!(count(&after, "route=\"rb\""), 0, "{after}");
    assert_eq!(
        count(&after, "route=\"ra\",call=\"c\",upstream=\"a\""),
        0,
        "{after}"
    );
    assert!(
        count(&after, "route=\"ra\",call=\"c\",upstream=\"b\"") > 0,
        "{after}"
    );
    assert!(
        after.contains("manifold_http_server_request_duration_seconds_count{route=\"ra\",status_class=\"2xx\"} 2"),
        "{after}"
    );
    gw.running.shutdown().await;
}
