//! Rules about what flows between a route's calls at run time, checked at compile time: when the
//! route's queued calls are written (`enqueue`), and the warning for a required call that reads
//! an optional one (whose failure then fails the request instead of answering partially).

use crate::error::{Diagnostics, ErrorKind};
use crate::model::{Call, Enqueue, Mode, RouteKind};
use crate::spanned::Spanned;
use std::ops::Range;

/// Apply the route's `enqueue` key to its plan. The key is refused (not ignored) where it has
/// nothing to act on: a proxy route, or a route without async or publish calls.
pub(crate) fn with_enqueue(
    kind: Option<RouteKind>,
    raw: Option<&Spanned<String>>,
    owner: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<RouteKind> {
    let Some(raw) = raw else { return kind };
    let policy = match raw.get_ref().as_str() {
        "on_success" => Enqueue::OnSuccess,
        "eager" => Enqueue::Eager,
        other => {
            diag.push(
                ErrorKind::Value,
                raw.span(),
                format!("{owner}: enqueue {other:?} is not one of \"on_success\" (the default: tasks are written once every required call succeeded) or \"eager\" (written as soon as rendered)"),
            );
            return kind;
        }
    };
    match kind {
        Some(RouteKind::Compose(mut plan)) => {
            if plan.calls.iter().all(|c| c.mode == Mode::Sync) {
                diag.push(
                    ErrorKind::Value,
                    raw.span(),
                    format!("{owner}: `enqueue` says when async and publish calls are written to the queue, and this route has none; remove it"),
                );
            }
            plan.enqueue = policy;
            Some(RouteKind::Compose(plan))
        }
        Some(proxy @ RouteKind::Proxy { .. }) => {
            diag.push(
                ErrorKind::Value,
                raw.span(),
                format!("{owner}: `enqueue` applies to routes with async or publish calls, not to a proxy route; remove it"),
            );
            Some(proxy)
        }
        None => None,
    }
}

/// Warn where a required call reads the result of an optional one: when the optional call
/// fails, the reader is not sent (its input is unavailable) and, being required, fails the
/// request with 502, which is rarely what `optional` was written for.
pub(crate) fn warn_required_reads_optional(
    route: &str,
    calls: &[Call],
    read_deps: &[(Vec<usize>, Range<usize>)],
    diag: &mut Diagnostics<'_>,
) {
    for (call, (reads, span)) in calls.iter().zip(read_deps) {
        if call.optional {
            continue;
        }
        let mut optional: Vec<&str> = reads
            .iter()
            .filter_map(|&r| calls.get(r))
            .filter(|c| c.optional)
            .map(|c| c.name.as_str())
            .collect();
        optional.sort_unstable();
        optional.dedup();
        if optional.is_empty() {
            continue;
        }
        let names = optional
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        diag.warn(
            span.clone(),
            format!(
                "route `{route}`: call `{}` is required and reads {names}, which {} optional: when {} fails, `{}` is not sent and the request fails (502, input unavailable) instead of answering partially; make `{}` optional too, or {names} required",
                call.name,
                if optional.len() == 1 { "is" } else { "are" },
                if optional.len() == 1 { "it" } else { "one" },
                call.name,
                call.name,
            ),
        );
    }
}
