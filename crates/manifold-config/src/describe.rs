//! A human-readable account of a compiled config: what `manifold check` prints.

use crate::model::{Config, Mode, RouteKind, Upstream};
use crate::policy::{Balance, HedgeAfter};
use std::fmt::Write;

/// Describe each route: its calls, their dependency edges, the levels, and (where calls carry
/// `expect` hints) the critical path and how it compares with running the calls one by one.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} upstream(s), {} route(s); listen {}, admin {}; concurrency {}",
        config.source.display(),
        config.upstreams.len(),
        config.routes.len(),
        config
            .server
            .listen
            .map_or_else(|| "off (TLS only)".to_owned(), |l| l.to_string()),
        config.server.admin,
        match config.server.concurrency {
            crate::policy::Concurrency::Adaptive => "adaptive".to_owned(),
            crate::policy::Concurrency::Fixed(n) => n.to_string(),
        }
    );
    // What a client is told and trusted with, when it is not the default: an operator reading
    // `check` sees at once that a listener was hardened (or not).
    let mut edge = Vec::new();
    if config.server.error_detail == crate::ErrorDetail::Brief {
        edge.push("error detail brief".to_owned());
    }
    match config.telemetry.parent_sampled {
        crate::ParentSampled::Follow => {}
        crate::ParentSampled::TrustedProxies => {
            edge.push("traceparent sampling from trusted proxies only".to_owned());
        }
        crate::ParentSampled::Ignore => edge.push("traceparent sampling ignored".to_owned()),
    }
    if !config.server.trusted_proxies.is_empty() {
        edge.push(format!(
            "{} trusted prox{}",
            config.server.trusted_proxies.len(),
            if config.server.trusted_proxies.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ));
    }
    if !edge.is_empty() {
        let _ = writeln!(out, "edge: {}", edge.join("; "));
    }
    if let Some(t) = &config.server.tls {
        let _ = writeln!(
            out,
            "tls: listen {} (HTTPS, ALPN h2 + http/1.1); cert {}, key {}",
            t.listen,
            t.cert.display(),
            t.key.display()
        );
    }
    if !config.upstreams.is_empty() {
        let _ = writeln!(out);
    }
    for up in &config.upstreams {
        describe_upstream(&mut out, up);
    }
    let _ = writeln!(out, "{}", crate::cache_tier::describe(&config.cache));
    for route in &config.routes {
        let _ = writeln!(out);
        let deadline = route
            .deadline
            .map(|d| format!(" (deadline {})", humantime::format_duration(d)))
            .unwrap_or_default();
        let cached = route
            .cache
            .as_ref()
            .map(|c| format!(" [{}]", cache_flag(c)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "route {}: {} {}{deadline}{cached}",
            route.name, route.method, route.path
        );
        if let Some(c) = &route.cache {
            let _ = writeln!(
                out,
                "  cache key: {}",
                crate::cache_key::describe_route_key(route, c)
            );
        }
        let plan = match &route.kind {
            RouteKind::Proxy { upstream_name, .. } => {
                let _ = writeln!(out, "  proxy → upstream {upstream_name}");
                continue;
            }
            RouteKind::Compose(plan) => plan,
        };
        if plan.calls.iter().any(|c| c.mode != Mode::Sync) {
            let _ = writeln!(
                out,
                "  enqueue: {}",
                match plan.enqueue {
                    crate::model::Enqueue::OnSuccess =>
                        "on_success (tasks written once every required call succeeded)",
                    crate::model::Enqueue::Eager => "eager (tasks written as soon as rendered)",
                }
            );
        }
        let _ = writeln!(out, "  calls:");
        for (i, call) in plan.calls.iter().enumerate() {
            let mut flags = Vec::new();
            if call.optional {
                flags.push("optional".to_owned());
            }
            if call.mode == Mode::Async {
                flags.push("async".to_owned());
            }
            // `after` only orders; what a call reads is its data, unavailable if that failed.
            let ordering_only: Vec<&str> = plan.deps[i]
                .iter()
                .filter(|d| !call.reads.contains(d))
                .map(|&d| plan.calls[d].name.as_str())
                .collect();
            if !ordering_only.is_empty() {
                flags.push(format!("ordered after {}", ordering_only.join(", ")));
            }
            if let Some(e) = call.expect {
                flags.push(format!("expect {}", humantime::format_duration(e)));
            }
            if let Some(c) = &call.cache {
                flags.push(cache_flag(c));
            }
            let deps = if plan.deps[i].is_empty() {
                "starts at once".to_owned()
            } else {
                format!(
                    "after {}",
                    plan.deps[i]
                        .iter()
                        .map(|&d| plan.calls[d].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            };
            match (&call.subject, call.mode) {
                (Some(subject), Mode::Publish) => {
                    let _ = writeln!(
                        out,
                        "    {} ⇢ publish {subject}  ({deps}){flags}",
                        call.name
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "    {} = {} {} {}  ({deps}){flags}",
                        call.name,
                        call.method,
                        call.upstream_name,
                        crate::cache_key::template_display(&call.path)
                    );
                }
            }
            if let Some(c) = &call.cache {
                let _ = writeln!(
                    out,
                    "      cache key: {}",
                    crate::cache_key::describe_call_key(
                        call,
                        c,
                        &crate::cache_key::template_display(&call.path)
                    )
                );
            }
        }
        let edges: Vec<String> = plan
            .deps
            .iter()
            .enumerate()
            .flat_map(|(i, ds)| ds.iter().map(move |&d| (d, i)).collect::<Vec<_>>())
            .map(|(d, i)| format!("{} → {}", plan.calls[d].name, plan.calls[i].name))
            .collect();
        let _ = writeln!(
            out,
            "  edges: {}",
            if edges.is_empty() {
                "none (all calls run at once)".to_owned()
            } else {
                edges.join(", ")
            }
        );
        for (l, level) in plan.levels.iter().enumerate() {
            let names: Vec<&str> = level.iter().map(|&i| plan.calls[i].name.as_str()).collect();
            let _ = writeln!(out, "  level {l}: {}", names.join(", "));
        }
        if let Some((path, total)) = plan.critical_path() {
            let names: Vec<&str> = path.iter().map(|&i| plan.calls[i].name.as_str()).collect();
            let sequential: std::time::Duration = plan
                .calls
                .iter()
                .filter(|c| c.mode == Mode::Sync)
                .filter_map(|c| c.expect)
                .sum();
            let _ = writeln!(
                out,
                "  critical path: {} = {} (one after another: {})",
                names.join(" → "),
                humantime::format_duration(total),
                humantime::format_duration(sequential)
            );
            let missing: Vec<&str> = plan
                .calls
                .iter()
                // Async and publish calls cost the client an enqueue, not a hint.
                .filter(|c| c.mode == Mode::Sync && c.expect.is_none())
                .map(|c| c.name.as_str())
                .collect();
            if !missing.is_empty() {
                let _ = writeln!(
                    out,
                    "  (no `expect` hint, counted as 0: {})",
                    missing.join(", ")
                );
            }
        }
    }
    out
}

fn cache_flag(c: &crate::model::CachePolicySpec) -> String {
    let mut s = format!("cached {}", humantime::format_duration(c.ttl));
    if !c.stale.is_zero() {
        let _ = write!(s, " + stale {}", humantime::format_duration(c.stale));
    }
    s
}

/// Two lines per upstream: where calls go and how long they may take, then what is done when
/// an attempt fails or is slow (so an operator sees the defaults a config left implicit).
fn describe_upstream(out: &mut String, up: &Upstream) {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let p = &up.policies;
    let n = up.endpoints.len();
    let _ = writeln!(
        out,
        "upstream {}: {n} endpoint{}, {}{}, timeout {} (connect {}), resolve every {}",
        up.name,
        if n == 1 { "" } else { "s" },
        match p.balance {
            Balance::P2c => "p2c",
            Balance::RoundRobin => "round_robin",
        },
        if up.http2 { ", h2c" } else { "" },
        d(up.timeout),
        d(up.connect_timeout),
        d(p.resolve_every)
    );
    if up.endpoints.iter().any(|e| e.scheme == "https") {
        let roots = up.tls.ca.as_ref().map_or_else(
            || "system roots".to_owned(),
            |ca| format!("ca {}", ca.display()),
        );
        let client = up.tls.client.as_ref().map_or_else(
            || "no client certificate".to_owned(),
            |c| {
                format!(
                    "client_cert {}, client_key {}",
                    c.cert.display(),
                    c.key.display()
                )
            },
        );
        let alpn = if up.http2 { "h2" } else { "h2, http/1.1" };
        let _ = writeln!(out, "  tls: {roots}; {client}; ALPN {alpn}");
    }
    let r = &p.retry;
    let retry = if r.attempts <= 1 || r.on.is_empty() {
        "retry off".to_owned()
    } else {
        let on: Vec<String> =
            r.on.iter()
                .map(|o| crate::upstream_policy::retry_on_name(*o))
                .collect();
        format!(
            "retry {} attempts on {} (budget {} + {}/s, backoff {})",
            r.attempts,
            on.join(", "),
            percent(r.budget),
            r.min_per_second,
            d(r.backoff)
        )
    };
    let hedge = match &p.hedge {
        None => "hedge off".to_owned(),
        Some(h) => format!(
            "hedge after {}, max {} (budget {})",
            match h.after {
                HedgeAfter::Percentile(q) => format!("p{q}"),
                HedgeAfter::Fixed(t) => d(t),
            },
            h.max,
            percent(h.budget)
        ),
    };
    let breaker = match &p.circuit_breaker {
        None => "breaker off".to_owned(),
        Some(b) => format!(
            "breaker at {} failures of ≥ {} in {}, open {} (up to {}), eject ≤ {}",
            percent(b.failure_rate),
            b.min_requests,
            d(b.window),
            d(b.open_for),
            d(b.max_open_for),
            percent(b.max_ejected)
        ),
    };
    let _ = writeln!(out, "  {retry}; {hedge}; {breaker}");
}

/// `0.2` as `20%`, `0.125` as `12.5%`.
fn percent(f: f64) -> String {
    let s = format!("{:.2}", f * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}
