//! The trace store's critical path against the analyzer's: random plans (DAGs of up to 7
//! calls, some retried, some hedged) run with random service times, each call starting 1–50 µs
//! after its inputs (the executor's scheduling gap), the calls without inputs after a random
//! wait on the client's body (none in about half the cases: the route reads it before any
//! call); the store explains the request from the plan, `manifold analyze`'s code reads the
//! store's Jaeger export by timestamps, and their critical-path shares per (service, operation)
//! agree within 1% — the client's wait as the export's `client request body` span, Manifold's
//! own time as the root's.
//!
//! Where they may honestly differ is excluded, not hidden: a call that is not the binding input
//! but ends inside a path call's scheduling gap (the timestamps then blame it; the plan knows
//! better), and two calls ending at the same instant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use manifold_telemetry::store::{analyze, json, Entry, PlanShape};
use manifold_telemetry::{
    AttemptKind, CallInfo, CallOutcome, CallRecord, Endpoint, FinishedTrace, RootInfo, RootKind,
    ServerOutcome, SpanId, TraceId,
};
use manifold_trace::analysis::{Analyzer, Options};
use proptest::prelude::*;

const US: u64 = 1000;

/// One generated call: its inputs (a bitmask of earlier calls), service time and gap (µs), and
/// whether it was retried after a 503 or hedged.
#[derive(Debug, Clone)]
struct Gen {
    deps: u8,
    service_us: u64,
    gap_us: u64,
    retried: bool,
    hedged: bool,
}

fn gen_call() -> impl Strategy<Value = Gen> {
    (
        any::<u8>(),
        1_000u64..200_000,
        1u64..=50,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(deps, service_us, gap_us, retried, hedged)| Gen {
            deps,
            service_us,
            gap_us,
            retried: retried && deps % 3 == 0,
            hedged: hedged && deps % 5 == 0,
        })
}

fn record(
    name: &str,
    n: u8,
    start: u64,
    end: u64,
    attempt: u32,
    outcome: CallOutcome,
) -> CallRecord {
    CallRecord {
        span_id: SpanId([n + 1, attempt as u8, 7, 7, 7, 7, 7, 7]),
        info: CallInfo {
            call: Arc::from(name),
            upstream: Arc::from(format!("svc-{name}").as_str()),
            method: Method::GET,
            path: "/".into(),
            endpoint: Some(Endpoint {
                address: Arc::from("127.0.0.1"),
                port: 7000,
                https: false,
            }),
            attempt,
            attempt_kind: AttemptKind::First,
            enqueue: false,
        },
        start: Duration::from_nanos(start),
        first_byte: None,
        end: Duration::from_nanos(end),
        outcome,
    }
}

struct Built {
    shape: PlanShape,
    trace: FinishedTrace,
    ready: Vec<u64>,
    start: Vec<u64>,
    end: Vec<u64>,
    deps: Vec<Vec<u32>>,
}

/// Run the plan: each call starts its gap after its last input ended, or after the client's
/// body arrived (`client_us` of waiting on it from the request's start) for a call without one.
fn build(calls: &[Gen], after_us: u64, client_us: u64) -> Built {
    let n = calls.len();
    let names: Vec<Arc<str>> = (0..n)
        .map(|i| Arc::from(format!("c{i}").as_str()))
        .collect();
    let deps: Vec<Vec<u32>> = calls
        .iter()
        .enumerate()
        .map(|(i, g)| (0..i as u32).filter(|&d| g.deps & (1 << d) != 0).collect())
        .collect();
    let (mut ready, mut start, mut end) = (vec![0; n], vec![0; n], vec![0; n]);
    let mut records = Vec::new();
    for (i, g) in calls.iter().enumerate() {
        ready[i] = deps[i]
            .iter()
            .map(|&d| end[d as usize])
            .max()
            .unwrap_or(client_us * US);
        start[i] = ready[i] + g.gap_us * US;
        end[i] = start[i] + g.service_us * US;
        let name = &*names[i];
        let ok = || CallOutcome {
            status: Some(200),
            ..CallOutcome::default()
        };
        let (s, e) = (start[i], end[i]);
        if g.retried {
            // A 503 in the first third, a backoff, then the winner to the end.
            let fail = CallOutcome {
                status: Some(503),
                ..CallOutcome::default()
            };
            records.push(record(name, i as u8, s, s + (e - s) / 3, 1, fail));
            records.push(record(name, i as u8, s + (e - s) / 2, e, 2, ok()));
        } else {
            records.push(record(name, i as u8, s, e, 1, ok()));
        }
        if g.hedged {
            // A hedge that lost: dropped just after the winner answered.
            let lost = CallOutcome {
                cancelled: true,
                ..CallOutcome::default()
            };
            records.push(record(name, i as u8, s + (e - s) / 4, e + US, 3, lost));
        }
    }
    records.sort_by_key(|r| r.end);
    let duration = end.iter().copied().max().unwrap_or(0) + after_us * US;
    let shape = PlanShape::new(names, deps.clone(), (0..n as u32).collect()).expect("acyclic");
    let trace = FinishedTrace {
        trace_id: TraceId([9; 16]),
        span_id: SpanId([1; 8]),
        parent: None,
        sampled: true,
        kept: true,
        tracestate: None,
        request_id: manifold_telemetry::RequestId::copied(b"r").expect("valid"),
        epoch_ns: 1_700_000_000_000_000_000,
        duration: Duration::from_nanos(duration),
        root: RootInfo {
            kind: RootKind::Server,
            method: Method::GET,
            route: Arc::from("/r"),
            path: manifold_telemetry::UrlPath::copied("/r"),
        },
        outcome: ServerOutcome {
            status: 200,
            client_wait: Duration::from_micros(client_us),
            ..ServerOutcome::default()
        },
        calls: records,
    };
    Built {
        shape,
        trace,
        ready,
        start,
        end,
        deps,
    }
}

