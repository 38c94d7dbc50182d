//! What recording costs on the request path: one request with four call attempts (start, the
//! `traceparent` header, end), ended and handed to the export queue; and the metrics a request
//! and its calls record; what the trace store costs per request (and per explanation, on
//! admin). Numbers are quoted in docs/telemetry.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use manifold_telemetry::metrics::{CallResult, Metrics};
use manifold_telemetry::otlp::{self, OtlpOptions, ResourceInfo};
use manifold_telemetry::store::{Bounds, PlanShape, Query, RouteSpec, TraceStore};
use manifold_telemetry::{
    AttemptKind, CallInfo, CallOutcome, Endpoint, Incoming, RootInfo, RootKind, ServerOutcome,
    SpanStats, Tracer, TracingOptions,
};

fn request(tracer: &Tracer, headers: &HeaderMap, calls: &[CallInfo], root: &RootInfo) {
    let trace = tracer.start(Incoming::from_headers(headers), root.clone());
    for c in calls {
        let span = trace.start_call(c.clone());
        black_box(span.traceparent());
        span.end(CallOutcome {
            status: Some(200),
            ..CallOutcome::default()
        });
    }
    black_box(trace.end(ServerOutcome {
        status: 200,
        response_bytes: 512,
        ..ServerOutcome::default()
    }));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let root = RootInfo {
        kind: RootKind::Server,
        method: Method::POST,
        route: Arc::from("/checkout"),
        path: manifold_telemetry::UrlPath::copied("/checkout"),
    };
    let calls: Vec<CallInfo> = ["order", "payment", "inventory", "shipping"]
        .iter()
        .map(|n| CallInfo {
            call: Arc::from(*n),
            upstream: Arc::from(*n),
            method: Method::POST,
            path: format!("/{n}").into(),
            endpoint: Some(Endpoint {
                address: Arc::from("127.0.0.1"),
                port: 7000,
                https: false,
            }),
            attempt: 1,
            attempt_kind: AttemptKind::First,
            enqueue: false,
        })
        .collect();

    let stats = Arc::new(SpanStats::default());
    let no_export =
        Tracer::new(&TracingOptions::default(), None, Arc::clone(&stats)).expect("tracer");
    c.bench_function("request with 4 calls, recorded, not exported", |b| {
        b.iter(|| request(&no_export, &headers, &calls, &root))
    });

    // A collector that is down: the queue fills at once, so this is the try_send-and-drop path
    // (the exporter task never runs on this thread while the benchmark does).
    let mut o = OtlpOptions::new("http://127.0.0.1:9");
    o.queue_capacity = 1;
    let resource = ResourceInfo {
        service_name: "bench".to_owned(),
    };
    let (sink, _task) = otlp::spawn(&o, resource, Arc::clone(&stats)).expect("exporter");
    let exporting =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    c.bench_function(
        "request with 4 calls, offered to a full export queue",
        |b| b.iter(|| request(&exporting, &headers, &calls, &root)),
    );

    // The exporter's share, off the request path: encoding finished traces into protobuf.
    let finished: Vec<_> = (0..100)
        .map(|_| {
            let trace = no_export.start(Incoming::from_headers(&headers), root.clone());
            for c in &calls {
                trace.start_call(c.clone()).end(CallOutcome {
                    status: Some(200),
                    ..CallOutcome::default()
                });
            }
            trace.end(ServerOutcome::default())
        })
        .collect();
    let resource = ResourceInfo {
        service_name: "bench".to_owned(),
    };
    c.bench_function(
        "encode 100 traces of 5 spans, direct writer (exported)",
        |b| {
            b.iter(|| {
                black_box(otlp::encode_request(
                    &resource,
                    finished.iter().map(|t| &**t),
                ))
            })
        },
    );
    c.bench_function(
        "encode 100 traces of 5 spans, prost messages (reference)",
        |b| {
            b.iter(|| {
                let req = otlp::encode_batch(&resource, finished.iter().map(|t| &**t));
                black_box(prost::Message::encode_to_vec(&req))
            })
        },
    );

    // The trace store: recording a finished request once the ring is full (the steady state:
    // a push, a pop, a heap compare and an index update under the route's mutex), and the
    // admin's lazy part, explaining one request from its plan.
    let shape = PlanShape::new(
        ["order", "payment", "inventory", "shipping"]
            .iter()
            .map(|n| Arc::from(*n))
            .collect(),
        vec![vec![], vec![0], vec![0], vec![1, 2]],
        vec![0, 1, 2, 3],
    )
    .expect("shape");
    let store = TraceStore::new(
        Bounds {
            recent: 100,
            slowest: 20,
            errors_for: Duration::from_secs(300),
            max_errors: 100,
        },
        vec![RouteSpec {
            name: Arc::from("checkout"),
            shape: Some(shape),
        }],
    )
    .expect("store");
    for t in &finished {
        store.record(0, Arc::clone(t));
    }
    let one = Arc::clone(&finished[0]);
    c.bench_function("trace store: record a request (ring full)", |b| {
        b.iter(|| store.record(0, Arc::clone(&one)))
    });
    let entry = store
        .query(&Query {
            limit: 1,
            ..Query::default()
        })
        .remove(0);
    c.bench_function("trace store: explain a request of 4 calls (admin)", |b| {
        b.iter(|| black_box(store.analyze(&entry)))
    });

    let metrics = Metrics::new();
    let route = metrics.route("/checkout");
    let call_metrics: Vec<_> = calls
        .iter()
        .map(|c| metrics.call("/checkout", &c.call, &c.upstream))
        .collect();
    c.bench_function("metrics of a request with 4 calls", |b| {
        b.iter(|| {
            let active = route.start();
            for m in &call_metrics {
                m.observe(Duration::from_micros(1_234), None);
                m.outcome(CallResult::Ok);
            }
            active.finish(200, Duration::from_millis(12), None);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
