//! The store's bounds (ring, slowest, error window on paused time) and the plan's path.

use super::*;
use crate::context::SpanId;
use crate::span::{
    AttemptKind, CallInfo, CallOutcome, CallRecord, Endpoint, RootInfo, ServerOutcome,
};
use http::Method;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A call attempt from `start` to `end` (ms).
pub(crate) fn call(name: &str, start: u64, end: u64) -> CallRecord {
    CallRecord {
        span_id: SpanId(rand::random()),
        info: CallInfo {
            call: Arc::from(name),
            upstream: Arc::from(name),
            method: Method::GET,
            path: format!("/{name}").into(),
            endpoint: Some(Endpoint {
                address: Arc::from("127.0.0.1"),
                port: 7000,
                https: false,
            }),
            attempt: 1,
            attempt_kind: AttemptKind::First,
            enqueue: false,
        },
        start: ms(start),
        first_byte: Some(ms(end)),
        end: ms(end),
        outcome: CallOutcome {
            status: Some(200),
            ..CallOutcome::default()
        },
    }
}

pub(crate) fn trace(
    id: u8,
    duration: u64,
    status: u16,
    calls: Vec<CallRecord>,
) -> Arc<FinishedTrace> {
    let mut tid = [0u8; 16];
    tid[15] = id;
    tid[0] = 1;
    Arc::new(FinishedTrace {
        trace_id: TraceId(tid),
        span_id: SpanId([id, 1, 1, 1, 1, 1, 1, 1]),
        parent: None,
        sampled: true,
        kept: true,
        tracestate: None,
        request_id: crate::RequestId::copied(format!("r{id}").as_bytes()).expect("valid"),
        epoch_ns: 1_700_000_000_000_000_000,
        duration: ms(duration),
        root: RootInfo {
            kind: crate::span::RootKind::Server,
            method: Method::POST,
            route: Arc::from("/checkout"),
            path: crate::UrlPath::copied("/checkout"),
        },
        outcome: ServerOutcome {
            status,
            ..ServerOutcome::default()
        },
        calls,
    })
}

fn store(recent: usize, slowest: usize, max_errors: usize) -> TraceStore {
    TraceStore::new(
        Bounds {
            recent,
            slowest,
            errors_for: Duration::from_secs(60),
            max_errors,
        },
        vec![
            RouteSpec {
                name: Arc::from("a"),
                shape: None,
            },
            RouteSpec {
                name: Arc::from("b"),
                shape: None,
            },
        ],
    )
    .expect("bounds")
}

