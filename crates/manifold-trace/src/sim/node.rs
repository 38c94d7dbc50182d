//! One node's simulated duration from its children's: the dependency rule of the module's
//! model, with a Fenwick tree over the children by original end (and the time the children
//! cover, shared with the route-plan evidence).

use super::{Changes, NO_GROUP};
use crate::critical::CpGraph;

#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Fenwick tree of (new end, original end) prefix maxima.
    fen: Vec<(i64, i64)>,
    /// Children already placed as members of a group.
    done: Vec<bool>,
    /// One group's members (and, while preparing, children sorted by end).
    pub(super) members: Vec<usize>,
}

fn scaled(x: i64, f: f64) -> i64 {
    if f == 1.0 {
        x
    } else {
        (x as f64 * f).round() as i64
    }
}

/// One node's new duration from its children's (`new_dur`); `rank` and `preds` are its
/// children's entries of [`Simulator`](super::Simulator).
pub(super) fn simulate_node<C: Changes>(
    g: &CpGraph,
    plan: &C,
    i: u32,
    rank: &[u32],
    preds: &[u32],
    new_dur: &[i64],
    s: &mut Scratch,
) -> i64 {
    let iu = i as usize;
    if plan.removed(iu) {
        return 0;
    }
    let f = plan.scale(iu);
    let (ps, pe) = (g.start[iu], g.end[iu]);
    let kids = &g.children[iu];
    if kids.is_empty() {
        return scaled(pe - ps, f);
    }
    let k = kids.len();
    let last_end = kids.iter().map(|&c| g.end[c as usize]).max().unwrap_or(ps);
    let trailing = pe - last_end;
    if plan.parallel(iu) {
        let lead = g.start[kids[0] as usize] - ps;
        let union = union_len(g, kids);
        let self_time = (pe - ps) - union;
        let longest = kids.iter().map(|&c| new_dur[c as usize]).max().unwrap_or(0);
        return (scaled(lead, f) + longest + scaled(self_time - lead, f)).max(0);
    }
    if k == 1 {
        // what the loop below does for one child, which has no sibling before it
        let c = kids[0] as usize;
        return (scaled(g.start[c] - ps, f) + new_dur[c] + scaled(trailing, f)).max(0);
    }
    // children in their order; a Fenwick tree over the children sorted by original end holds
    // prefix maxima of (new end, original end) of those already placed
    let Scratch { fen, done, members } = s;
    fen.clear();
    fen.resize(k + 1, (i64::MIN, i64::MIN));
    done.clear();
    done.resize(k, false);
    let mut max_new_end = i64::MIN;
    for j in 0..k {
        if done[j] {
            continue;
        }
        let c = kids[j] as usize;
        let cs = g.start[c];
        // predecessors: siblings already placed whose original end <= cs
        let (pred_new, pred_orig) = fen_query(fen, preds[j] as usize);
        let start_rel = if pred_orig != i64::MIN {
            pred_new + scaled(cs - pred_orig, f)
        } else {
            scaled(cs - ps, f)
        };
        let grp = plan.group(c);
        if grp == NO_GROUP {
            // alone: no later child looks at `done[j]` (only members of a group are marked)
            let end = start_rel + new_dur[c];
            fen_update(fen, rank[j] as usize + 1, end, g.end[c]);
            max_new_end = max_new_end.max(end);
            continue;
        }
        // the group starts together; whatever waits for one of them waits for all
        members.clear();
        let mut grp_end = i64::MIN;
        for m in j..k {
            let cm = kids[m] as usize;
            if !done[m] && plan.group(cm) == grp {
                grp_end = grp_end.max(start_rel + new_dur[cm]);
                done[m] = true;
                members.push(m);
            }
        }
        for &m in members.iter() {
            fen_update(fen, rank[m] as usize + 1, grp_end, g.end[kids[m] as usize]);
        }
        max_new_end = max_new_end.max(grp_end);
    }
    (max_new_end + scaled(trailing, f)).max(0)
}

fn fen_update(fen: &mut [(i64, i64)], mut pos: usize, vnew: i64, vorig: i64) {
    while let Some(slot) = fen.get_mut(pos) {
        slot.0 = slot.0.max(vnew);
        slot.1 = slot.1.max(vorig);
        pos += pos & pos.wrapping_neg();
    }
}

fn fen_query(fen: &[(i64, i64)], mut pos: usize) -> (i64, i64) {
    let (mut a, mut b) = (i64::MIN, i64::MIN);
    while pos > 0 && pos < fen.len() {
        a = a.max(fen[pos].0);
        b = b.max(fen[pos].1);
        pos -= pos & pos.wrapping_neg();
    }
    (a, b)
}

/// The time covered by at least one of `kids` (overlaps counted once): what the children take
/// of their parent, the rest being its own time. Shared with the route-plan evidence.
pub(crate) fn union_len(g: &CpGraph, kids: &[u32]) -> i64 {
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
