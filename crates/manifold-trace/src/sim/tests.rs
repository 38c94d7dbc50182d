//! The simulation's unit tests on a small checkout trace (the property tests against a full
//! simulation and the earlier implementation are in `tests/`).

use super::*;
use crate::critical::tests::graph;
use crate::critical::CpGraph;

// checkout: 750 ms sequential (order 100, payment 300, inventory 200, confirm 100, 50 own)
fn checkout() -> CpGraph {
    graph(&[
        (0, 750, None),
        (10, 100, Some(0)),
        (120, 300, Some(0)),
        (430, 200, Some(0)),
        (640, 100, Some(0)),
    ])
}

#[test]
fn identity_reproduces() {
    let g = checkout();
    let d = simulate(&g, &Plan::identity(g.len()));
    assert_eq!(d, vec![750, 100, 300, 200, 100]);
}

#[test]
fn removing_a_call_moves_its_dependents() {
    let g = checkout();
    let mut p = Plan::identity(g.len());
    p.removed[2] = true; // payment
    assert_eq!(simulate_root(&g, &p), 450);
}

#[test]
fn parallel_keeps_own_work() {
    let g = checkout();
    let mut p = Plan::identity(g.len());
    p.parallel[0] = true;
    // lead 10 + longest 300 + (own 50 - lead 10)
    assert_eq!(simulate_root(&g, &p), 350);
}

#[test]
fn group_starts_together_and_joins() {
    let g = checkout();
    let mut p = Plan::identity(g.len());
    p.group[2] = 7;
    p.group[3] = 7; // payment and inventory together: 10+100+10 + 300 + 10 + 100 + 10
    assert_eq!(simulate_root(&g, &p), 540);
}

#[test]
fn speedup_scales_own_work_only() {
    let g = checkout();
    let mut p = Plan::identity(g.len());
    p.scale[2] = 0.5;
    assert_eq!(simulate_root(&g, &p), 600);
    let mut q = Plan::identity(g.len());
    q.scale[0] = 0.0; // the parent's own 50 ms vanish
    assert_eq!(simulate_root(&g, &q), 700);
}

#[test]
fn simulator_runs_start_from_the_unchanged_durations() {
    let g = checkout();
    let mut sim = Simulator::new(&g);
    let mut p = Plan::identity(g.len());
    p.removed[2] = true;
    assert_eq!(sim.root_duration(&p), 450);
    // the next run does not see the payment removed
    p.reset(g.len());
    p.scale[2] = 0.5;
    assert_eq!(sim.root_duration(&p), 600);
    p.reset(g.len());
    assert_eq!(sim.root_duration(&p), 750);
    // a plan too short for the graph gives 0 (as `simulate_root`), one with a short list
    // reads no change past its end; neither changes the runs after it
    assert_eq!(sim.root_duration(&Plan::identity(2)), 0);
    let mut short = Plan::identity(g.len());
    short.removed.truncate(g.len() - 1);
    short.removed[1] = true;
    assert_eq!(sim.root_duration(&short), 650);
    assert_eq!(simulate_root(&g, &short), 650);
    p.parallel[0] = true;
    assert_eq!(sim.root_duration(&p), 350);
    p.reset(g.len());
    assert_eq!(sim.root_duration(&p), 750);
}

#[test]
fn a_node_with_two_parents_is_simulated_in_full() {
    // node 3 is a child of both 1 and 2 (only `CpGraph::new` can say so)
    let g = CpGraph::new(
        0,
        vec![0, 10, 50, 60],
        vec![100, 40, 90, 70],
        vec![vec![1, 2], vec![3], vec![3], vec![]],
    );
    let mut sim = Simulator::new(&g);
    for i in 0..g.len() {
        let mut p = Plan::identity(g.len());
        p.removed[i] = i > 0;
        p.scale[3] = 0.5;
        assert_eq!(sim.root_duration(&p), simulate_root(&g, &p), "{i}");
    }
}

#[test]
fn buffers_carry_over_to_another_graph() {
    let big = checkout();
    let small = graph(&[(0, 100, None), (10, 50, Some(0))]);
    let mut sim = Simulator::new(&big);
    let mut p = Plan::identity(big.len());
    p.removed[1] = true;
    assert_eq!(sim.root_duration(&p), 650);
    let mut sim = Simulator::with_buffers(&small, sim.into_buffers());
    let mut q = Plan::identity(small.len());
    assert_eq!(sim.root_duration(&q), 100);
    q.scale[1] = 0.0;
    assert_eq!(sim.root_duration(&q), 50);
    let mut sim = Simulator::with_buffers(&big, sim.into_buffers());
    assert_eq!(sim.root_duration(&p), 650);
}