fn held(s: &TraceStore, route: Option<usize>) -> Vec<u8> {
    let mut v: Vec<u8> = s
        .query(&Query {
            route,
            limit: usize::MAX,
            ..Query::default()
        })
        .iter()
        .map(|e| e.trace.trace_id.0[15])
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn the_ring_keeps_the_last_n_per_route() {
    let s = store(3, 0, 0);
    for id in 1..=5 {
        s.record(0, trace(id, 10, 200, vec![]));
    }
    s.record(1, trace(9, 10, 200, vec![]));
    assert_eq!(held(&s, Some(0)), vec![3, 4, 5]);
    assert_eq!(held(&s, Some(1)), vec![9]);
    assert_eq!(s.len(), 4);
    // Newest first, limited.
    let q = s.query(&Query {
        limit: 2,
        ..Query::default()
    });
    let ids: Vec<u8> = q.iter().map(|e| e.trace.trace_id.0[15]).collect();
    assert_eq!(ids, vec![9, 5]);
    // An index past the routes is ignored, not a panic.
    s.record(7, trace(8, 10, 200, vec![]));
    assert_eq!(s.len(), 4);
}

#[test]
fn the_slowest_n_stay_while_the_ring_moves_on() {
    let s = store(1, 2, 0);
    for (id, d) in [(1, 50), (2, 10), (3, 90), (4, 20), (5, 30)] {
        s.record(0, trace(id, d, 200, vec![]));
    }
    // 90 and 50 are the slowest; 5 is the last. Each request is stored once.
    assert_eq!(held(&s, None), vec![1, 3, 5]);
    let k = s.routes[0].kept.lock().unwrap();
    assert_eq!(k.sizes(), (1, 2, 0));
    assert_eq!(k.len(), 3);
    drop(k);
    let slow = s.query(&Query {
        min_duration: Some(ms(50)),
        limit: 10,
        ..Query::default()
    });
    assert_eq!(slow.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_requests_stay_for_errors_for_and_no_more_than_max_errors() {
    let s = store(1, 0, 2);
    s.record(0, trace(1, 10, 502, vec![]));
    tokio::time::advance(Duration::from_secs(30)).await;
    s.record(0, trace(2, 10, 500, vec![]));
    s.record(0, trace(3, 10, 200, vec![]));
    // 1 and 2 failed and are within the window; 3 is the ring's.
    assert_eq!(held(&s, None), vec![1, 2, 3]);
    let failed = s.query(&Query {
        errors: Some(true),
        limit: 10,
        ..Query::default()
    });
    assert_eq!(failed.len(), 2);
    tokio::time::advance(Duration::from_secs(20)).await;
    // A call that got no answer fails the request even when it answered 200.
    let mut no_answer = call("x", 0, 5);
    no_answer.outcome = CallOutcome {
        error_type: Some("timeout".into()),
        ..CallOutcome::default()
    };
    s.record(0, trace(4, 10, 200, vec![no_answer]));
    // The cap: the oldest failure (1) left; 4 is both the last and a failure.
    assert_eq!(held(&s, None), vec![2, 4]);
    tokio::time::advance(Duration::from_secs(41)).await;
    // 2 is past the 60 s window; 4 is not.
    assert_eq!(held(&s, None), vec![4]);
    tokio::time::advance(Duration::from_secs(60)).await;
    // 4 left the error window but is still the ring's last.
    assert_eq!(held(&s, None), vec![4]);
    assert_eq!(s.routes[0].kept.lock().unwrap().sizes(), (1, 0, 0));
}

#[test]
fn a_trace_id_finds_the_latest_request_that_carried_it() {
    let s = store(2, 0, 0);
    let a = trace(1, 10, 200, vec![]);
    s.record(0, Arc::clone(&a));
    s.record(1, trace(1, 20, 200, vec![]));
    assert_eq!(s.get(&a.trace_id).map(|e| e.route), Some(1));
    // The later one leaves (route b's ring moves on); the earlier one is still found.
    s.record(1, trace(2, 10, 200, vec![]));
    s.record(1, trace(3, 10, 200, vec![]));
    assert_eq!(s.get(&a.trace_id).map(|e| e.route), Some(0));
    let mut none = a.trace_id;
    none.0[3] = 9;
    assert!(s.get(&none).is_none());
}

#[test]
fn bounds_past_the_limits_are_refused() {
    let b = Bounds {
        recent: 10,
        slowest: 10,
        errors_for: Duration::from_secs(1),
        max_errors: 10,
    };
    assert!(TraceStore::new(
        Bounds {
            recent: MAX_KEPT + 1,
            ..b
        },
        vec![]
    )
    .is_err());
    assert!(TraceStore::new(
        Bounds {
            errors_for: Duration::ZERO,
            ..b
        },
        vec![]
    )
    .is_err());
    assert!(TraceStore::new(
        Bounds {
            errors_for: MAX_ERRORS_FOR * 2,
            ..b
        },
        vec![]
    )
    .is_err());
    assert!(TraceStore::new(b, vec![]).is_ok());
}

fn names(n: &[&str]) -> Vec<Arc<str>> {
    n.iter().map(|s| Arc::from(*s)).collect()
}

/// order → payment ∥ inventory ∥ shipping → confirm, every call awaited.
pub(crate) fn checkout() -> PlanShape {
    PlanShape::new(
        names(&["order", "payment", "inventory", "shipping", "confirm"]),
        vec![vec![], vec![0], vec![0], vec![0], vec![1, 2, 3]],
        (0..5).collect(),
    )
    .expect("checkout")
}

fn path_names(a: &Analysis) -> Vec<&str> {
    a.path.iter().map(|&c| &*a.calls[c].name).collect()
}

fn timing<'a>(a: &'a Analysis, name: &str) -> &'a CallTiming {
    a.calls.iter().find(|c| &*c.name == name).expect(name)
}

#[test]
fn the_checkout_path_and_slack_come_from_the_plan() {
    // The shop's service times with 1 ms of Manifold between calls: order 150, payment 200,
    // inventory 100, shipping 250, confirm 50.
    let t = trace(
        1,
        455,
        201,
        vec![
            call("order", 1, 151),
            call("inventory", 152, 252),
            call("payment", 152, 352),
            call("shipping", 153, 403),
            call("confirm", 404, 454),
        ],
    );
    let a = analyze(&t, Some(&checkout()));
    assert_eq!(path_names(&a), vec!["order", "shipping", "confirm"]);
    assert_eq!(timing(&a, "payment").slack, Some(ms(51)));
    assert_eq!(timing(&a, "inventory").slack, Some(ms(151)));
    for c in ["order", "shipping", "confirm"] {
        assert_eq!(timing(&a, c).slack, Some(Duration::ZERO), "{c}");
    }
    assert_eq!(timing(&a, "shipping").queued, ms(2));
    assert_eq!(timing(&a, "confirm").ready, ms(403));
    assert_eq!(
        a.own,
        OwnTime {
            client: Duration::ZERO,
            before: ms(1),
            between: ms(2 + 1),
            after: ms(1),
        }
    );
    // The analyzer's walk accounts the same: Manifold's own time and each path call's duration.
    assert_eq!(a.own_critical, a.own.total());
    assert_eq!(timing(&a, "shipping").critical, ms(250));
    assert_eq!(timing(&a, "payment").critical, Duration::ZERO);
    let total: Duration = a.calls.iter().map(|c| c.critical).sum::<Duration>() + a.own_critical;
    assert_eq!(total, t.duration);
    // The sections tile the request: manifold, order, manifold, shipping, manifold, confirm, manifold.
    let who: Vec<Option<&str>> = a
        .sections
        .iter()
        .map(|s| s.call.map(|c| &*a.calls[c].name))
        .collect();
    assert_eq!(
        who,
        vec![
            None,
            Some("order"),
            None,
            Some("shipping"),
            None,
            Some("confirm"),
            None
        ]
    );
}

#[test]
fn touching_calls_are_still_one_after_another() {
    // On paused time a call starts the instant its input ends: no gap at all.
    let t = trace(
        1,
        450,
        201,
        vec![
            call("order", 0, 150),
            call("inventory", 150, 250),
            call("payment", 150, 350),
            call("shipping", 150, 400),
            call("confirm", 400, 450),
        ],
    );
    let a = analyze(&t, Some(&checkout()));
    assert_eq!(path_names(&a), vec!["order", "shipping", "confirm"]);
    assert_eq!(a.own.total(), Duration::ZERO);
    assert_eq!(a.own_critical, Duration::ZERO);
    assert_eq!(timing(&a, "order").critical, ms(150));
    assert_eq!(timing(&a, "payment").slack, Some(ms(50)));
    assert_eq!(timing(&a, "inventory").slack, Some(ms(150)));
}

#[test]
fn the_binding_input_is_the_plan_edge_not_whatever_ended_last() {
    // `b` ends after `a` but `c` reads only `a`: timestamps alone would blame `b`.
    let shape = PlanShape::new(
        names(&["a", "b", "c"]),
        vec![vec![], vec![], vec![0]],
        vec![1, 2],
    )
    .expect("shape");
    let t = trace(
        1,
        100,
        200,
        vec![call("a", 0, 40), call("b", 0, 45), call("c", 50, 100)],
    );
    let a = analyze(&t, Some(&shape));
    assert_eq!(path_names(&a), vec!["a", "c"]);
    assert_eq!(timing(&a, "c").queued, ms(10));
    assert_eq!(timing(&a, "b").slack, Some(ms(55)));
    assert_eq!(
        a.own,
        OwnTime {
            client: Duration::ZERO,
            before: ms(0),
            between: ms(10),
            after: ms(0)
        }
    );
    assert_eq!(a.own_critical, ms(10));
}

#[test]
fn retries_and_hedges_make_one_call_from_first_start_to_winner_end() {
    let shape = PlanShape::new(names(&["x"]), vec![vec![]], vec![0]).expect("shape");
    let mut failed = call("x", 0, 20);
    failed.outcome.status = Some(503);
    let retry = call("x", 30, 60);
    let mut lost = call("x", 35, 61);
    lost.outcome = CallOutcome {
        cancelled: true,
        ..CallOutcome::default()
    };
    let t = trace(1, 62, 200, vec![failed, retry, lost]);
    let a = analyze(&t, Some(&shape));
    let x = timing(&a, "x");
    assert_eq!(
        (x.started, x.ended, x.attempts, x.winner),
        (ms(0), ms(60), 3, 1)
    );
    assert_eq!(x.critical, ms(60));
    assert_eq!(a.own.after, ms(2));
}

#[test]
fn a_route_without_a_plan_and_calls_the_plan_does_not_know() {
    let t = trace(1, 30, 200, vec![call("proxy", 1, 29)]);
    let a = analyze(&t, None);
    assert_eq!(path_names(&a), vec!["proxy"]);
    assert_eq!(a.own.total(), ms(2));
    // A span naming no call of the plan is shown, off the path, with no slack.
    let t = trace(
        1,
        460,
        201,
        vec![call("order", 1, 151), call("stray", 0, 459)],
    );
    let a = analyze(&t, Some(&checkout()));
    assert_eq!(path_names(&a), vec!["order"]);
    assert_eq!(timing(&a, "stray").slack, None);
    assert!(!timing(&a, "stray").on_path);
    // No call at all: all of it is Manifold's.
    let a = analyze(&trace(1, 5, 200, vec![]), Some(&checkout()));
    assert!(a.path.is_empty());
    assert_eq!((a.own.total(), a.own_critical), (ms(5), ms(5)));
}

/// The checkout of `the_checkout_path_and_slack_come_from_the_plan`, 300 ms later: its client
/// took 300 ms to send the body the route reads before its first call.
fn slow_upload(client_wait: u64) -> FinishedTrace {
    let mut t = (*trace(
        1,
        755,
        201,
        vec![
            call("order", 301, 451),
            call("inventory", 452, 552),
            call("payment", 452, 652),
            call("shipping", 453, 703),
            call("confirm", 704, 754),
        ],
    ))
    .clone();
    t.outcome.client_wait = ms(client_wait);
    t
}

#[test]
fn the_clients_body_wait_is_the_clients_not_manifolds() {
    let t = slow_upload(300);
    let a = analyze(&t, Some(&checkout()));
    assert_eq!(path_names(&a), vec!["order", "shipping", "confirm"]);
    assert_eq!(
        a.own,
        OwnTime {
            client: ms(300),
            before: ms(1),
            between: ms(3),
            after: ms(1),
        }
    );
    assert_eq!(
        a.own.total(),
        ms(5),
        "the upload is not Manifold's own time"
    );
    // A call without inputs was ready when the body was: its queue is Manifold's 1 ms.
    assert_eq!(
        (timing(&a, "order").ready, timing(&a, "order").queued),
        (ms(300), ms(1))
    );
    assert_eq!(timing(&a, "shipping").ready, ms(451));
    // The walk accounts the same, and everything adds up to the request.
    assert_eq!(a.own_critical, a.own.total());
    assert_eq!(a.client_critical, ms(300));
    let total: Duration =
        a.calls.iter().map(|c| c.critical).sum::<Duration>() + a.own_critical + a.client_critical;
    assert_eq!(total, t.duration);
    // The waterfall starts with the client's stretch.
    let first = a.sections[0];
    assert_eq!(
        (first.call, first.client, first.start, first.end),
        (None, true, Duration::ZERO, ms(300))
    );
    assert!(a.sections[1..].iter().all(|s| !s.client));
    // Not waiting on the client: nothing changes.
    let a = analyze(&slow_upload(0), Some(&checkout()));
    assert_eq!((a.own.client, a.own.before), (Duration::ZERO, ms(301)));
    assert_eq!(timing(&a, "order").queued, ms(301));
    assert!(a.sections.iter().all(|s| !s.client));
}

#[test]
fn the_clients_share_is_capped_by_the_time_before_the_first_call() {
    // More wait than there was time before the first path call (it cannot be, in a composed
    // route; a guard): only that time is the client's.
    let a = analyze(&slow_upload(500), Some(&checkout()));
    assert_eq!((a.own.client, a.own.before), (ms(301), Duration::ZERO));
    assert_eq!((a.own.total(), a.client_critical), (ms(3 + 1), ms(301)));
    assert_eq!(timing(&a, "order").queued, Duration::ZERO);
    // No call ran (a body that never came: 408): the request is the client's, up to all of it.
    for (wait, client) in [(5, 5), (20, 8)] {
        let mut t = (*trace(1, 8, 408, vec![])).clone();
        t.outcome.client_wait = ms(wait);
        let a = analyze(&t, Some(&checkout()));
        assert_eq!(
            (
                a.own.client,
                a.own.total(),
                a.client_critical,
                a.own_critical
            ),
            (ms(client), ms(8 - client), ms(client), ms(8 - client))
        );
    }
    // A route without a plan streams the body during its call: the wait overlaps the call,
    // and its numbers are left as they were.
    let mut t = (*trace(1, 30, 200, vec![call("proxy", 1, 29)])).clone();
    t.outcome.client_wait = ms(20);
    let a = analyze(&t, None);
    assert_eq!(a.own.client, Duration::ZERO);
    assert_eq!((a.own.total(), a.own_critical), (ms(2), ms(2)));
    assert_eq!(timing(&a, "proxy").ready, Duration::ZERO);
}

#[test]
fn the_json_and_the_jaeger_export_show_the_clients_wait() {
    let store = TraceStore::new(
        Bounds {
            recent: 1,
            slowest: 0,
            errors_for: Duration::from_secs(60),
            max_errors: 0,
        },
        vec![RouteSpec {
            name: Arc::from("checkout"),
            shape: Some(checkout()),
        }],
    )
    .expect("bounds");
    store.record(0, Arc::new(slow_upload(300)));
    let e = store
        .query(&Query {
            limit: 1,
            ..Query::default()
        })
        .remove(0);
    let a = store.analyze(&e);
    let s = json::summary(&store, &e, &a);
    assert_eq!(
        (s["client_ms"].as_f64(), s["manifold_ms"].as_f64()),
        (Some(300.0), Some(5.0))
    );
    let d = json::detail(&store, &e, &a);
    assert_eq!(d["client_ms"].as_f64(), Some(300.0));
    assert_eq!(d["manifold"]["before_ms"].as_f64(), Some(1.0));
    assert_eq!(d["sections"][0]["client"], true);
    assert_eq!(d["sections"][0]["call"], serde_json::Value::Null);
    assert_eq!(d["sections"][1]["client"], false);
    // One span more: the client's, a child of the root in the gateway's process.
    let j = json::jaeger_trace("manifold", &e, &a);
    let spans = j["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1 + 1 + 5);
    let c = spans
        .iter()
        .find(|s| s["operationName"] == json::CLIENT_BODY)
        .expect("the client's span");
    assert_eq!(c["references"][0]["spanID"], spans[0]["spanID"]);
    assert_eq!(c["references"][0]["refType"], "CHILD_OF");
    assert_eq!(c["startTime"], spans[0]["startTime"]);
    assert_eq!(c["duration"], 300_000);
    assert_eq!(c["processID"], spans[0]["processID"]);
    let ids: std::collections::HashSet<&str> =
        spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "every span id is its own");
    // Without a wait there is no such span.
    store.record(0, Arc::new(slow_upload(0)));
    let e = store.get(&e.trace.trace_id).expect("held");
    let j = json::jaeger_trace("manifold", &e, &store.analyze(&e));
    assert_eq!(j["spans"].as_array().map(Vec::len), Some(6));
}
