//! The conversion of one Jaeger span into a [`Span`], shared by the general parser and the fast
//! ones: the process table, Jaeger's time units and the parent chosen among the references.

use crate::format::{
    parse_duration, parse_rfc3339, push_span_sized, service_sym, span_id, text_or_empty, trace_id,
    Attrs, Num, NumOrText, RawTrace, TidCache,
};
use crate::limits::clip;
use crate::model::{Interner, Link, Span, WarningKind, Warnings};

use super::schema::JProcess;

#[derive(Default)]
pub(super) struct Processes {
    /// Service and host symbols by process id (interned once per process, not per span).
    map: crate::model::FxHashMap<String, (u32, Option<u32>)>,
}

impl Processes {
    /// A process by its id (a long id cut, like every name kept: the lookup cuts it too).
    pub(super) fn add(&mut self, id: &str, p: &JProcess<'_>, interner: &mut Interner) {
        let svc = service_sym(p.service_name.as_deref(), interner);
        let mut a = Attrs::default();
        for t in p.tags.iter().flatten() {
            a.add(text_or_empty(&t.key), &t.value());
        }
        let host = a.host.map(|h| interner.intern(&h));
        self.map.insert(clip(id).into_owned(), (svc, host));
    }
}

fn time_us_or_rfc3339(v: &NumOrText<'_>) -> Option<i64> {
    match v {
        NumOrText::Text(t) => parse_rfc3339(t).or_else(|| {
            t.trim()
                .parse::<i64>()
                .ok()
                .and_then(|us| us.checked_mul(1000))
        }),
        _ => v.as_i64().and_then(|us| us.checked_mul(1000)),
    }
}

fn duration_us_or_text(v: &NumOrText<'_>) -> Option<i64> {
    match v {
        NumOrText::Text(t) => match t.trim().parse::<f64>() {
            Ok(us) if us.is_finite() => Some((us * 1000.0).round() as i64),
            _ => parse_duration(t),
        },
        NumOrText::Num(Num::Float(f)) if f.is_finite() => Some((f * 1000.0).round() as i64),
        _ => v.as_i64().and_then(|us| us.checked_mul(1000)),
    }
}

/// Operation symbols of the last few names, by address. Only for input that is never copied
/// (the fast readers borrow every string from the unit's bytes, which stay put while it is
/// converted), where the same address and length always mean the same text; a repeated name
/// then costs no hashing.
#[derive(Default)]
pub(crate) struct OpCache {
    last: [(usize, usize, u32); 4],
    next: usize,
}

impl OpCache {
    fn intern(&mut self, name: &str, interner: &mut Interner) -> u32 {
        let key = (name.as_ptr() as usize, name.len());
        for &(p, l, sym) in &self.last {
            if (p, l) == key {
                return sym;
            }
        }
        let sym = interner.intern(name);
        self.last[self.next % 4] = (key.0, key.1, sym);
        self.next += 1;
        sym
    }
}

/// One reference of a span, as written.
#[derive(Clone, Copy)]
pub(super) struct RefIn<'s> {
    pub(super) ref_type: Option<&'s str>,
    pub(super) trace_id: Option<&'s str>,
    pub(super) span_id: Option<&'s str>,
}

/// The fields of a span that the conversion reads, whichever parser found them.
pub(super) struct SpanIn<'s> {
    pub(super) trace_id: Option<&'s str>,
    pub(super) span_id: Option<&'s str>,
    pub(super) parent_span_id: Option<&'s str>,
    pub(super) operation: Option<&'s str>,
    pub(super) start: Option<&'s NumOrText<'s>>,
    pub(super) duration: Option<&'s NumOrText<'s>>,
    pub(super) process: Option<&'s JProcess<'s>>,
    pub(super) process_id: Option<&'s str>,
}

/// Turn one parsed span into a [`Span`]: the single place that applies Jaeger's rules, shared by
/// the general parser ([`parse`](super::parse)) and the fast trace parser
/// ([`fast`](super::fast)).
#[allow(clippy::too_many_arguments)]
pub(super) fn convert_span_in<'s>(
    s: SpanIn<'s>,
    refs: impl Iterator<Item = RefIn<'s>>,
    mut a: Attrs,
    log_error: bool,
    (default_tid, procs, cache, expect, ops): (
        &str,
        &Processes,
        &mut TidCache,
        usize,
        Option<&mut OpCache>,
    ),
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) {
    let Some(sid_text) = s.span_id else {
        warnings.add_with(WarningKind::MalformedSpan, || {
            "a Jaeger span without spanID".into()
        });
        return;
    };
    let raw_tid = s.trace_id.unwrap_or("");
    let tid: &str = if raw_tid.is_empty() {
        default_tid
    } else {
        cache.get(raw_tid)
    };
    let id = span_id(sid_text, interner);
    // the process's host, interned with the process table (not per span)
    let (mut service, mut host, mut proc_host) = (0u32, None, None);
    if let Some(p) = s.process {
        service = service_sym(p.service_name.as_deref(), interner);
        let mut a = Attrs::default();
        for t in p.tags.iter().flatten() {
            a.add(text_or_empty(&t.key), &t.value());
        }
        host = a.host;
    } else if let Some(pid) = s.process_id {
        if let Some((svc, h)) = procs.map.get(clip(pid).as_ref()) {
            service = *svc;
            proc_host = *h;
        }
    }
    let op_name = s.operation.unwrap_or("");
    let operation = match ops {
        Some(c) => c.intern(op_name, interner),
        None => interner.intern(op_name),
    };
    let start = s.start.and_then(time_us_or_rfc3339);
    let duration = s.duration.and_then(duration_us_or_text);
    let mut span = Span::timed(id, service, operation, start, duration);
    // parent: the first reference into this trace (CHILD_OF before FOLLOWS_FROM)
    let mut parent: Option<(Link, &str)> = None;
    for r in refs {
        let Some(rs) = r.span_id else {
            continue;
        };
        if let Some(rt) = r.trace_id {
            if !rt.is_empty() && !tid.is_empty() && rt != raw_tid && trace_id(rt) != tid {
                warnings.add_with(WarningKind::ForeignReference, || {
                    format!(
                        "trace {tid}: span {} refers to trace {}",
                        clip(sid_text),
                        clip(rt)
                    )
                });
                continue;
            }
        }
        let link = match r.ref_type {
            Some(t) if t.eq_ignore_ascii_case("FOLLOWS_FROM") => Link::FollowsFrom,
            _ => Link::ChildOf,
        };
        match parent {
            None => parent = Some((link, rs)),
            Some((Link::FollowsFrom, _)) if link == Link::ChildOf => parent = Some((link, rs)),
            _ => {}
        }
    }
    if parent.is_none() {
        if let Some(p) = s.parent_span_id {
            if !p.is_empty() && !p.trim_start_matches('0').is_empty() {
                parent = Some((Link::ChildOf, p));
            }
        }
    }
    if let Some((link, p)) = parent {
        span.link = link;
        span.parent_id = Some(span_id(p, interner));
    }
    if log_error {
        a.error = true;
    }
    if a.host.is_none() {
        a.host = host;
    }
    let own_host = a.host.is_some();
    a.apply(&mut span, interner);
    if !own_host {
        if let Some(h) = proc_host {
            span.host = h;
        }
    }
    push_span_sized(out, tid, span, expect);
}
