//! `server.error_detail`: what a client learns of a failed call. `"full"` (the default) tells the
//! upstream, each attempt's endpoint and how it ended; `"brief"` tells the call and the kind of
//! failure only, for a listener open to clients who should not learn what is behind it.

use crate::support::*;
use serde_json::Value;

fn config(dead: &str) -> String {
    format!(
        r#"
[upstreams.orders]
endpoints = ["{dead}"]
[upstreams.recs]
endpoints = ["{dead}"]

[routes.page]
method = "GET"
path = "/page"
  [[routes.page.calls]]
  name = "recs"
  upstream = "recs"
  path = "/recs"
  optional = true
  [routes.page.response]
  body = {{ recs = "{{recs}}" }}

[routes.order]
method = "GET"
path = "/order"
  [[routes.order.calls]]
  name = "orders"
  upstream = "orders"
  path = "/orders"

[routes.files]
method = "GET"
path = "/files/{{*rest}}"
proxy = "recs"
"#
    )
}

/// A port nothing listens on.
fn dead_endpoint() -> String {
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = spare.local_addr().expect("addr");
    drop(spare);
    format!("http://{addr}")
}

/// `(partial header, /order's error, /files' error)`.
async fn answers(gw: &TestGateway) -> (String, Value, Value) {
    let (status, headers, _) = send("GET", &gw.url("/page"), None).await;
    assert_eq!(status, 200);
    let partial = headers["manifold-partial"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (status, _, order) = send("GET", &gw.url("/order"), None).await;
    assert_eq!(status, 502);
    let (status, _, files) = send("GET", &gw.url("/files/a"), None).await;
    assert_eq!(status, 502);
    (
        partial,
        json(&order)["error"].clone(),
        json(&files)["error"].clone(),
    )
}

#[tokio::test]
async fn brief_tells_the_call_and_the_kind_and_nothing_behind_the_gateway() {
    let dead = dead_endpoint();
    let port = dead.rsplit(':').next().expect("port").to_owned();

    let gw = TestGateway::start(&config(&dead)).await;
    let (partial, order, files) = answers(&gw).await;
    // The default: everything the upstream stack did.
    assert!(
        partial.starts_with("recs;kind=connect;upstream=\"recs\";endpoint="),
        "{partial}"
    );
    assert_eq!(order["upstream"], "orders");
    assert!(order["endpoint"]
        .as_str()
        .is_some_and(|e| e.contains(&port)));
    assert!(files["outcomes"].is_array());
    gw.shutdown().await;

    let gw = TestGateway::start_with_server("error_detail = \"brief\"", &config(&dead)).await;
    let (partial, order, files) = answers(&gw).await;
    assert_eq!(partial, "recs;kind=connect");
    assert_eq!(
        order,
        serde_json::json!({
            "kind": "connect",
            "route": "order",
            "call": "orders",
            "calls": ["orders"],
            "message": "the call's service could not be reached",
        })
    );
    assert_eq!(
        files,
        serde_json::json!({
            "kind": "connect",
            "message": "the call's service could not be reached",
        })
    );
    for text in [partial, order.to_string(), files.to_string()] {
        assert!(
            !text.contains(&port) && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
    gw.shutdown().await;
}

/// A URL that cannot be built once the upstream's base path is put in front of the client's
/// value (a value just short of the longest URI, made too long by the base path) is the
/// client's `bad_input`, whose message brief mode keeps: it must not name the upstream.
#[tokio::test]
async fn brief_names_no_upstream_when_the_clients_value_makes_its_url_too_long() {
    let base = format!("{}/internal-base/v1", dead_endpoint());
    let toml = format!(
        r#"
[upstreams.ledger_internal]
endpoints = ["{base}"]

[routes.lookup]
method = "POST"
path = "/lookup"
  [[routes.lookup.calls]]
  name = "lookup"
  upstream = "ledger_internal"
  path = "/items/{{request.body.id}}"
"#
    );
    // The rendered path fits in a URI (65,534 bytes); with the base path it does not.
    let id = "a".repeat(65_520);
    let body = serde_json::json!({ "id": id }).to_string();
    for detail in ["full", "brief"] {
        let server = format!("error_detail = \"{detail}\"\nmax_body_bytes = 1048576");
        let gw = TestGateway::start_with_server(&server, &toml).await;
        let (status, _, answer) = send("POST", &gw.url("/lookup"), Some(&body)).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
        let error = &json(&answer)["error"];
        assert_eq!(error["kind"], "bad_input", "{error}");
        if detail == "full" {
            // The upstream is in the trail, where `"full"` shows it.
            assert_eq!(error["upstream"], "ledger_internal", "{error}");
        } else {
            let text = error.to_string();
            assert!(
                !text.contains("ledger_internal") && !text.contains("internal-base"),
                "{text}"
            );
        }
        gw.shutdown().await;
    }
}
