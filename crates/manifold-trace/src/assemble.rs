//! Turning a bag of spans that share a trace id into a [`Trace`]: resolve parents, merge
//! duplicates, repair what can be repaired and count everything else as a warning.

use crate::model::{flags, FxHashMap, Interner, Span, SpanId, Trace, WarningKind, Warnings};

/// Assemble one trace. Never panics on any input; returns `None` only when no span is usable.
pub fn assemble(
    trace_id: String,
    mut spans: Vec<Span>,
    interner: &Interner,
    warnings: &mut Warnings,
) -> Option<Trace> {
    if spans.is_empty() {
        return None;
    }
    // 1. Ids: the first span with an id wins; a Zipkin shared server half becomes the child of
    //    the client half and the target of the id (its children are the server's children).
    let mut by_id: FxHashMap<SpanId, u32> = FxHashMap::default();
    by_id.reserve(spans.len());
    let mut dropped = vec![false; spans.len()];
    for i in 0..spans.len() {
        let id = spans[i].id;
        match by_id.get(&id).copied() {
            None => {
                by_id.insert(id, i as u32);
            }
            Some(j) => {
                let (ju, iu) = (j as usize, i);
                let i_shared = spans[iu].has(flags::SHARED);
                let j_shared = spans[ju].has(flags::SHARED);
                if i_shared && !j_shared {
                    // server half: child of the client half, owner of the id
                    spans[iu].parent_id = None;
                    spans[iu].parent = Some(j);
                    by_id.insert(id, i as u32);
                } else if j_shared && !i_shared {
                    // client half arriving after its server half
                    spans[ju].parent_id = None;
                    spans[ju].parent = Some(i as u32);
                } else {
                    let (a, b) = (&spans[ju], &spans[iu]);
                    let interner_name = |s: &Span| interner.name(s.operation).to_string();
                    let what = format!(
                        "trace {trace_id}: span {} ({} and {})",
                        id.render(interner),
                        interner_name(a),
                        interner_name(b)
                    );
                    warnings.add_with(WarningKind::DuplicateSpanId, || what);
                    dropped[iu] = true;
                }
            }
        }
    }
    // 2. Resolve parents (through spans dropped for lack of a start time).
    let n = spans.len();
    let no_start: Vec<bool> = spans.iter().map(|s| s.has(flags::NO_START)).collect();
    for i in 0..n {
        if dropped[i] {
            continue;
        }
        if no_start[i] {
            warnings.add_with(WarningKind::MissingTimestamp, || {
                format!("trace {trace_id}: span {}", spans[i].id.render(interner))
            });
        }
        if spans[i].parent.is_some() {
            continue;
        }
        let Some(pid) = spans[i].parent_id else {
            continue;
        };
        let mut target = by_id.get(&pid).copied();
        if target == Some(i as u32) {
            target = None;
        }
        match target {
            Some(t) => spans[i].parent = Some(t),
            None => {
                warnings.add_with(WarningKind::OrphanSpan, || {
                    format!(
                        "trace {trace_id}: span {} names parent {} which is not in the trace",
                        spans[i].id.render(interner),
                        pid.render(interner)
                    )
                });
            }
        }
    }
    // skip parents that are dropped (duplicates never are parents: the id maps to the first)
    for i in 0..n {
        let mut hops = 0;
        while let Some(p) = spans[i].parent {
            let pu = p as usize;
            if (no_start[pu] || dropped[pu]) && hops < n {
                spans[i].parent = spans[pu].parent;
                hops += 1;
            } else {
                break;
            }
        }
    }
    for i in 0..n {
        if no_start[i] {
            dropped[i] = true;
        }
    }
    // 3. Cycles: walk up from each span; a walk that revisits a span of its own walk is a cycle.
    let mut state = vec![0u8; n]; // 0 new, 1 on current walk, 2 done
    let mut walk: Vec<usize> = Vec::new();
    for i in 0..n {
        if dropped[i] || state[i] == 2 {
            continue;
        }
        walk.clear();
        let mut cur = i;
        loop {
            if state[cur] == 2 {
                break;
            }
            if state[cur] == 1 {
                // cycle: cut it at `cur`
                warnings.add_with(WarningKind::ParentCycle, || {
                    format!("trace {trace_id}: span {}", spans[cur].id.render(interner))
                });
                spans[cur].parent = None;
                break;
            }
            state[cur] = 1;
            walk.push(cur);
            match spans[cur].parent {
                Some(p) => cur = p as usize,
                None => break,
            }
        }
        for &w in &walk {
            state[w] = 2;
        }
    }
    // 4. Keep the usable spans, re-indexed.
    // (the usual case, nothing dropped, keeps the list and its indices as they are)
    let mut kept: Vec<Span> = if dropped.contains(&true) {
        let mut remap = vec![u32::MAX; n];
        let mut kept = Vec::with_capacity(n);
        for (i, s) in spans.into_iter().enumerate() {
            if !dropped[i] {
                remap[i] = kept.len() as u32;
                kept.push(s);
            }
        }
        for s in &mut kept {
            s.parent = s.parent.and_then(|p| {
                let r = remap[p as usize];
                (r != u32::MAX).then_some(r)
            });
        }
        kept
    } else {
        spans
    };
    if kept.is_empty() {
        return None;
    }
    for s in &mut kept {
        if s.duration < 0 {
            warnings.add(WarningKind::NegativeDuration);
            s.duration = 0;
        }
        if s.service == 0 {
            warnings.add(WarningKind::MissingServiceName);
        }
    }
    // 5. Missing durations: the span lasted at least until its last child ended.
    if kept.iter().any(|s| s.has(flags::NO_DURATION)) {
        let order = post_order(&kept);
        for i in order {
            if kept[i].has(flags::NO_DURATION) {
                warnings.add(WarningKind::MissingDuration);
            }
            if let Some(p) = kept[i].parent {
                let pu = p as usize;
                if kept[pu].has(flags::NO_DURATION) {
                    let need = kept[i].end().saturating_sub(kept[pu].start);
                    if need > kept[pu].duration {
                        kept[pu].duration = need;
                    }
                }
            }
        }
    }
    // 6. The root: the earliest parentless span (the longest on ties).
    let mut root: Option<usize> = None;
    let mut roots = 0usize;
    for (i, s) in kept.iter().enumerate() {
        if s.parent.is_none() {
            roots += 1;
            root = match root {
                None => Some(i),
                Some(r) => {
                    let rs = &kept[r];
                    if (s.start, -s.duration) < (rs.start, -rs.duration) {
                        Some(i)
                    } else {
                        Some(r)
                    }
                }
            };
        }
    }
    let root = root? as u32;
    if roots > 1 {
        warnings.add_with(WarningKind::MultipleRoots, || {
            format!("trace {trace_id}: {roots} spans without a parent")
        });
    }
    Some(Trace {
        trace_id,
        spans: kept,
        root,
    })
}

