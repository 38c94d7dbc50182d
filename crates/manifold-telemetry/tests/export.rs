//! The exporter against real loopback receivers: what a collector gets, what an upstream gets,
//! and what a down or slow collector costs (nothing but counted drops).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_telemetry::context::TraceParent;
use manifold_telemetry::otlp::{self, OtlpOptions, ResourceInfo};
use manifold_telemetry::{
    CacheOutcome, CallOutcome, DropReason, Endpoint, Incoming, ServerOutcome, SpanStats, Tracer,
    TracingOptions,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::spans::{call, root, CLIENT_TP};
use crate::support::{python, python_has, receiver, tool_available, Answer, Captured};

fn options(addr: std::net::SocketAddr) -> OtlpOptions {
    OtlpOptions {
        timeout: Duration::from_millis(500),
        flush_interval: Duration::from_millis(20),
        ..OtlpOptions::new(format!("http://{addr}"))
    }
}

fn attrs(span: &Span) -> HashMap<&str, &Value> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_ref()?.value.as_ref()?)))
        .collect()
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

/// One request with two calls to a real upstream, exported to a real receiver. Returns the
/// collector's capture and what the upstream saw.
async fn one_exported_request() -> (Captured, Vec<Captured>, Arc<SpanStats>) {
    let (collector, mut collected) = receiver(Answer::Ok).await;
    let (upstream, mut upstream_seen) = receiver(Answer::Ok).await;
    let stats = Arc::new(SpanStats::default());
    let resource = ResourceInfo {
        service_name: "manifold-test".to_owned(),
    };
    let (sink, task) =
        otlp::spawn(&options(collector), resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");

    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(CLIENT_TP));
    let trace = tracer.start(Incoming::from_headers(&headers), root("/checkout"));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for (name, status) in [("order", 200u16), ("payment", 503)] {
        let endpoint = Endpoint {
            address: Arc::from("127.0.0.1"),
            port: upstream.port(),
            https: false,
        };
        let mut span = trace.start_call(call(name, Some(endpoint)));
        let req = Request::get(format!("http://{upstream}/{name}"))
            .header("traceparent", span.traceparent())
            .header("x-request-id", trace.request_id().as_str())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = client.request(req).await.expect("upstream answers");
        span.first_byte();
        assert_eq!(resp.status(), 200);
        span.end(CallOutcome {
            status: Some(status),
            cache: (name == "order").then_some(CacheOutcome::Miss),
            ..CallOutcome::default()
        });
    }
    trace.end(ServerOutcome {
        status: 200,
        response_bytes: 42,
        partial: vec![Arc::from("payment")],
        error_type: None,
        client_wait: Duration::ZERO,
    });
    task.shutdown(Duration::from_secs(5)).await;
    let captured = tokio::time::timeout(Duration::from_secs(5), collected.recv())
        .await
        .expect("the collector got a request in time")
        .expect("a request");
    let mut seen = Vec::new();
    while let Ok(c) = upstream_seen.try_recv() {
        seen.push(c);
    }
    (captured, seen, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_gets_one_trace_linked_to_the_client_and_the_upstreams() {
    let (captured, upstream_seen, stats) = one_exported_request().await;
    assert_eq!(captured.path, "/v1/traces");
    assert_eq!(
        captured.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/x-protobuf"[..])
    );
    let req = ExportTraceServiceRequest::decode(captured.body.clone()).expect("protobuf");
    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().expect("resource");
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().and_then(|v| v.value.clone()) == Some(s("manifold-test"))));
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 3);

    let client_tp = TraceParent::parse(CLIENT_TP.as_bytes()).expect("valid");
    assert!(
        spans.iter().all(|s| s.trace_id == client_tp.trace_id.0),
        "one trace, the client's"
    );
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a SERVER span");
    assert_eq!(
        server.parent_span_id, client_tp.parent_id.0,
        "the client's child"
    );
    assert_eq!(server.name, "POST /checkout");
    assert_eq!(server.flags & 0x301, 0x301, "sampled, parent is remote");
    let a = attrs(server);
    assert_eq!(a["http.request.method"], &s("POST"));
    assert_eq!(a["http.route"], &s("/checkout"));
    assert_eq!(a["url.path"], &s("/checkout"));
    assert_eq!(a["http.response.status_code"], &Value::IntValue(200));
    assert_eq!(a["http.response.body.size"], &Value::IntValue(42));
    assert!(a.contains_key("manifold.partial_calls"));
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Unset as i32)
    );

    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(clients.len(), 2);
    for c in &clients {
        assert_eq!(
            c.parent_span_id, server.span_id,
            "each CLIENT span is the SERVER span's child"
        );
        assert!(c.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(c.end_time_unix_nano <= server.end_time_unix_nano);
        let a = attrs(c);
        assert_eq!(a["server.address"], &s("127.0.0.1"));
        assert!(matches!(a["server.port"], Value::IntValue(p) if *p > 0));
        assert_eq!(a["http.request.method"], &s("GET"));
        assert_eq!(a["manifold.attempt"], &Value::IntValue(1));
        assert_eq!(a["manifold.attempt.kind"], &s("first"));
        let seen = upstream_seen
            .iter()
            .find(|u| {
                Some(&u.path)
                    == a.get("url.path").and_then(|v| match v {
                        Value::StringValue(p) => Some(p),
                        _ => None,
                    })
            })
            .expect("the upstream got this call");
        let tp = TraceParent::parse(
            seen.headers
                .get("traceparent")
                .expect("traceparent sent")
                .as_bytes(),
        )
        .expect("valid traceparent");
        assert_eq!(
            tp.parent_id.0.to_vec(),
            c.span_id,
            "the upstream's traceparent names this CLIENT span"
        );
        assert_eq!(tp.trace_id, client_tp.trace_id);
    }
    let payment = clients
        .iter()
        .find(|c| c.name == "payment")
        .expect("payment");
    assert_eq!(
        payment.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "5xx = error"
    );
    assert_eq!(attrs(payment)["error.type"], &s("503"));
    let order = clients.iter().find(|c| c.name == "order").expect("order");
    assert_eq!(attrs(order)["manifold.cache.outcome"], &s("miss"));
    assert_eq!(
        order.status.as_ref().map(|s| s.code),
        Some(StatusCode::Unset as i32)
    );
    assert_eq!(stats.exported_total(), 3);
}

