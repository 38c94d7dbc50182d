//! `Via` on every request the gateway sends, and a loop back to the gateway answered 508 after
//! `server.loop_limit` passes instead of multiplying itself until the deadline.

use crate::support::*;
use crate::telemetry::{sample, scrape};
use serde_json::json;

/// A gateway on a fixed port (below the ephemeral range), so that its config can name itself.
fn own(port: u16) -> String {
    format!("listen = \"127.0.0.1:{port}\"")
}

fn loop_count(text: &str) -> Option<f64> {
    sample(
        text,
        "manifold_http_server_rejected_requests_total{reason=\"loop\"}",
    )
}

#[tokio::test]
async fn every_request_sent_upstream_carries_via_after_the_clients() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{0}"]
[routes.p]
path = "/p/{{*rest}}"
proxy = "u"
[routes.c]
path = "/c"
[[routes.c.calls]]
name = "a"
upstream = "u"
path = "/a"
"#,
        up.url()
    ))
    .await;
    let (status, _, _) = send_with("GET", &gw.url("/p/x"), &[("via", "1.0 fred")], None).await;
    assert_eq!(status, 200);
    let (status, _, _) = send_with("GET", &gw.url("/c"), &[("via", "1.0 fred")], None).await;
    assert_eq!(status, 200);
    let via = |path: &str| -> Vec<String> {
        up.find(path)
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .collect()
    };
    // A proxied request keeps the path it took, and so does a composed call (a new request,
    // but a loop through a composed route must count every pass).
    assert_eq!(via("/p/x"), ["1.0 fred", "1.1 manifold"]);
    assert_eq!(via("/a"), ["1.0 fred", "1.1 manifold"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_proxy_route_back_to_the_gateway_is_refused_after_loop_limit_passes() {
    let port = 23871;
    let gw = TestGateway::start_with_server(
        &own(port),
        &format!(
            r#"
[upstreams.self]
endpoints = ["http://127.0.0.1:{port}"]
timeout = "5s"
[routes.p]
path = "/p/{{*rest}}"
proxy = "self"
"#
        ),
    )
    .await;
    let (status, _, body) = send("GET", &gw.url("/p/x"), None).await;
    // The innermost pass answers 508; each proxy pass hands it back as it came.
    assert_eq!(status, 508, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["kind"], "loop");
    let text = scrape(&gw).await;
    assert_eq!(loop_count(&text), Some(1.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_composed_loop_stops_after_loop_limit_passes_however_it_fans_out() {
    let port = 23872;
    // Each pass calls the route twice: 1 + 2 requests pass, the 4 after them are refused.
    let gw = TestGateway::start_with_server(
        &format!("{}\nloop_limit = 2", own(port)),
        &format!(
            r#"
[upstreams.self]
endpoints = ["http://127.0.0.1:{port}"]
timeout = "5s"
[routes.c]
path = "/c"
[[routes.c.calls]]
name = "a"
upstream = "self"
path = "/c"
[[routes.c.calls]]
name = "b"
upstream = "self"
path = "/c"
"#
        ),
    )
    .await;
    let (status, _, body) = send("GET", &gw.url("/c"), None).await;
    // A required call failed (its upstream answered 502, the pass under it 508): not a timeout.
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let text = scrape(&gw).await;
    assert_eq!(loop_count(&text), Some(4.0), "{text}");
    // The client's request and the two of the second pass; the refused four are 508s of no route.
    let served = sample(
        &text,
        "manifold_http_server_request_duration_seconds_count{route=\"c\",status_class=\"5xx\"}",
    );
    assert_eq!(served, Some(3.0), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_that_already_came_round_is_refused_before_routing() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({"ok": true})))]).await;
    let gw = TestGateway::start_with_server(
        "loop_limit = 1",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.p]\npath = \"/p/{{*rest}}\"\nproxy = \"u\"\n",
            up.url()
        ),
    )
    .await;
    for (via, want) in [
        ("1.1 nginx", 200),
        ("1.1 manifold", 508),
        ("2 Manifold (x)", 508),
        ("1.1 lb, 1.1 manifold", 508),
        ("1.1 manifolds", 200),
    ] {
        let (status, headers, _) = send_with("GET", &gw.url("/p/x"), &[("via", via)], None).await;
        assert_eq!(status, want, "{via}");
        assert!(headers.contains_key("x-request-id"), "{via}: {headers:?}");
    }
    // Before routing: a path no route serves is refused the same way.
    let (status, _, _) =
        send_with("GET", &gw.url("/nowhere"), &[("via", "1.1 manifold")], None).await;
    assert_eq!(status, 508);
    assert_eq!(up.requests().len(), 2);
    gw.shutdown().await;
}
