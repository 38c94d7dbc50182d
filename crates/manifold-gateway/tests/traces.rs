//! The live trace store end to end: the checkout DAG against the simulated shop (order 150 ms,
//! payment 200, inventory 100, shipping 250, confirm 50), its critical path and slack from
//! `GET /traces/{id}`, the Jaeger export read by the analyzer with the same shares, a client's
//! slow upload accounted to the client, and every hostile query value refused or clamped.

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use manifold_sim::{RunningSim, Sim, SimConfig};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str =
    r#"{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}"#;

/// order → payment ∥ inventory ∥ shipping → confirm: the path is order → shipping → confirm,
/// payment could end 50 ms later and inventory 150 ms later without delaying the answer.
pub(crate) fn checkout(sim: &RunningSim, telemetry: &str) -> String {
    let url = |s: &str| sim.url(s).expect("the shop has it");
    format!(
        r#"
[telemetry]
{telemetry}

[upstreams.order]
endpoints = ["{order}"]
[upstreams.payment]
endpoints = ["{payment}"]
[upstreams.inventory]
endpoints = ["{inventory}"]
[upstreams.shipping]
endpoints = ["{shipping}"]

[routes.checkout]
method = "POST"
path = "/checkout"
deadline = "5s"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  body = "{{request.body}}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}" }}
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}", items = "{{request.body.items}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory", "shipping"]
  [routes.checkout.response]
  status = 201
  body = {{ order = "{{confirm}}", payment = "{{payment.status}}", shipping = "{{shipping}}" }}

[routes.echo]
method = "GET"
path = "/echo"
proxy = "order"
"#,
        order = url("order"),
        payment = url("payment"),
        inventory = url("inventory"),
        shipping = url("shipping"),
    )
}

