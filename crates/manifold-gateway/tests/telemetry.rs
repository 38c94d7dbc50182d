//! Telemetry end to end: a client's `traceparent` in, one SERVER span its child, one CLIENT span
//! per attempt the SERVER span's child, each upstream request naming its CLIENT span; spans
//! exported as OTLP/HTTP protobuf (decoded here with the reference `opentelemetry-proto` types);
//! a down collector costs no request; `/metrics` passes `promtool check metrics` under load.

use crate::promtool;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CLIENT_SPAN: &str = "00f067aa0ba902b7";

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// Two calls, the second reading the first: `a` then `b`.
fn config(up: &Upstream, telemetry: &str) -> String {
    format!(
        r#"
[telemetry]
{telemetry}

[upstreams.svc]
endpoints = ["{}"]

[routes.pair]
method = "GET"
path = "/pair"

  [[routes.pair.calls]]
  name = "a"
  upstream = "svc"
  path = "/a"

  [[routes.pair.calls]]
  name = "b"
  upstream = "svc"
  path = "/b/{{a.id}}"

  [routes.pair.response]
  body = {{ a = "{{a}}", b = "{{b}}" }}
"#,
        up.url()
    )
}

fn services() -> Vec<(&'static str, &'static str, Reply)> {
    vec![
        ("GET", "/a", Reply::json(2, json!({"id": 7}))),
        ("GET", "/b/", Reply::json(2, json!({"ok": true}))),
    ]
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> (http::StatusCode, http::HeaderMap) {
    let mut b = Request::builder().method("GET").uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("answer");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let _ = resp.into_body().collect().await;
    (status, headers)
}

pub(crate) async fn scrape(gw: &TestGateway) -> String {
    let (status, _, body) = send("GET", &format!("http://{}/metrics", gw.admin), None).await;
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

/// Every span the collector got so far.
pub(crate) fn spans(collector: &Upstream) -> Vec<Span> {
    collector
        .requests()
        .iter()
        .filter(|r| r.path_and_query == "/v1/traces")
        .flat_map(|r| {
            let req = ExportTraceServiceRequest::decode(r.body.clone()).expect("OTLP protobuf");
            req.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn a_client_traceparent_is_the_parent_of_the_server_span_and_each_attempt_is_its_child() {
    let up = Upstream::start(services()).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let telemetry = format!(
        "service_name = \"gw-test\"\notlp = {{ endpoint = \"{}\" }}",
        collector.url()
    );
    let gw = TestGateway::start(&config(&up, &telemetry)).await;
    let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (status, headers) = get_with(
        &gw.url("/pair"),
        &[
            ("traceparent", &tp),
            ("tracestate", "vendor=x"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "req-42");

    // The exporter flushes within a second; wait for the request's three spans (bounded).
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans(&collector);
        if got.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 3, "one SERVER and two CLIENT spans: {got:#?}");
    assert!(
        got.iter().all(|s| hex(&s.trace_id) == TRACE_ID),
        "one trace: the client's"
    );
    let server: Vec<&Span> = got
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1);
    let server = server[0];
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    let sa = attrs(server);
    assert_eq!(sa["http.request.method"], "GET");
    assert_eq!(sa["http.route"], "/pair");
    assert_eq!(sa["url.path"], "/pair");
    assert_eq!(sa["http.response.status_code"], "200");
    assert_eq!(sa["manifold.request_id"], "req-42");
    assert_eq!(server.trace_state, "vendor=x");

    let calls: Vec<&Span> = got
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(calls.len(), 2);
    let seen = up.requests();
    for call in &calls {
        assert_eq!(
            call.parent_span_id, server.span_id,
            "a CLIENT span is the SERVER span's child"
        );
        let a = attrs(call);
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["server.address"], "127.0.0.1");
        assert_eq!(a["server.port"], up.addr.expect("addr").port().to_string());
        assert_eq!(a["http.response.status_code"], "200");
        assert_eq!(a["manifold.upstream"], "svc");
        assert_eq!(a["manifold.attempt"], "1");
        assert_eq!(a["manifold.attempt.kind"], "first");
        let path = if call.name == "a" { "/a" } else { "/b/7" };
        assert_eq!(a["url.path"], path);
        // The upstream's request names this very span as its parent.
        let req = seen
            .iter()
            .find(|r| r.path_and_query == path)
            .expect("the upstream saw the call");
        let sent = req.headers["traceparent"].to_str().expect("ASCII");
        assert_eq!(sent, format!("00-{TRACE_ID}-{}-01", hex(&call.span_id)));
        assert_eq!(req.headers["tracestate"], "vendor=x");
        assert_eq!(req.headers["x-request-id"], "req-42");
    }
    let mut names: Vec<&str> = calls.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace_and_an_id_is_made_up() {
    let up = Upstream::start(services()).await;
    let gw = TestGateway::start(&config(&up, "")).await;
    let (status, headers) = get_with(
        &gw.url("/pair"),
        &[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "forged cause=x"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let id = headers["x-request-id"].to_str().expect("ASCII").to_owned();
    assert_eq!(
        id.len(),
        32,
        "the trace id stands in for a refused request id: {id}"
    );
    for r in up.requests() {
        let tp = r.headers["traceparent"].to_str().expect("ASCII");
        assert!(
            tp.starts_with(&format!("00-{id}-")),
            "{tp} is in the new trace {id}"
        );
        assert_eq!(r.headers["x-request-id"], id.as_str());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_down_collector_costs_no_request_and_its_drops_are_counted() {
    let up = Upstream::start(services()).await;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let telemetry = format!("otlp = {{ endpoint = \"http://{addr}\", timeout = \"1s\" }}");
    let gw = TestGateway::start(&config(&up, &telemetry)).await;
    for _ in 0..20 {
        let (status, _, _) = send("GET", &gw.url("/pair"), None).await;
        assert_eq!(status, 200);
    }
    let mut dropped = 0.0;
    for _ in 0..100 {
        let text = scrape(&gw).await;
        dropped = text
            .lines()
            .find(|l| {
                l.starts_with("manifold_telemetry_spans_dropped_total{reason=\"export_failed\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 60.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped >= 60.0,
        "20 requests × 3 spans dropped, got {dropped}"
    );
    gw.shutdown().await;
}

/// The value of the first sample line starting with `prefix`.
pub(crate) fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_under_load_pass_promtool_and_only_grow() {
    if !promtool::available() {
        return;
    }
    let up = Upstream::start(services()).await;
    let gw = TestGateway::start(&config(&up, "sample_ratio = 0.5")).await;
    let url = gw.url("/pair");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let (status, _, _) = send("GET", &url, None).await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = scrape(&gw).await;
    for l in load {
        l.await.expect("load task");
    }
    let after = scrape(&gw).await;
    for text in [&during, &after] {
        promtool::assert_passes(text);
    }
    let count =
        "manifold_http_server_request_duration_seconds_count{route=\"pair\",status_class=\"2xx\"}";
    assert_eq!(sample(&after, count), Some(200.0), "{after}");
    assert!(sample(&during, count).unwrap_or(0.0) <= 200.0);
    let calls = "manifold_calls_total{route=\"pair\",call=\"b\",upstream=\"svc\",outcome=\"ok\"}";
    assert_eq!(sample(&after, calls), Some(200.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "manifold_http_server_active_requests{route=\"pair\"}"
        ),
        Some(0.0)
    );
    // Every endpoint's breaker state and balancer cost.
    let endpoint = format!("127.0.0.1:{}", up.addr.expect("addr").port());
    assert_eq!(
        sample(
            &after,
            &format!("manifold_upstream_breaker_state{{upstream=\"svc\",endpoint=\"{endpoint}\",state=\"closed\"}}")
        ),
        Some(1.0),
        "{after}"
    );
    let cost = sample(
        &after,
        &format!("manifold_upstream_balancer_cost{{upstream=\"svc\",endpoint=\"{endpoint}\"}}"),
    )
    .expect("a balancer cost");
    assert!(cost > 0.0 && cost < 1.0, "{cost} s");
    // Buckets are cumulative.
    let buckets: Vec<f64> = after
        .lines()
        .filter(|l| {
            l.starts_with("manifold_http_server_request_duration_seconds_bucket{route=\"pair\",status_class=\"2xx\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        buckets.len() > 5 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{buckets:?}"
    );
    // OpenMetrics on request, with exemplars naming sampled traces.
    let resp = client()
        .request(
            Request::get(format!("http://{}/metrics", gw.admin))
                .header("accept", "application/openmetrics-text; version=1.0.0")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("scrape");
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .starts_with("application/openmetrics-text"));
    let om = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("UTF-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("trace_id="), "an exemplar: {om}");
    gw.shutdown().await;
}

/// 404 and 405 are recorded too: counted by reason, a SERVER span without `http.route` named
/// by the method, and an `X-Request-Id` on the answer.
#[tokio::test]
async fn requests_no_route_takes_are_counted_and_traced_without_a_route() {
    let up = Upstream::start(services()).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let telemetry = format!("otlp = {{ endpoint = \"{}\" }}", collector.url());
    let gw = TestGateway::start(&config(&up, &telemetry)).await;
    let tp = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (status, headers) = get_with(&gw.url("/nowhere"), &[("traceparent", &tp)]).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    let (status, _, _) = send("POST", &gw.url("/pair"), Some("{}")).await;
    assert_eq!(status, 405);
    let text = scrape(&gw).await;
    for (reason, n) in [("no_route", 1.0), ("method_not_allowed", 1.0)] {
        let name = format!("manifold_http_server_rejected_requests_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), Some(n), "{text}");
    }
    if promtool::available() {
        promtool::assert_passes(&text);
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans(&collector);
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        got.len(),
        2,
        "one SERVER span per rejected request: {got:?}"
    );
    let not_found = got
        .iter()
        .find(|s| attrs(s).get("url.path").map(String::as_str) == Some("/nowhere"))
        .expect("the 404's span");
    assert_eq!(not_found.name, "GET");
    assert_eq!(not_found.kind, SpanKind::Server as i32);
    assert_eq!(hex(&not_found.trace_id), TRACE_ID, "the client's trace");
    let a = attrs(not_found);
    assert_eq!(
        a.get("http.response.status_code").map(String::as_str),
        Some("404")
    );
    assert!(!a.contains_key("http.route"), "{a:?}");
    let wrong_method = got
        .iter()
        .find(|s| s.name == "POST")
        .expect("the 405's span");
    assert_eq!(
        attrs(wrong_method)
            .get("http.response.status_code")
            .map(String::as_str),
        Some("405")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_off_answers_404_and_tracing_off_sends_no_traceparent() {
    let up = Upstream::start(services()).await;
    let gw = TestGateway::start(&config(&up, "metrics = false\ntracing = false")).await;
    let (status, _, _) = send("GET", &gw.url("/pair"), None).await;
    assert_eq!(status, 200);
    for r in up.requests() {
        assert!(!r.headers.contains_key("traceparent"));
    }
    let (status, _, _) = send("GET", &format!("http://{}/metrics", gw.admin), None).await;
    assert_eq!(status, 404);
    gw.shutdown().await;
}

/// Metrics only (`tracing = false`): no spans, so no `CallTrace` rides down to the attempts,
/// yet every answer still has an `X-Request-Id` and every upstream request the same one, on a
/// composed route (given to each call's request when it is built) and on a proxy route (given
/// to the forwarded request by its attempt), the client's when it sent a plain one.
#[tokio::test]
async fn metrics_only_still_gives_every_answer_and_upstream_request_the_request_id() {
    let up = Upstream::start(services()).await;
    let mut toml = config(&up, "metrics = true\ntracing = false");
    toml.push_str("\n[routes.raw]\nmethod = \"GET\"\npath = \"/a\"\nproxy = \"svc\"\n");
    let gw = TestGateway::start(&toml).await;
    let mut seen = 0;
    let mut ids = Vec::new();
    for (path, client_id, calls) in [
        ("/pair", None, 2),
        ("/a", None, 1),
        ("/pair", Some("client-7"), 2),
        ("/a", Some("client-8"), 1),
    ] {
        let headers: Vec<(&str, &str)> =
            client_id.map(|c| ("x-request-id", c)).into_iter().collect();
        let (status, answer) = get_with(&gw.url(path), &headers).await;
        assert_eq!(status, 200, "{path}");
        let id = answer["x-request-id"].to_str().expect("ASCII").to_owned();
        match client_id {
            Some(c) => assert_eq!(id, c),
            None => {
                let (prefix, n) = id.split_once('-').expect("prefix-counter");
                assert_eq!(prefix.len(), 16, "{id}");
                assert!(u64::from_str_radix(n, 16).is_ok(), "{id}");
            }
        }
        let got = up.requests();
        assert_eq!(got.len(), seen + calls, "{path}");
        for r in &got[seen..] {
            assert_eq!(r.headers["x-request-id"], id.as_str(), "{path}");
            assert!(!r.headers.contains_key("traceparent"));
        }
        seen = got.len();
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "made-up ids differ");
    gw.shutdown().await;
}
