//! The span model on paused time: offsets are exact, ids link up, sampling decides as documented.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use manifold_telemetry::context::TraceParent;
use manifold_telemetry::{
    AttemptKind, CacheOutcome, CallInfo, CallOutcome, DropReason, Endpoint, Incoming, RootInfo,
    RootKind, ServerOutcome, SpanStats, Tracer, TracingOptions,
};

pub(crate) const CLIENT_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(crate) fn root(route: &str) -> RootInfo {
    RootInfo {
        kind: RootKind::Server,
        method: Method::POST,
        route: Arc::from(route),
        path: manifold_telemetry::UrlPath::copied(route),
    }
}

pub(crate) fn call(name: &str, endpoint: Option<Endpoint>) -> CallInfo {
    CallInfo {
        call: Arc::from(name),
        upstream: Arc::from(name),
        method: Method::GET,
        path: format!("/{name}").into(),
        endpoint,
        attempt: 1,
        attempt_kind: AttemptKind::First,
        enqueue: false,
    }
}

fn tracer(ratio: f64, slow: Option<Duration>) -> Tracer {
    let options = TracingOptions {
        sample_ratio: ratio,
        keep_slower_than: slow,
        ..TracingOptions::default()
    };
    Tracer::new(&options, None, Arc::new(SpanStats::default())).expect("tracer")
}

fn with_parent(flags: &'static str) -> Incoming {
    let mut h = HeaderMap::new();
    let tp = CLIENT_TP.replace("-01", flags);
    h.insert("traceparent", HeaderValue::from_str(&tp).expect("value"));
    h.insert(
        "tracestate",
        HeaderValue::from_static("rojo=00f067aa0ba902b7"),
    );
    Incoming::from_headers(&h)
}

