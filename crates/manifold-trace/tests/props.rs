//! Property tests: the critical path tiles the root exactly; what-if with no change reproduces
//! the input; readers never panic.

use manifold_trace::model::{Interner, Span, SpanId, Trace, Warnings};
use manifold_trace::sim::{simulate, Plan, Simulator};
use manifold_trace::{critical_path, CpGraph, Semantics};
use proptest::prelude::*;

/// A random trace: span i's parent is a random earlier span; times are random and may overflow
/// their parent (so clipping is exercised).
fn arb_trace() -> impl Strategy<Value = Trace> {
    (1usize..60).prop_flat_map(|n| {
        (
            proptest::collection::vec((0u32..1000, 0i64..1000, 0i64..400), n),
            any::<bool>(),
        )
            .prop_map(move |(v, follows)| {
                let mut spans = Vec::with_capacity(v.len());
                for (i, (p, s, d)) in v.into_iter().enumerate() {
                    let mut sp = Span::new(SpanId::Hex(i as u64 + 1), 1, 1 + (i as u32 % 5), s, d);
                    if i > 0 {
                        let parent = (p as usize) % i;
                        sp.parent = Some(parent as u32);
                        if follows && i % 7 == 3 {
                            sp.link = manifold_trace::model::Link::FollowsFrom;
                        }
                    } else {
                        sp.start = 0;
                        sp.duration = 1000;
                    }
                    spans.push(sp);
                }
                Trace {
                    trace_id: "t".into(),
                    spans,
                    root: 0,
                }
            })
    })
}

fn check_tiling(g: &CpGraph, sem: Semantics) -> Result<(), TestCaseError> {
    let cp = critical_path(g, sem);
    let root = g.root as usize;
    let mut t = g.start[root];
    for s in &cp.sections {
        prop_assert!(s.start == t, "gap or overlap at {t}: {s:?}");
        prop_assert!(s.end > s.start);
        t = s.end;
    }
    prop_assert_eq!(
        t,
        if cp.sections.is_empty() {
            g.start[root]
        } else {
            g.end[root]
        }
    );
    let total: i64 = cp.sections.iter().map(|s| s.end - s.start).sum();
    prop_assert_eq!(total, g.end[root] - g.start[root]);
    if sem.overlap_allowance == 0.0 {
        // strict mode: the accounting equals the drawn sections, node by node
        prop_assert_eq!(cp.total_exclusive(), g.end[root] - g.start[root]);
        for n in &cp.nodes {
            let drawn: i64 = cp
                .sections
                .iter()
                .filter(|s| s.node == n.node)
                .map(|s| s.end - s.start)
                .sum();
            prop_assert_eq!(drawn, n.exclusive);
        }
    }
    Ok(())
}

/// Changes to one node: (node, kind, value) — kind 0 removes it, 1 scales its own work by
/// `value / 4` (1.0 included), 2 makes its calls parallel, 3 puts it in group `value % 3`.
fn arb_plans() -> impl Strategy<Value = Vec<Vec<(usize, u8, u8)>>> {
    proptest::collection::vec(
        proptest::collection::vec((0usize..60, 0u8..4, 0u8..8), 0..6),
        1..8,
    )
}

fn plan_of(n: usize, changes: &[(usize, u8, u8)]) -> Plan {
    let mut p = Plan::identity(n);
    for &(node, kind, v) in changes {
        let i = node % n;
        match kind {
            0 => p.removed[i] = true,
            1 => p.scale[i] = f64::from(v) / 4.0,
            2 => p.parallel[i] = true,
            _ => p.group[i] = u32::from(v % 3),
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn simulator_gives_what_the_full_simulation_gave(trace in arb_trace(), plans in arb_plans()) {
        let mut w = Warnings::default();
        let g = CpGraph::from_trace(&trace, &mut w);
        let n = g.len();
        // one simulator for all the plans, as the analysis uses it (each run starts from the
        // unchanged durations the previous one left)
        let mut sim = Simulator::new(&g);
        for changes in &plans {
            let plan = plan_of(n, changes);
            let want = crate::sim_reference::simulate(&g, &plan);
            prop_assert_eq!(sim.root_duration(&plan), want[g.root as usize]);
            prop_assert_eq!(simulate(&g, &plan), want);
        }
    }

    #[test]
    fn critical_path_tiles_the_root(trace in arb_trace()) {
        let mut w = Warnings::default();
        let g = CpGraph::from_trace(&trace, &mut w);
        check_tiling(&g, Semantics::JAEGER)?;
        check_tiling(&g, Semantics::CRISP)?;
        check_tiling(&g, Semantics { overlap_allowance: 0.2 })?;
    }

    #[test]
    fn what_if_with_no_change_reproduces_the_input(trace in arb_trace()) {
        let mut w = Warnings::default();
        let g = CpGraph::from_trace(&trace, &mut w);
        let d = simulate(&g, &Plan::identity(g.len()));
        for n in g.reachable() {
            prop_assert_eq!(d[n as usize], g.duration(n));
        }
    }

    #[test]
    fn what_if_never_lengthens_when_work_is_removed(trace in arb_trace(), pick in 0usize..60) {
        let mut w = Warnings::default();
        let g = CpGraph::from_trace(&trace, &mut w);
        let mut plan = Plan::identity(g.len());
        let victim = pick % g.len();
        if victim != 0 {
            plan.removed[victim] = true;
        }
        plan.scale[pick % g.len()] = 0.5;
        let d = simulate(&g, &plan);
        prop_assert!(d[0] <= g.duration(0));
    }

    #[test]
    fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let _ = manifold_trace::read::read_bytes(&bytes, &mut i, &mut w);
    }

    #[test]
    fn readers_never_panic_on_mutated_traces(cut in 0usize..2000, flip in any::<u8>()) {
        let base = manifold_trace::synth::checkout_file(1, 7).into_bytes();
        let mut b = base.clone();
        let k = cut % b.len();
        b[k] ^= flip;
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let _ = manifold_trace::read::read_bytes(&b, &mut i, &mut w);
        let _ = manifold_trace::read::read_bytes(&base[..k], &mut i, &mut w);
    }
}
