//! `--what-if`: parsing the change a user asks about, and simulating it on every trace.

use super::{ops_of, Analyzer, OpKey};
use crate::critical::CpGraph;
use crate::model::{fingerprint, Trace};
use crate::sim::{Plan, Simulator, NO_GROUP};

/// A change to simulate, as given to `--what-if`.
#[derive(Debug, Clone, PartialEq)]
pub enum WhatIf {
    /// `parallelize:SERVICE:OP` — the calls made by SERVICE:OP all start together.
    Parallelize(String, String),
    /// `speedup:SERVICE:OP=50%` — SERVICE:OP's own work takes this fraction less time.
    Speedup(String, String, f64),
    /// `async:SERVICE:OP` — nothing waits for SERVICE:OP.
    Async(String, String),
    /// `cache:SERVICE:OP=0.9` — this fraction of SERVICE:OP calls are cache hits (take no time).
    Cache(String, String, f64),
    /// `batch:SERVICE:OP` — sequential sibling calls to SERVICE:OP become one call.
    Batch(String, String),
}

/// A `--what-if` that could not be parsed (config error).
#[derive(Debug, thiserror::Error)]
#[error("config: bad --what-if {spec:?}: {reason}")]
pub struct WhatIfError {
    /// The text given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

impl WhatIf {
    /// Parse `KIND:SERVICE:OP[=VALUE]`.
    pub fn parse(spec: &str) -> Result<WhatIf, WhatIfError> {
        let err = |r: &str| WhatIfError {
            spec: spec.to_string(),
            reason: r.to_string(),
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| err("expected KIND:SERVICE:OPERATION"))?;
        let (target, value) = match kind {
            "speedup" | "cache" => {
                let (t, v) = rest
                    .rsplit_once('=')
                    .ok_or_else(|| err("expected =VALUE"))?;
                (t, Some(v.trim()))
            }
            _ => (rest, None),
        };
        let (svc, op) = target
            .split_once(':')
            .ok_or_else(|| err("expected SERVICE:OPERATION"))?;
        if svc.is_empty() || op.is_empty() {
            return Err(err("empty service or operation"));
        }
        let (svc, op) = (svc.to_string(), op.to_string());
        Ok(match kind {
            "parallelize" => WhatIf::Parallelize(svc, op),
            "async" => WhatIf::Async(svc, op),
            "batch" => WhatIf::Batch(svc, op),
            "speedup" => {
                let v = value.unwrap_or("");
                let pct = if let Some(p) = v.strip_suffix('%') {
                    p.trim().parse::<f64>().map(|x| x / 100.0)
                } else {
                    v.parse::<f64>()
                }
                .map_err(|_| err("speedup wants a percentage like 50%"))?;
                if !(0.0..=1.0).contains(&pct) {
                    return Err(err(
                        "speedup must be between 0% and 100% (a bare number is a fraction: 0.5 is 50%)",
                    ));
                }
                WhatIf::Speedup(svc, op, pct)
            }
            "cache" => {
                let v = value.unwrap_or("");
                let h = if let Some(p) = v.strip_suffix('%') {
                    p.trim().parse::<f64>().map(|x| x / 100.0)
                } else {
                    v.parse::<f64>()
                }
                .map_err(|_| err("cache wants a hit ratio like 0.9"))?;
                if !(0.0..=1.0).contains(&h) {
                    return Err(err("hit ratio must be between 0 and 1"));
                }
                WhatIf::Cache(svc, op, h)
            }
            _ => {
                return Err(err(
                    "KIND is one of parallelize, speedup, async, cache, batch",
                ))
            }
        })
    }

    fn target(&self) -> (&str, &str) {
        match self {
            WhatIf::Parallelize(s, o) | WhatIf::Async(s, o) | WhatIf::Batch(s, o) => (s, o),
            WhatIf::Speedup(s, o, _) | WhatIf::Cache(s, o, _) => (s, o),
        }
    }

    /// The text form.
    pub fn describe(&self) -> String {
        match self {
            WhatIf::Parallelize(s, o) => format!("parallelize:{s}:{o}"),
            WhatIf::Async(s, o) => format!("async:{s}:{o}"),
            WhatIf::Batch(s, o) => format!("batch:{s}:{o}"),
            WhatIf::Speedup(s, o, p) => format!("speedup:{s}:{o}={}%", p * 100.0),
            WhatIf::Cache(s, o, h) => format!("cache:{s}:{o}={h}"),
        }
    }
}

impl Analyzer {
    pub(super) fn what_if(
        &mut self,
        trace: &Trace,
        g: &CpGraph,
        sim: &mut Simulator,
        plan: &mut Plan,
        e2e: i64,
        endpoint: OpKey,
    ) {
        if self.opts.what_if.is_empty() {
            return;
        }
        let n = trace.spans.len();
        plan.reset(n);
        let mut group_id = 0u32;
        let changes = self.opts.what_if.clone();
        for w in &changes {
            let (svc, op) = w.target();
            let (Some(s), Some(o)) = (self.interner.get(svc), self.interner.get(op)) else {
                continue;
            };
            let matches: Vec<usize> = ops_of(trace, (s, o)).collect();
            self.what_if_matched += matches.len() as u64;
            for &i in &matches {
                match w {
                    WhatIf::Parallelize(..) => plan.parallel[i] = true,
                    WhatIf::Speedup(_, _, pct) => plan.scale[i] *= 1.0 - pct,
                    WhatIf::Async(..) => plan.removed[i] = true,
                    WhatIf::Cache(_, _, h) => {
                        let mut key = trace.trace_id.as_bytes().to_vec();
                        key.extend_from_slice(&(i as u64).to_le_bytes());
                        let u = (fingerprint(&key) >> 11) as f64 / (1u64 << 53) as f64;
                        if u < *h {
                            plan.removed[i] = true;
                        }
                    }
                    WhatIf::Batch(..) => {}
                }
            }
            if let WhatIf::Batch(..) = w {
                // sequential sibling calls of the operation, per parent, become one group
                for p in g.reachable() {
                    let m: Vec<u32> = g.children[p as usize]
                        .iter()
                        .copied()
                        .filter(|&c| {
                            (
                                trace.spans[c as usize].service,
                                trace.spans[c as usize].operation,
                            ) == (s, o)
                        })
                        .collect();
                    if m.len() >= 2 {
                        for &c in &m {
                            if plan.group[c as usize] == NO_GROUP {
                                plan.group[c as usize] = group_id;
                            }
                        }
                        group_id += 1;
                    }
                }
            }
        }
        let after = sim.root_duration(plan);
        self.what_if_after.add(after);
        self.endpoints
            .entry(endpoint)
            .or_default()
            .what_if_after
            .add(after);
        let _ = e2e;
    }
}
