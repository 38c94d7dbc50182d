//! The route plan (`--emit-plan`): the endpoint's calls as a Manifold route in TOML.

use std::fmt::Write as _;

use super::ms;
use crate::analysis::{Analyzer, Dist, OpKey};

fn ident(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while o.contains("__") {
        o = o.replace("__", "_");
    }
    let o = o.trim_matches('_').to_string();
    if o.is_empty() || o.starts_with(|c: char| c.is_ascii_digit()) {
        format!("c_{o}")
    } else {
        o
    }
}

/// A path for the route file: template braces from trace names (`/products/{id}`) are not
/// Manifold templates, so they are neutralized.
fn plain_path(s: &str) -> String {
    s.replace(['{', '}'], "_")
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The route plan for `--emit-plan`: a Manifold route (TOML) running the endpoint's downstream
/// calls as the DAG its traces allow, with the latency that DAG would reach. `None` when no
/// trace matched the route selector.
pub fn render_plan(an: &Analyzer, route: &str) -> Option<String> {
    let p = &an.plan;
    let ep = p.endpoint?;
    let name = ident(route);
    let calls = &p.calls;
    // a → b kept when a finished before b started in every trace holding both
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for (bi, b) in calls.iter().enumerate() {
        for (ai, a) in calls.iter().enumerate() {
            if ai == bi {
                continue;
            }
            if let Some((both, before)) = p.order.get(&(*a, *b)) {
                if *both > 0 && before == both {
                    deps[bi].push(ai);
                }
            }
        }
    }
    // transitive reduction
    let reach = |from: usize, to: usize, deps: &Vec<Vec<usize>>| -> bool {
        let mut stack = vec![from];
        let mut seen = vec![false; deps.len()];
        while let Some(x) = stack.pop() {
            for &d in &deps[x] {
                if d == to {
                    return true;
                }
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        false
    };
    let mut direct: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
    for b in 0..calls.len() {
        for &a in &deps[b] {
            let implied = deps[b].iter().any(|&m| m != a && reach(m, a, &deps));
            if !implied {
                direct[b].push(a);
            }
        }
    }
    // plan latency per trace: own time + longest path through the DAG
    let mut planned = Dist::default();
    let mut all_parallel = Dist::default();
    for s in &p.samples {
        all_parallel.add(s.own + s.calls.iter().map(|c| c.1).max().unwrap_or(0));
        let dur = |k: OpKey| s.calls.iter().find(|c| c.0 == k).map_or(0, |c| c.1);
        let mut finish = vec![0i64; calls.len()];
        let order = topo(&deps);
        for &i in &order {
            let start = deps[i].iter().map(|&d| finish[d]).max().unwrap_or(0);
            finish[i] = start + dur(calls[i]);
        }
        planned.add(s.own + finish.iter().copied().max().unwrap_or(0));
    }
    let call_names: Vec<String> = {
        let mut used: Vec<String> = Vec::new();
        calls
            .iter()
            .map(|k| {
                let base = ident(&format!(
                    "{}_{}",
                    an.interner.name(k.0),
                    an.interner.name(k.1)
                ));
                let mut n = base.clone();
                let mut i = 2;
                while used.contains(&n) {
                    n = format!("{base}_{i}");
                    i += 1;
                }
                used.push(n.clone());
                n
            })
            .collect()
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Route plan derived by `manifold analyze --emit-plan {route}`"
    );
    let _ = writeln!(
        o,
        "# from {} traces of {}:{}.",
        p.latency.count(),
        an.interner.name(ep.0),
        an.interner.name(ep.1)
    );
    let _ = writeln!(
        o,
        "# observed p50 {:.2} ms, p99 {:.2} ms; this DAG would reach p50 {:.2} ms, p99 {:.2} ms",
        ms(p.latency.quantile(0.5)),
        ms(p.latency.quantile(0.99)),
        ms(planned.quantile(0.5)),
        ms(planned.quantile(0.99))
    );
    let _ = writeln!(
        o,
        "# with no call waiting for another it would reach p50 {:.2} ms, p99 {:.2} ms.",
        ms(all_parallel.quantile(0.5)),
        ms(all_parallel.quantile(0.99))
    );
    if p.calls_left_out > 0 {
        let _ = writeln!(
            o,
            "# Only the first {} calls are planned: {} spans under the root named other calls.",
            crate::analysis::MAX_PLAN_CALLS,
            p.calls_left_out
        );
    }
    let _ = writeln!(
        o,
        "# A call keeps `after` another only if it started after that one ended in every trace;"
    );
    let _ = writeln!(
        o,
        "# calls whose order varied or that overlapped run side by side. Traces cannot show data"
    );
    let _ = writeln!(o, "# dependencies: delete an `after` whose call does not read the other's result. Fill in the endpoints.\n");
    let mut ups: Vec<Sym2> = Vec::new();
    for k in calls {
        let u = ident(an.interner.name(k.0));
        if !ups.iter().any(|x| x.0 == u) {
            ups.push(Sym2(u));
        }
    }
    for u in &ups {
        let _ = writeln!(o, "[upstreams.{}]\nendpoints = [\"http://127.0.0.1:8000\"]  # TODO: where {} listens\ntimeout = \"1s\"\n", u.0, u.0);
    }
    let (m, path) = p.root_http;
    let method = if m != 0 {
        an.interner.name(m).to_string()
    } else {
        "GET".into()
    };
    let rpath = if path != 0 {
        an.interner.name(path).to_string()
    } else {
        format!("/{name}")
    };
    let _ = writeln!(
        o,
        "[routes.{name}]\nmethod = {}\npath = {}\n",
        toml_str(&method),
        toml_str(&plain_path(&rpath))
    );
    for (i, k) in calls.iter().enumerate() {
        let (cm, cp) = p.call_http.get(k).copied().unwrap_or((0, 0));
        let cmeth = if cm != 0 {
            an.interner.name(cm).to_string()
        } else {
            "GET".into()
        };
        let cpath = if cp != 0 {
            an.interner.name(cp).to_string()
        } else {
            format!("/{}", ident(an.interner.name(k.1)))
        };
        let _ = writeln!(o, "  [[routes.{name}.calls]]");
        let _ = writeln!(o, "  name = {}", toml_str(&call_names[i]));
        let _ = writeln!(
            o,
            "  upstream = {}",
            toml_str(&ident(an.interner.name(k.0)))
        );
        let _ = writeln!(o, "  method = {}", toml_str(&cmeth));
        let _ = writeln!(o, "  path = {}", toml_str(&plain_path(&cpath)));
        if !direct[i].is_empty() {
            let names: Vec<String> = direct[i]
                .iter()
                .map(|&a| toml_str(&call_names[a]))
                .collect();
            let seen = direct[i]
                .iter()
                .map(|&a| p.order.get(&(calls[a], *k)).map_or(0, |x| x.0))
                .min()
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "  # ran after {} in all {seen} traces holding both",
                names.join(", ")
            );
            let _ = writeln!(o, "  after = [{}]", names.join(", "));
        }
        if p.async_calls.contains(k) {
            let _ = writeln!(
                o,
                "  # nothing waited for this write: consider mode = \"async\""
            );
        }
        o.push('\n');
    }
    Some(o)
}

struct Sym2(String);

fn topo(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut indeg = vec![0usize; n];
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (b, ds) in deps.iter().enumerate() {
        for &a in ds {
            indeg[b] += 1;
            out_edges[a].push(b);
        }
    }
    let mut q: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(x) = q.pop() {
        order.push(x);
        for &y in &out_edges[x] {
            indeg[y] -= 1;
            if indeg[y] == 0 {
                q.push(y);
            }
        }
    }
    // a cycle cannot arise (a before b and b before a in every trace is impossible), but be safe
    for i in 0..n {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}
