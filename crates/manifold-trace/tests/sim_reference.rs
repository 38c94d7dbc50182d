//! The simulation as it was before [`manifold_trace::sim::Simulator`] (commit ff0d5bf),
//! verbatim: the property tests hold the faster one to the same numbers.

#![allow(clippy::all)]

use manifold_trace::sim::{Plan, NO_GROUP};
use manifold_trace::CpGraph;

/// New duration of every node under `plan` (index = node). Unreachable nodes keep 0.
pub(crate) fn simulate(g: &CpGraph, plan: &Plan) -> Vec<i64> {
    let n = g.len();
    let mut new_dur = vec![0i64; n];
    if (g.root as usize) >= n || plan.scale.len() < n {
        return new_dur;
    }
    // post-order over the reachable tree
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut stack = vec![g.root];
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(g.children[i as usize].iter().copied());
    }
    let mut scratch = Scratch::default();
    for &i in order.iter().rev() {
        new_dur[i as usize] = simulate_node(g, plan, i, &new_dur, &mut scratch);
    }
    new_dur
}

#[derive(Default)]
struct Scratch {
    by_end: Vec<u32>,
    rank: Vec<usize>,
    fen_new: Vec<i64>,
    fen_orig: Vec<i64>,
    new_start: Vec<i64>,
    new_end: Vec<i64>,
    done: Vec<bool>,
}

fn scaled(x: i64, f: f64) -> i64 {
    if f == 1.0 {
        x
    } else {
        (x as f64 * f).round() as i64
    }
}

fn simulate_node(g: &CpGraph, plan: &Plan, i: u32, new_dur: &[i64], s: &mut Scratch) -> i64 {
    let iu = i as usize;
    if plan.removed[iu] {
        return 0;
    }
    let f = plan.scale[iu];
    let (ps, pe) = (g.start[iu], g.end[iu]);
    let kids = &g.children[iu];
    if kids.is_empty() {
        return scaled(pe - ps, f);
    }
    let k = kids.len();
    let last_end = kids.iter().map(|&c| g.end[c as usize]).max().unwrap_or(ps);
    let trailing = pe - last_end;
    if plan.parallel[iu] {
        let lead = g.start[kids[0] as usize] - ps;
        let union = union_len(g, kids);
        let self_time = (pe - ps) - union;
        let longest = kids.iter().map(|&c| new_dur[c as usize]).max().unwrap_or(0);
        return (scaled(lead, f) + longest + scaled(self_time - lead, f)).max(0);
    }
    // children sorted by original end, Fenwick trees of (new end, original end) prefix maxima
    s.by_end.clear();
    s.by_end.extend(0..k as u32);
    s.by_end
        .sort_by_key(|&j| (g.end[kids[j as usize] as usize], j));
    s.rank.clear();
    s.rank.resize(k, 0);
    for (r, &j) in s.by_end.iter().enumerate() {
        s.rank[j as usize] = r;
    }
    s.fen_new.clear();
    s.fen_new.resize(k + 1, i64::MIN);
    s.fen_orig.clear();
    s.fen_orig.resize(k + 1, i64::MIN);
    s.new_start.clear();
    s.new_start.resize(k, 0);
    s.new_end.clear();
    s.new_end.resize(k, 0);
    s.done.clear();
    s.done.resize(k, false);
    let mut max_new_end = i64::MIN;
    for j in 0..k {
        if s.done[j] {
            continue;
        }
        let c = kids[j] as usize;
        let cs = g.start[c];
        // predecessors: siblings already placed whose original end <= cs
        let prefix = s
            .by_end
            .partition_point(|&x| g.end[kids[x as usize] as usize] <= cs);
        let (pred_new, pred_orig) = fen_query(&s.fen_new, &s.fen_orig, prefix);
        let start_rel = if pred_orig != i64::MIN {
            pred_new + scaled(cs - pred_orig, f)
        } else {
            scaled(cs - ps, f)
        };
        let grp = plan.group[c];
        let members: Vec<usize> = if grp != NO_GROUP {
            (j..k)
                .filter(|&m| !s.done[m] && plan.group[kids[m] as usize] == grp)
                .collect()
        } else {
            vec![j]
        };
        let mut grp_end = i64::MIN;
        for &m in &members {
            let cm = kids[m] as usize;
            s.new_start[m] = start_rel;
            s.new_end[m] = start_rel + new_dur[cm];
            grp_end = grp_end.max(s.new_end[m]);
            s.done[m] = true;
        }
        for &m in &members {
            let cm = kids[m] as usize;
            let val = if members.len() > 1 {
                grp_end
            } else {
                s.new_end[m]
            };
            fen_update(
                &mut s.fen_new,
                &mut s.fen_orig,
                s.rank[m] + 1,
                val,
                g.end[cm],
            );
        }
        max_new_end = max_new_end.max(grp_end);
    }
    (max_new_end + scaled(trailing, f)).max(0)
}

fn fen_update(fnew: &mut [i64], forig: &mut [i64], mut pos: usize, vnew: i64, vorig: i64) {
    while pos < fnew.len() {
        fnew[pos] = fnew[pos].max(vnew);
        forig[pos] = forig[pos].max(vorig);
        pos += pos & pos.wrapping_neg();
    }
}

fn fen_query(fnew: &[i64], forig: &[i64], mut pos: usize) -> (i64, i64) {
    let (mut a, mut b) = (i64::MIN, i64::MIN);
    while pos > 0 {
        a = a.max(fnew[pos]);
        b = b.max(forig[pos]);
        pos -= pos & pos.wrapping_neg();
    }
    (a, b)
}

fn union_len(g: &CpGraph, kids: &[u32]) -> i64 {
    let mut iv: Vec<(i64, i64)> = kids
        .iter()
        .map(|&c| (g.start[c as usize], g.end[c as usize]))
        .collect();
    iv.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(i64, i64)> = None;
    for (s, e) in iv {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}
