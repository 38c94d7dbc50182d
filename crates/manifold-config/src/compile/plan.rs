//! A composing route's plan: its calls and response, and the order their dependencies allow
//! (levels of calls that may run at once), refusing cycles.

use super::call::{compile_call, RawCall};
use super::resolve::RouteCtx;
use super::response::{compile_response, RawResponse};
use super::values::diag_len;
use crate::error::{Diagnostics, ErrorKind};
use crate::model::*;
use crate::spanned::Spanned;
use std::collections::HashMap;
use std::ops::Range;

/// Names a template cannot use for a call: they are the request's own sources.
const RESERVED: [&str; 4] = ["path", "query", "header", "request"];

pub(super) fn compile_plan(
    route: &str,
    params: &[String],
    raw_calls: &Spanned<Vec<Spanned<RawCall>>>,
    raw_response: Option<&Spanned<RawResponse>>,
    ctx: &RouteCtx<'_>,
    diag: &mut Diagnostics<'_>,
) -> Option<Plan> {
    let before = diag_len(diag);
    if raw_calls.get_ref().is_empty() {
        diag.push(
            ErrorKind::Value,
            raw_calls.span(),
            format!("route `{route}` has an empty `calls` list"),
        );
        return None;
    }
    // Names first: templates may refer to calls declared later.
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw_calls.get_ref().iter().enumerate() {
        let name = c.get_ref().name.get_ref();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !valid {
            diag.push(
                ErrorKind::Value,
                c.get_ref().name.span(),
                format!("route `{route}`: call name {name:?} must be letters, digits, `_` or `-`"),
            );
        } else if RESERVED.contains(&name.as_str()) {
            diag.push(
                ErrorKind::Value,
                c.get_ref().name.span(),
                format!(
                    "route `{route}`: `{name}` is reserved for the request's own values; name the call otherwise"
                ),
            );
        } else if index.insert(name.clone(), i).is_some() {
            diag.push(
                ErrorKind::Duplicate,
                c.get_ref().name.span(),
                format!("route `{route}`: two calls are named `{name}`"),
            );
        }
    }

    let mut calls = Vec::new();
    let mut deps: Vec<Vec<usize>> = Vec::new();
    // The calls whose results each call's templates read (not `after`), with where it is named.
    let mut read_deps: Vec<(Vec<usize>, Range<usize>)> = Vec::new();
    let mut reads_body = false;
    let mut reads = super::resolve::TextReads::default();
    for c in raw_calls.get_ref() {
        let compiled = compile_call(c.get_ref(), route, params, &index, ctx, diag);
        read_deps.push((compiled.reads_from, c.get_ref().name.span()));
        reads_body |= compiled.reads_body;
        reads.extend(compiled.reads);
        deps.push(compiled.deps);
        calls.push(compiled.call);
    }

    // An async or publish call's result is a receipt (`task_id`), not an answer: no other call
    // may read it (the response may, to hand the client `{CALL.task_id}`).
    for (i, (reads, span)) in read_deps.iter().enumerate() {
        for &r in reads {
            let what = match calls[r].mode {
                Mode::Sync => continue,
                Mode::Async => "which is async (queued and delivered later)",
                Mode::Publish => "which publishes an event (queued and published later)",
            };
            diag.push(
                ErrorKind::Value,
                span.clone(),
                format!(
                    "route `{route}`: call `{}` reads the result of `{}`, {what}; only the response may read it (`{{{}.task_id}}`); use `after` for ordering",
                    calls[i].name, calls[r].name, calls[r].name
                ),
            );
        }
    }

    crate::dataflow::warn_required_reads_optional(route, &calls, &read_deps, diag);

    let (response, response_reads_body, response_reads) =
        compile_response(route, params, &index, &calls, raw_response, diag);
    reads_body |= response_reads_body;
    reads.extend(response_reads);
    let reads = reads.finish();

    if diag_len(diag) > before {
        return None;
    }

    // Cycles: Kahn's algorithm; whatever cannot be ordered is on or behind a cycle.
    let n = calls.len();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut indeg: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut level_of = vec![0usize; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let roots = queue.clone();
    let mut ordered = 0;
    while let Some(i) = queue.pop() {
        ordered += 1;
        for &j in &dependents[i] {
            level_of[j] = level_of[j].max(level_of[i] + 1);
            indeg[j] -= 1;
            if indeg[j] == 0 {
                queue.push(j);
            }
        }
    }
    if ordered < n {
        let cycle = find_cycle(&deps, &indeg);
        let names: Vec<&str> = cycle.iter().map(|&i| calls[i].name.as_str()).collect();
        let first = cycle.first().copied().unwrap_or(0);
        diag.push(
            ErrorKind::Cycle,
            raw_calls.get_ref()[first].get_ref().name.span(),
            format!(
                "route `{route}`: calls depend on each other in a cycle: {} → {}",
                names.join(" → "),
                names.first().copied().unwrap_or("?")
            ),
        );
        return None;
    }
    let depth = level_of.iter().copied().max().unwrap_or(0) + 1;
    let mut levels = vec![Vec::new(); depth];
    for (i, &l) in level_of.iter().enumerate() {
        levels[l].push(i);
    }
    Some(Plan {
        calls,
        deps,
        dependents,
        roots,
        levels,
        response,
        reads_request_body: reads_body,
        query_reads: reads.query,
        header_reads: reads.headers,
        enqueue: Enqueue::default(),
    })
}

/// Find one cycle among the calls Kahn's algorithm could not order (`indeg > 0`).
fn find_cycle(deps: &[Vec<usize>], indeg: &[usize]) -> Vec<usize> {
    let Some(start) = (0..deps.len()).find(|&i| indeg[i] > 0) else {
        return Vec::new();
    };
    // Walk backwards along unresolved dependencies until a node repeats.
    let mut seen: Vec<Option<usize>> = vec![None; deps.len()];
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if let Some(pos) = seen[cur] {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            // `path` follows dependencies backwards; present it in execution order.
            cycle.reverse();
            return cycle;
        }
        seen[cur] = Some(path.len());
        path.push(cur);
        match deps[cur].iter().find(|&&d| indeg[d] > 0) {
            Some(&next) => cur = next,
            None => return path,
        }
    }
}
