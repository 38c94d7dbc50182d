//! Clock-skew correction for client/server pairs, after Zipkin's `clock-skew.js`.
//!
//! A server span runs inside its client span; when the two hosts' clocks disagree the server
//! appears to start before its client (Zipkin's `skew` case) or after it has finished (the
//! `ascend` case). Zipkin corrects only the first; the second is the same defect seen from the
//! other side, so both are corrected here: the server (and every descendant on the server's host)
//! is shifted so that the server sits centred in its client, the network latency split evenly
//! between request and response. A server longer than its client (an asynchronous server) is
//! only pushed to start 1 µs after its client, as Zipkin does. Same-host pairs are never
//! touched: there the mismatch is an instrumentation bug, not skew.

use crate::model::{SpanKind, Sym, Trace, WarningKind, Warnings};

const ONE_MICROSECOND: i64 = 1_000;

/// Shift skewed server spans into their clients. Returns how many pairs were corrected.
pub fn correct_clock_skew(trace: &mut Trace, warnings: &mut Warnings) -> usize {
    let children = trace.children();
    let host = |s: &crate::model::Span| -> Sym {
        if s.host != 0 {
            s.host
        } else {
            s.service
        }
    };
    let mut corrected = 0;
    // (span, inherited (host, shift))
    let mut stack: Vec<(u32, Option<(Sym, i64)>)> = vec![(trace.root, None)];
    while let Some((i, inherited)) = stack.pop() {
        let iu = i as usize;
        let mut shift = 0i64;
        if let Some((h, d)) = inherited {
            if host(&trace.spans[iu]) == h {
                trace.spans[iu].start = trace.spans[iu].start.saturating_add(d);
                shift = d;
            }
        }
        let mut own = 0i64;
        if let Some(p) = trace.spans[iu].parent {
            let parent = &trace.spans[p as usize];
            let me = &trace.spans[iu];
            if parent.kind == SpanKind::Client
                && me.kind == SpanKind::Server
                && host(parent) != host(me)
            {
                own = skew_of(parent.start, parent.duration, me.start, me.duration);
            }
        }
        if own != 0 {
            trace.spans[iu].start = trace.spans[iu].start.saturating_add(own);
            corrected += 1;
            warnings.add(WarningKind::ClockSkewAdjusted);
        }
        let total = shift.saturating_add(own);
        let pass = if total != 0 {
            Some((host(&trace.spans[iu]), total))
        } else {
            inherited
        };
        for &c in &children[iu] {
            stack.push((c, pass));
        }
    }
    corrected
}

/// How far a server must move to sit inside its client (0 when it already does).
fn skew_of(client_start: i64, client_dur: i64, server_start: i64, server_dur: i64) -> i64 {
    let client_end = client_start.saturating_add(client_dur);
    let server_end = server_start.saturating_add(server_dur);
    if server_start >= client_start && server_end <= client_end {
        return 0;
    }
    if client_dur < server_dur {
        // asynchronous server: it cannot have started before the request was sent
        if server_start < client_start {
            return client_start + ONE_MICROSECOND - server_start;
        }
        return 0;
    }
    let latency = (client_dur - server_dur) / 2;
    client_start
        .saturating_add(latency)
        .saturating_sub(server_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_the_server_both_ways() {
        // server before client (zipkin's case): client 20..40, server 10..20 → 25..35
        assert_eq!(skew_of(20, 20, 10, 10), 15);
        // server after client (ascend): client 20..40, server 50..60 → 25..35
        assert_eq!(skew_of(20, 20, 50, 10), -25);
        // inside: nothing
        assert_eq!(skew_of(20, 20, 22, 10), 0);
        // async server before client: 1 µs after
        assert_eq!(skew_of(20_000, 5_000, 10_000, 10_000), 11_000);
    }
}