/// Indices of spans with every child before its parent.
pub(crate) fn post_order(spans: &[Span]) -> Vec<usize> {
    let n = spans.len();
    let mut child_count = vec![0u32; n];
    for s in spans {
        if let Some(p) = s.parent {
            child_count[p as usize] += 1;
        }
    }
    // Kahn's algorithm from the leaves up
    let mut out: Vec<usize> = (0..n).filter(|&i| child_count[i] == 0).collect();
    let mut k = 0;
    while k < out.len() {
        let i = out[k];
        k += 1;
        if let Some(p) = spans[i].parent {
            let pu = p as usize;
            child_count[pu] -= 1;
            if child_count[pu] == 0 {
                out.push(pu);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interner;

    fn span(i: &mut Interner, id: &str, parent: Option<&str>, start: i64, dur: i64) -> Span {
        let sid = SpanId::parse(id, i);
        let svc = i.intern("svc");
        let op = i.intern(id);
        let mut s = Span::new(sid, svc, op, start, dur);
        s.parent_id = parent.map(|p| SpanId::parse(p, i));
        s
    }

    #[test]
    fn resolves_parents_and_picks_root() {
        let mut i = Interner::new();
        let spans = vec![
            span(&mut i, "b", Some("a"), 10, 5),
            span(&mut i, "a", None, 0, 100),
            span(&mut i, "c", Some("zz"), 20, 5),
        ];
        let mut w = Warnings::default();
        let t = assemble("t".into(), spans, &i, &mut w).expect("trace");
        assert_eq!(t.root_span().id, SpanId::parse("a", &mut i));
        assert_eq!(t.spans[0].parent, Some(1));
        assert_eq!(w.count(WarningKind::OrphanSpan), 1);
        assert_eq!(w.count(WarningKind::MultipleRoots), 1);
    }

    #[test]
    fn duplicates_cycles_and_missing_fields_are_warnings() {
        let mut i = Interner::new();
        let mut no_start = span(&mut i, "m", Some("a"), 0, 0);
        no_start.flags |= flags::NO_START;
        let mut no_dur = span(&mut i, "n", Some("a"), 5, 0);
        no_dur.flags |= flags::NO_DURATION;
        let spans = vec![
            span(&mut i, "a", None, 0, 100),
            span(&mut i, "a", None, 0, 50),
            span(&mut i, "x", Some("y"), 0, 1),
            span(&mut i, "y", Some("x"), 0, 1),
            no_start,
            span(&mut i, "k", Some("m"), 10, 20),
            no_dur,
            span(&mut i, "o", Some("n"), 6, 30),
        ];
        let mut w = Warnings::default();
        let t = assemble("t".into(), spans, &i, &mut w).expect("trace");
        assert_eq!(w.count(WarningKind::DuplicateSpanId), 1);
        assert_eq!(w.count(WarningKind::ParentCycle), 1);
        assert_eq!(w.count(WarningKind::MissingTimestamp), 1);
        assert_eq!(w.count(WarningKind::MissingDuration), 1);
        // k moved up to a
        let k = t
            .spans
            .iter()
            .find(|s| s.id == SpanId::parse("k", &mut i))
            .expect("k");
        assert_eq!(
            t.spans[k.parent.expect("parent") as usize].id,
            SpanId::parse("a", &mut i)
        );
        let n = t
            .spans
            .iter()
            .find(|s| s.id == SpanId::parse("n", &mut i))
            .expect("n");
        assert_eq!(n.duration, 31);
    }
}