#[tokio::test(start_paused = true)]
async fn offsets_are_exact_on_paused_time_and_ids_link_up() {
    let t = tracer(1.0, None);
    let trace = t.start(with_parent("-01"), root("/checkout"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut order = trace.start_call(call("order", None));
    tokio::time::sleep(Duration::from_millis(20)).await;
    order.first_byte();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let order_id = order.span_id();
    let header = order.traceparent();
    order.end(CallOutcome {
        status: Some(200),
        ..CallOutcome::default()
    });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let finished = trace.end(ServerOutcome {
        status: 200,
        ..ServerOutcome::default()
    });

    assert_eq!(finished.duration, Duration::from_millis(30));
    let c = &finished.calls[0];
    assert_eq!(c.start, Duration::from_millis(5));
    assert_eq!(c.first_byte, Some(Duration::from_millis(25)));
    assert_eq!(c.end, Duration::from_millis(28));

    let parent = TraceParent::parse(CLIENT_TP.as_bytes()).expect("valid");
    assert_eq!(finished.trace_id, parent.trace_id, "the client's trace");
    assert_eq!(
        finished.parent,
        Some(parent.parent_id),
        "the SERVER span is the client's child"
    );
    assert_eq!(
        finished.tracestate.as_deref(),
        Some("rojo=00f067aa0ba902b7")
    );
    let sent = TraceParent::parse(header.as_bytes()).expect("we send a valid traceparent");
    assert_eq!(sent.trace_id, finished.trace_id);
    assert_eq!(
        sent.parent_id, order_id,
        "the upstream's parent is the call's span"
    );
    assert!(sent.sampled());
    assert_eq!(finished.request_id, finished.trace_id.to_hex());
}

#[tokio::test(start_paused = true)]
async fn an_untrusted_parent_joins_the_trace_but_the_ratio_decides() {
    // Ratio 0 and a parent saying "sampled", from a caller not trusted to decide.
    let t = tracer(0.0, None);
    let mut incoming = with_parent("-01");
    incoming.ignore_sampled = true;
    let trace = t.start(incoming, root("/a"));
    let sent = trace.start_call(call("x", None)).traceparent();
    let f = trace.end(ServerOutcome::default());
    assert!(
        !f.sampled && !f.kept,
        "the ratio's decision, not the client's"
    );
    let sent = TraceParent::parse(sent.as_bytes()).expect("valid");
    assert!(!sent.sampled(), "and the one sent downstream");
    assert_eq!(
        f.trace_id,
        with_parent("-01").parent.expect("parent").trace_id,
        "the request still joins the caller's trace"
    );
    // Ratio 1: the untrusted "not sampled" does not drop it either.
    let t = tracer(1.0, None);
    let mut incoming = with_parent("-00");
    incoming.ignore_sampled = true;
    assert!(
        t.start(incoming, root("/a"))
            .end(ServerOutcome::default())
            .sampled
    );
}

/// An untrusted caller picks its trace id as freely as its flag: the ratio must not decide on
/// that id, or a client sending an id whose low 7 bytes are zero has every request exported at
/// any ratio above 0 (and one whose low bytes are all `ff` has none exported below 1).
#[tokio::test(start_paused = true)]
async fn an_untrusted_caller_cannot_pick_a_trace_id_the_ratio_keeps() {
    let untrusted = |id: &str, flags: &str| {
        let mut h = HeaderMap::new();
        let tp = format!("00-{id}-00f067aa0ba902b7-{flags}");
        h.insert("traceparent", HeaderValue::from_str(&tp).expect("value"));
        let mut incoming = Incoming::from_headers(&h);
        incoming.ignore_sampled = true;
        incoming
    };
    // One in a trillion: the ratio keeps none of 100 requests (a false failure: 1 in 10^10).
    let t = tracer(1e-12, None);
    for _ in 0..100 {
        let f = t
            .start(
                untrusted("4bf92f3577b34da6a300000000000000", "00"),
                root("/a"),
            )
            .end(ServerOutcome::default());
        assert!(!f.sampled, "a chosen trace id decided the head");
    }
    // All but one in a trillion: it keeps all of them.
    let t = tracer(1.0 - 1e-12, None);
    for _ in 0..100 {
        let f = t
            .start(
                untrusted("4bf92f3577b34da6a3ffffffffffffff", "01"),
                root("/a"),
            )
            .end(ServerOutcome::default());
        assert!(f.sampled, "a chosen trace id hid the request");
    }
}

#[tokio::test(start_paused = true)]
async fn the_parent_decides_the_head_and_the_tail_keeps_errors_and_slow_requests() {
    // Ratio 1, but the parent said "not sampled": head drops it, and so does the tail (fast, ok).
    let t = tracer(1.0, Some(Duration::from_millis(100)));
    let f = t.start(with_parent("-00"), root("/a")).end(ServerOutcome {
        status: 200,
        ..ServerOutcome::default()
    });
    assert!(!f.sampled && !f.kept);
    assert!(
        !TraceParent::parse(
            t.start(with_parent("-00"), root("/a"))
                .start_call(call("x", None))
                .traceparent()
                .as_bytes()
        )
        .expect("valid")
        .sampled(),
        "an unsampled parent stays unsampled downstream"
    );

    // Ratio 0: a slow request is kept by the tail, a fast one is not.
    let t = tracer(0.0, Some(Duration::from_millis(100)));
    let trace = t.start(Incoming::default(), root("/a"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let f = trace.end(ServerOutcome::default());
    assert!(!f.sampled && f.kept, "slow");
    let f = t
        .start(Incoming::default(), root("/a"))
        .end(ServerOutcome::default());
    assert!(!f.kept, "fast and fine");

    // A failed call keeps it; a 4xx call does not (client spans are errors on 4xx, but the tail
    // keeps failures only); a 5xx answer keeps it.
    let trace = t.start(Incoming::default(), root("/a"));
    trace.start_call(call("x", None)).end(CallOutcome {
        status: Some(404),
        ..CallOutcome::default()
    });
    assert!(
        !trace.end(ServerOutcome::default()).kept,
        "a 404 from an upstream"
    );
    let trace = t.start(Incoming::default(), root("/a"));
    trace.start_call(call("x", None)).end(CallOutcome {
        error_type: Some("timeout".into()),
        ..CallOutcome::default()
    });
    assert!(trace.end(ServerOutcome::default()).kept, "a timed-out call");
    let f = t.start(Incoming::default(), root("/a")).end(ServerOutcome {
        status: 502,
        ..ServerOutcome::default()
    });
    assert!(f.kept, "a 5xx answer");
    assert_eq!(t.stats().traces_kept_by_tail_total(), 3);
    assert_eq!(t.stats().traces_sampled_out_total(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_attempt_is_recorded_as_cancelled_and_late_ones_are_counted() {
    let t = tracer(1.0, None);
    let trace = t.start(Incoming::default(), root("/a"));
    let winner = trace.start_call(call("x", None));
    let mut hedge = call("x", None);
    hedge.attempt = 2;
    hedge.attempt_kind = AttemptKind::Hedge;
    let loser = trace.start_call(hedge);
    tokio::time::sleep(Duration::from_millis(10)).await;
    winner.end(CallOutcome {
        status: Some(200),
        cache: Some(CacheOutcome::Miss),
        ..CallOutcome::default()
    });
    drop(loser);
    let late = trace.start_call(call("y", None));
    let f = trace.end(ServerOutcome::default());
    drop(late);
    assert_eq!(f.calls.len(), 2);
    let loser = f
        .calls
        .iter()
        .find(|c| c.info.attempt_kind == AttemptKind::Hedge)
        .expect("the losing hedge is in the trace");
    assert!(loser.outcome.cancelled && !loser.outcome.is_failure());
    assert_eq!(t.stats().dropped_total(DropReason::Late), 1);
}

#[tokio::test(start_paused = true)]
async fn spans_past_the_cap_are_dropped_and_counted() {
    let options = TracingOptions {
        max_spans_per_trace: 4,
        ..TracingOptions::default()
    };
    let t = Tracer::new(&options, None, Arc::new(SpanStats::default())).expect("tracer");
    let trace = t.start(Incoming::default(), root("/a"));
    for _ in 0..10 {
        trace
            .start_call(call("x", None))
            .end(CallOutcome::default());
    }
    let f = trace.end(ServerOutcome::default());
    assert_eq!(f.span_count(), 4);
    assert_eq!(t.stats().dropped_total(DropReason::TraceTooLarge), 7);
}

#[test]
fn absurd_tracing_options_are_refused() {
    for ratio in [f64::NAN, -1.0, 2.0] {
        let o = TracingOptions {
            sample_ratio: ratio,
            ..TracingOptions::default()
        };
        assert!(Tracer::new(&o, None, Arc::new(SpanStats::default())).is_err());
    }
    let o = TracingOptions {
        max_spans_per_trace: 0,
        ..TracingOptions::default()
    };
    assert!(Tracer::new(&o, None, Arc::new(SpanStats::default())).is_err());
}

#[tokio::test(start_paused = true)]
async fn an_offloaded_task_is_delivered_in_the_requests_trace() {
    use manifold_telemetry::otlp::{encode_batch, ResourceInfo};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    let t = tracer(1.0, None);
    let request = t.start(Incoming::default(), root("/checkout"));
    let mut enqueue = call("confirm-email", None);
    enqueue.enqueue = true;
    let producer = request.start_call(enqueue);
    // What the queue stores with the task.
    let stored = producer.traceparent().to_str().expect("ascii").to_owned();
    let producer_id = producer.span_id();
    producer.end(CallOutcome::default());
    let request = request.end(ServerOutcome {
        status: 202,
        ..ServerOutcome::default()
    });

    // Later, the dispatcher.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivery = t.start(
        Incoming {
            parent: TraceParent::parse(stored.as_bytes()).ok(),
            ..Incoming::default()
        },
        RootInfo {
            kind: RootKind::Consumer,
            method: Method::POST,
            route: Arc::from("outbox"),
            path: manifold_telemetry::UrlPath::copied("/emails"),
        },
    );
    let delivery = delivery.end(ServerOutcome {
        status: 200,
        ..ServerOutcome::default()
    });
    assert_eq!(delivery.trace_id, request.trace_id, "one trace");
    assert_eq!(
        delivery.parent,
        Some(producer_id),
        "the CONSUMER is the PRODUCER's child"
    );
    assert!(delivery.sampled, "the request's decision carries over");

    let resource = ResourceInfo {
        service_name: "m".to_owned(),
    };
    let req = encode_batch(&resource, [&*request, &*delivery]);
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let kinds: Vec<i32> = spans.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SpanKind::Server as i32,
            SpanKind::Producer as i32,
            SpanKind::Consumer as i32
        ]
    );
    assert_eq!(spans[2].name, "process outbox");
    assert_eq!(spans[2].parent_span_id, spans[1].span_id);
}

/// The gateway holds these across `.await`s in multi-threaded futures and shares them.
#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tracer>();
    check::<manifold_telemetry::RequestTrace>();
    check::<manifold_telemetry::CallSpan>();
    check::<manifold_telemetry::otlp::ExportHandle>();
    check::<manifold_telemetry::metrics::Metrics>();
    check::<manifold_telemetry::metrics::RouteMetrics>();
    check::<manifold_telemetry::metrics::ActiveRequest<'static>>();
    check::<manifold_telemetry::metrics::CallMetrics>();
    check::<manifold_telemetry::metrics::QueueMetrics>();
    check::<manifold_telemetry::metrics::EndpointMetrics>();
}