/// POST /checkout with this trace id; the answer's status.
pub(crate) async fn buy(gw: &TestGateway, trace_id: &str) -> http::StatusCode {
    let req = Request::builder()
        .method("POST")
        .uri(gw.url("/checkout"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

pub(crate) fn trace_id(n: u32) -> String {
    format!("4bf92f3577b34da6a3ce929d{n:08x}")
}

async fn admin(gw: &TestGateway, path: &str) -> (http::StatusCode, Value) {
    let (s, _, b) = send("GET", &format!("http://{}{path}", gw.admin), None).await;
    (s, json(&b))
}

fn call<'a>(detail: &'a Value, name: &str) -> &'a Value {
    detail["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no call {name} in {detail:#}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Critical-path shares by the store's accounting, keyed `service:operation` as the analyzer
/// names them (the root is `manifold:{method} {route template}`, the client's body wait
/// `manifold:client request body`).
pub(crate) fn store_shares(details: &[Value]) -> HashMap<String, f64> {
    let mut ms: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for d in details {
        total += f(&d["duration_ms"]);
        *ms.entry("manifold:POST /checkout".into()).or_default() += f(&d["manifold"]["total_ms"]);
        *ms.entry("manifold:client request body".into()).or_default() += f(&d["client_ms"]);
        for c in d["calls"].as_array().unwrap() {
            let key = format!(
                "{}:{}",
                c["upstream"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            );
            *ms.entry(key).or_default() += f(&c["critical_ms"]);
        }
    }
    ms.into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| (k, v / total))
        .collect()
}

/// The analyzer's shares on a Jaeger document, as `manifold analyze` computes them.
pub(crate) fn analyzer_shares(jaeger: &[u8]) -> HashMap<String, f64> {
    use manifold_trace::analysis::{Analyzer, Options};
    let mut an = Analyzer::new(Options::default());
    let mut interner = std::mem::take(&mut an.interner);
    let mut warnings = std::mem::take(&mut an.warnings);
    let raws = manifold_trace::read::read_bytes(jaeger, &mut interner, &mut warnings)
        .expect("the analyzer reads the export");
    an.interner = interner;
    an.warnings = warnings;
    for r in raws {
        an.add_raw(r);
    }
    assert_eq!(an.warnings.total(), 0, "{:?}", an.warnings);
    let total: i128 = an.ops.values().map(|a| a.critical_total).sum();
    an.ops
        .iter()
        .filter(|(_, a)| a.critical_total > 0)
        .map(|((s, o), a)| {
            (
                format!("{}:{}", an.interner.name(*s), an.interner.name(*o)),
                a.critical_total as f64 / total as f64,
            )
        })
        .collect()
}

pub(crate) fn assert_shares_agree(store: &HashMap<String, f64>, analyzer: &HashMap<String, f64>) {
    let keys: std::collections::BTreeSet<&String> = store.keys().chain(analyzer.keys()).collect();
    for k in keys {
        let (a, b) = (
            store.get(k).copied().unwrap_or(0.0),
            analyzer.get(k).copied().unwrap_or(0.0),
        );
        assert!(
            (a - b).abs() <= 0.01,
            "{k}: store {a:.4}, analyzer {b:.4}\nstore {store:?}\nanalyzer {analyzer:?}"
        );
    }
}

#[tokio::test]
async fn the_checkout_path_is_order_shipping_confirm_with_slack_for_payment_and_inventory() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let gw = TestGateway::start(&checkout(&sim, "")).await;
    let id = trace_id(1);
    assert_eq!(buy(&gw, &id).await, 201);

    let (s, d) = admin(&gw, &format!("/traces/{id}")).await;
    assert_eq!(s, 200, "{d:#}");
    assert_eq!(d["trace_id"], id.as_str());
    assert_eq!(d["route"], "checkout");
    assert_eq!(d["status"], 201);
    assert_eq!(
        d["critical_path"],
        serde_json::json!(["order", "shipping", "confirm"])
    );
    // Real sockets on a shared, loaded machine (the sim's timers and the gateway's scheduling
    // jitter by a few ms, 2-4 ms seen at a load average of 19): the service times are exact,
    // so the slack is 50 and 150 ms give or take that jitter. 25 ms still tells them apart
    // from each other and from the path's 0.
    let slack = |c: &str| f(&call(&d, c)["slack_ms"]);
    assert!((slack("payment") - 50.0).abs() < 25.0, "{d:#}");
    assert!((slack("inventory") - 150.0).abs() < 25.0, "{d:#}");
    for c in ["order", "shipping", "confirm"] {
        assert_eq!(slack(c), 0.0, "{c}");
        assert_eq!(call(&d, c)["on_path"], true);
    }
    for c in ["payment", "inventory"] {
        assert_eq!(call(&d, c)["on_path"], false);
        assert_eq!(f(&call(&d, c)["critical_ms"]), 0.0);
    }
    // Each call's waterfall data.
    let ship = call(&d, "shipping");
    assert_eq!(ship["attempts"], 1);
    assert_eq!(ship["upstream"], "shipping");
    assert_eq!(ship["status"], 201);
    assert!(ship["endpoint"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f(&ship["duration_ms"]) >= 250.0);
    assert!(f(&ship["first_byte_ms"]) >= f(&ship["started_ms"]));
    assert_eq!(
        f(&ship["ready_ms"]),
        f(&call(&d, "order")["ended_ms"]),
        "shipping is ready when order ends"
    );
    assert_eq!(ship["spans"].as_array().unwrap().len(), 1);
    // Manifold's own time: the three parts add up, and with the path they make the request.
    let m = &d["manifold"];
    let parts = f(&m["before_ms"]) + f(&m["between_ms"]) + f(&m["after_ms"]);
    assert!((parts - f(&m["total_ms"])).abs() < 1e-6);
    let on_path: f64 = ["order", "shipping", "confirm"]
        .iter()
        .map(|c| f(&call(&d, c)["critical_ms"]))
        .sum();
    assert!(
        (on_path + f(&m["total_ms"]) - f(&d["duration_ms"])).abs() < 1e-3,
        "{d:#}"
    );
    assert!(f(&m["total_ms"]) < 0.1 * f(&d["duration_ms"]), "{d:#}");
    // The sections tile the request in time order.
    let sections = d["sections"].as_array().unwrap();
    let named: Vec<&str> = sections.iter().filter_map(|s| s["call"].as_str()).collect();
    assert_eq!(named, vec!["order", "shipping", "confirm"]);

    // The list, filtered.
    let (s, l) = admin(&gw, "/traces?route=checkout&min_ms=400&limit=5").await;
    assert_eq!(s, 200);
    assert_eq!(l["count"], 1);
    assert_eq!(l["traces"][0]["trace_id"], id.as_str());
    assert_eq!(
        l["traces"][0]["critical_path"],
        serde_json::json!(["order", "shipping", "confirm"])
    );
    let (_, l) = admin(&gw, "/traces?min_ms=10000").await;
    assert_eq!(l["count"], 0);
    let (_, l) = admin(&gw, "/traces?errors=true").await;
    assert_eq!(l["count"], 0);

    // The Jaeger export, read by the analyzer: the same shares.
    let (s, _, jaeger) = send(
        "GET",
        &format!("http://{}/traces?format=jaeger", gw.admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(json(&jaeger)["data"].as_array().unwrap().len(), 1);
    let theirs = analyzer_shares(&jaeger);
    let ours = store_shares(&[d]);
    assert_shares_agree(&ours, &theirs);
    assert!(theirs["shipping:shipping"] > theirs["order:order"]);

    gw.shutdown().await;
    sim.shutdown().await;
}

/// A client that sends its body slowly: the head of a composed POST at once, its body in four
/// parts 200 ms apart (a raw socket, `Content-Length`). The route reads the body before its
/// first call, so that wait is the client's: `client_ms`, not `manifold_ms` (which was 2,112
/// of 2,115 ms for a body sent a byte every 300 ms).
#[tokio::test]
async fn a_slow_upload_is_the_clients_time_not_manifolds() {
    const PARTS: usize = 4;
    const PAUSE: Duration = Duration::from_millis(200);
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let gw = TestGateway::start(&checkout(&sim, "")).await;
    let id = trace_id(3);
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /checkout HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ntraceparent: 00-{id}-00f067aa0ba902b7-01\r\n\
         connection: close\r\n\r\n",
        BODY.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let parts = BODY.as_bytes().chunks(BODY.len().div_ceil(PARTS));
    assert_eq!(parts.len(), PARTS);
    for part in parts {
        tokio::time::sleep(PAUSE).await;
        s.write_all(part).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let (s, d) = admin(&gw, &format!("/traces/{id}")).await;
    assert_eq!(s, 200, "{d:#}");
    let (client, duration) = (f(&d["client_ms"]), f(&d["duration_ms"]));
    // Manifold's own is what it was for a body sent with its head: a small part of the request.
    assert!(f(&d["manifold_ms"]) < 0.1 * duration, "{d:#}");
    // The client's is at least most of the pauses (the reader starts waiting a moment after
    // the head).
    let paused = (PAUSE * PARTS as u32).as_secs_f64() * 1e3;
    assert!(client >= 0.75 * paused, "client_ms {client}: {d:#}");
    assert!(f(&d["manifold"]["before_ms"]) < 0.1 * duration, "{d:#}");
    assert!(
        f(&call(&d, "order")["queued_ms"]) < 0.1 * duration,
        "order was ready when the body was: {d:#}"
    );
    // The client, Manifold and the path make the request; the waterfall starts with the client.
    let on_path: f64 = ["order", "shipping", "confirm"]
        .iter()
        .map(|c| f(&call(&d, c)["critical_ms"]))
        .sum();
    assert!(
        (client + f(&d["manifold"]["total_ms"]) + on_path - duration).abs() < 1e-3,
        "{d:#}"
    );
    let first = &d["sections"][0];
    assert_eq!(
        (&first["client"], &first["call"]),
        (&Value::Bool(true), &Value::Null),
        "{d:#}"
    );
    assert!((f(&first["end_ms"]) - client).abs() < 1e-3, "{d:#}");
    // The summary says so too.
    let (_, l) = admin(&gw, "/traces?route=checkout").await;
    assert_eq!(l["traces"][0]["client_ms"], d["client_ms"]);

    // The Jaeger export: the analyzer counts the wait as the client's body, not the root's own.
    let (s, _, jaeger) = send(
        "GET",
        &format!("http://{}/traces/{id}?format=jaeger", gw.admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let theirs = analyzer_shares(&jaeger);
    assert_shares_agree(&store_shares(&[d]), &theirs);
    assert!(theirs["manifold:client request body"] > theirs["manifold:POST /checkout"]);

    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn hostile_queries_get_a_400_naming_the_parameter() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    // No admin token (with one, /traces needs it: `admin::mutating_admin_endpoints_need_the_bearer_token`).
    let gw = TestGateway::start(&checkout(&sim, "traces = { recent = 3 }")).await;
    let id = trace_id(2);
    assert_eq!(buy(&gw, &id).await, 201);
    for (q, param) in [
        ("/traces?limit=-1", "limit"),
        ("/traces?limit=0", "limit"),
        ("/traces?limit=1e3", "limit"),
        ("/traces?limit=", "limit"),
        ("/traces?min_ms=-5", "min_ms"),
        ("/traces?min_ms=nan", "min_ms"),
        ("/traces?min_ms=inf", "min_ms"),
        ("/traces?min_ms=1e300", "min_ms"),
        ("/traces?errors=maybe", "errors"),
        ("/traces?route=nope", "route"),
        ("/traces?route=checkout&route=echo", "route"),
        ("/traces?format=zipkin", "format"),
        ("/traces?evil=%00%ff", "query"),
        ("/traces/xyz", "trace_id"),
        ("/traces/00000000000000000000000000000000", "trace_id"),
        ("/traces/4bf92f3577b34da6a3ce929d0000000g", "trace_id"),
        ("/traces/4bf92f3577b34da6a3ce929d00000002/more", "trace_id"),
        ("/traces/4bf92f3577b34da6a3ce929d00000002?limit=3", "route"),
    ] {
        let (s, b) = admin(&gw, q).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(b["error"]["parameter"], param, "{q}: {b}");
    }
    let long = format!("/traces/{}", "a".repeat(5000));
    let (s, b) = admin(&gw, &long).await;
    assert_eq!(s, 400);
    assert!(b.to_string().len() < 300, "the id is not echoed: {b}");
    // A limit past the maximum is cut to it, not refused.
    let (s, b) = admin(&gw, "/traces?limit=99999999999999999999999999").await;
    assert_eq!((s, b["count"].as_u64()), (http::StatusCode::OK, Some(1)));
    // Unknown but well formed: 404. Upper case hex is the same id.
    let (s, _) = admin(&gw, &format!("/traces/{}", trace_id(9))).await;
    assert_eq!(s, 404);
    let (s, b) = admin(&gw, &format!("/traces/{}", id.to_uppercase())).await;
    assert_eq!(
        (s, &b["trace_id"]),
        (http::StatusCode::OK, &Value::from(id.as_str()))
    );
    // Read-only: a write is refused.
    let (s, _, _) = send("DELETE", &format!("http://{}/traces", gw.admin), None).await;
    assert_eq!(s, 405);
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_ring_bounds_what_the_gateway_keeps_and_false_turns_it_off() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let gw = TestGateway::start(&checkout(
        &sim,
        "traces = { recent = 2, slowest = 0, max_errors = 0 }",
    ))
    .await;
    for n in 10..14 {
        assert_eq!(buy(&gw, &trace_id(n)).await, 201);
    }
    let (_, l) = admin(&gw, "/traces").await;
    let ids: Vec<&str> = l["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![trace_id(13), trace_id(12)]);
    gw.shutdown().await;

    let off = TestGateway::start(&checkout(&sim, "traces = false")).await;
    assert_eq!(buy(&off, &trace_id(20)).await, 201);
    let (s, b) = admin(&off, "/traces").await;
    assert_eq!(s, 404, "{b}");
    off.shutdown().await;
    sim.shutdown().await;
}