fn analyzer_shares(doc: &[u8]) -> (HashMap<String, f64>, u64) {
    let mut an = Analyzer::new(Options::default());
    let mut interner = std::mem::take(&mut an.interner);
    let mut warnings = std::mem::take(&mut an.warnings);
    let raws = manifold_trace::read::read_bytes(doc, &mut interner, &mut warnings)
        .expect("the analyzer reads the export");
    an.interner = interner;
    an.warnings = warnings;
    for r in raws {
        an.add_raw(r);
    }
    let total: i128 = an.ops.values().map(|a| a.critical_total).sum();
    let shares = an
        .ops
        .iter()
        .filter(|(_, a)| a.critical_total > 0)
        .map(|((s, o), a)| {
            (
                format!("{}:{}", an.interner.name(*s), an.interner.name(*o)),
                a.critical_total as f64 / total as f64,
            )
        })
        .collect();
    (shares, an.warnings.total())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn store_and_analyzer_agree_on_where_the_time_went(
        calls in proptest::collection::vec(gen_call(), 1..=7),
        after_us in 1u64..=50,
        client_us in prop_oneof![Just(0u64), 1u64..=300_000],
    ) {
        let b = build(&calls, after_us, client_us);
        let n = calls.len();
        // Two calls ending at the same instant: the walk's tie-break is not the plan's.
        let mut ends = b.end.clone();
        ends.sort_unstable();
        ends.dedup();
        prop_assume!(ends.len() == n);

        let a = analyze(&b.trace, Some(&b.shape));
        // The path from the plan: every step is a real dependency with the latest end.
        prop_assert!(!a.path.is_empty());
        for w in a.path.windows(2) {
            let (p, c) = (a.calls[w[0]].index, a.calls[w[1]].index);
            prop_assert!(b.deps[c].contains(&(p as u32)));
            prop_assert_eq!(b.end[p], b.ready[c]);
        }
        // Slack never negative, zero on the path, and the accounting adds up: the client's
        // wait all came before the first call, and none of it is Manifold's.
        let total: Duration = a.calls.iter().map(|c| c.critical).sum::<Duration>()
            + a.own_critical
            + a.client_critical;
        prop_assert_eq!(total, b.trace.duration);
        prop_assert_eq!(a.own_critical, a.own.total());
        prop_assert_eq!(a.own.client, Duration::from_micros(client_us));
        prop_assert_eq!(a.client_critical, a.own.client);
        prop_assert!(a.own.total() <= Duration::from_micros(50 * (n as u64 + 1) + after_us));
        for c in &a.calls {
            prop_assert!(c.slack.is_some(), "every call is awaited");
            if c.on_path {
                prop_assert_eq!(c.slack, Some(Duration::ZERO));
            }
        }
        // A call that ends inside a path call's scheduling gap, other than its binding input,
        // would be blamed by the timestamps: outside what the two sources can agree on.
        for w in a.path.windows(2) {
            let (p, c) = (a.calls[w[0]].index, a.calls[w[1]].index);
            let gap = b.ready[c]..b.start[c];
            prop_assume!((0..n).all(|x| x == p || !gap.contains(&b.end[x])));
        }

        let entry = Entry { route: 0, seq: 0, trace: Arc::new(b.trace) };
        let doc = serde_json::json!({ "data": [json::jaeger_trace("manifold", &entry, &a)] });
        let (theirs, warnings) = analyzer_shares(doc.to_string().as_bytes());
        prop_assert_eq!(warnings, 0);

        let d = entry.trace.duration.as_nanos() as f64;
        let mut ours: HashMap<String, f64> = HashMap::new();
        if a.own_critical > Duration::ZERO {
            ours.insert("manifold:GET /r".into(), a.own_critical.as_nanos() as f64 / d);
        }
        if a.client_critical > Duration::ZERO {
            ours.insert(format!("manifold:{}", json::CLIENT_BODY), a.client_critical.as_nanos() as f64 / d);
        }
        for c in a.calls.iter().filter(|c| c.critical > Duration::ZERO) {
            ours.insert(format!("svc-{}:{}", c.name, c.name), c.critical.as_nanos() as f64 / d);
        }
        for k in ours.keys().chain(theirs.keys()) {
            let (x, y) = (ours.get(k).copied().unwrap_or(0.0), theirs.get(k).copied().unwrap_or(0.0));
            prop_assert!((x - y).abs() <= 0.01, "{}: store {:.5}, analyzer {:.5}\n{:?}\n{:?}", k, x, y, ours, theirs);
        }
    }
}