/// The same bytes, decoded by the official Python package: a consumer that is not ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_opentelemetry_proto_decodes_the_same_bytes() {
    let module = "opentelemetry.proto.collector.trace.v1.trace_service_pb2";
    if !tool_available(
        "the Python package opentelemetry-proto (pip)",
        python_has(module),
    ) {
        return;
    }
    let (captured, _, _) = one_exported_request().await;
    let dir = std::env::temp_dir().join(format!("manifold-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("export.pb");
    std::fs::write(&file, &captured.body).expect("write");
    let script = r#"
import json, sys
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
req = ExportTraceServiceRequest()
req.ParseFromString(open(sys.argv[1], 'rb').read())
out = []
for rs in req.resource_spans:
    svc = [a.value.string_value for a in rs.resource.attributes if a.key == 'service.name']
    for ss in rs.scope_spans:
        for s in ss.spans:
            out.append({
                'service': svc[0] if svc else None,
                'trace_id': s.trace_id.hex(), 'span_id': s.span_id.hex(),
                'parent': s.parent_span_id.hex(), 'name': s.name, 'kind': s.kind,
                'status': s.status.code,
                'start': s.start_time_unix_nano, 'end': s.end_time_unix_nano,
                'attrs': {a.key: a.value.WhichOneof('value') for a in s.attributes},
            })
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let spans = spans.as_array().expect("array");
    assert_eq!(spans.len(), 3);
    let ours = ExportTraceServiceRequest::decode(captured.body).expect("protobuf");
    let ours = &ours.resource_spans[0].scope_spans[0].spans;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for (py, rs) in spans.iter().zip(ours) {
        assert_eq!(py["service"], "manifold-test");
        assert_eq!(py["trace_id"], hex(&rs.trace_id));
        assert_eq!(py["span_id"], hex(&rs.span_id));
        assert_eq!(py["parent"], hex(&rs.parent_span_id));
        assert_eq!(py["name"], rs.name.as_str());
        assert_eq!(py["kind"], rs.kind);
        assert_eq!(py["status"], rs.status.as_ref().map_or(0, |s| s.code));
        assert_eq!(py["start"], rs.start_time_unix_nano);
        assert_eq!(py["end"], rs.end_time_unix_nano);
        let keys = py["attrs"].as_object().expect("attrs");
        assert_eq!(keys.len(), rs.attributes.len());
        if rs.kind == SpanKind::Client as i32 {
            assert_eq!(keys["server.port"], "int_value");
            assert_eq!(keys["http.response.status_code"], "int_value");
            assert_eq!(keys["server.address"], "string_value");
        }
    }
}

fn traces(tracer: &Tracer, n: usize) {
    for _ in 0..n {
        let t = tracer.start(Incoming::default(), root("/a"));
        t.start_call(call("x", None)).end(CallOutcome::default());
        t.end(ServerOutcome::default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_collector_costs_no_request_and_counts_its_drops() {
    // A port that was just free: connections are refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let stats = Arc::new(SpanStats::default());
    let mut o = options(addr);
    o.queue_capacity = 8;
    let resource = ResourceInfo {
        service_name: "m".to_owned(),
    };
    let (sink, task) = otlp::spawn(&o, resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    traces(&tracer, 1_000);
    task.shutdown(Duration::from_secs(5)).await;
    let dropped =
        stats.dropped_total(DropReason::QueueFull) + stats.dropped_total(DropReason::ExportFailed);
    assert_eq!(stats.exported_total(), 0);
    assert_eq!(dropped, 2_000, "every span is counted as dropped");
    assert!(
        stats.dropped_total(DropReason::QueueFull) > 0,
        "the small queue filled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_collector_fills_the_queue_and_times_out_without_blocking() {
    let (addr, mut seen) = receiver(Answer::After(Duration::from_secs(30))).await;
    let stats = Arc::new(SpanStats::default());
    let mut o = options(addr);
    o.queue_capacity = 4;
    o.timeout = Duration::from_secs(1);
    let resource = ResourceInfo {
        service_name: "m".to_owned(),
    };
    let (sink, task) = otlp::spawn(&o, resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    // The first batch goes out and hangs (the collector has it and does not answer).
    traces(&tracer, 1);
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the first export arrives")
        .expect("a request");
    traces(&tracer, 100);
    assert!(stats.dropped_total(DropReason::QueueFull) >= 2 * (100 - 4) as u64);
    task.shutdown(Duration::from_secs(10)).await;
    assert!(
        stats.dropped_total(DropReason::ExportFailed) >= 2,
        "the hung batch timed out"
    );
    assert_eq!(stats.exported_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_refusing_the_batch_counts_export_failures() {
    let (addr, _seen) = receiver(Answer::Status(503)).await;
    let stats = Arc::new(SpanStats::default());
    let resource = ResourceInfo {
        service_name: "m".to_owned(),
    };
    let (sink, task) = otlp::spawn(&options(addr), resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    traces(&tracer, 10);
    task.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.dropped_total(DropReason::ExportFailed), 20);
}

/// The exporter runs on a thread of its own: a batch is encoded and sent while the runtime of
/// the requests is busy. Here that runtime's only thread is held (a blocking sleep loop that
/// never yields) from the offer until the export's failure against a down collector is counted;
/// an exporter on the caller's runtime would never run and the loop would time out.
#[tokio::test(flavor = "current_thread")]
async fn the_exporter_works_while_the_request_runtime_is_busy() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let stats = Arc::new(SpanStats::default());
    let resource = ResourceInfo {
        service_name: "m".to_owned(),
    };
    let (sink, task) = otlp::spawn(&options(addr), resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    traces(&tracer, 3);
    // At most 10 s: 2,000 sleeps of 5 ms.
    for _ in 0..2_000 {
        if stats.dropped_total(DropReason::ExportFailed) >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stats.dropped_total(DropReason::ExportFailed), 6);
    task.shutdown(Duration::from_secs(5)).await;
}
