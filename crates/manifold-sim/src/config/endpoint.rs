//! Endpoints compiled for serving: path patterns matched segment by segment, faults by rate.

use http::Method;

use super::{EndpointConfig, FaultKind};
use crate::latency::Latency;
use crate::template::Template;

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathSeg {
    Lit(String),
    Param(String),
}

/// An endpoint ready to serve: pattern split, template compiled, faults as cumulative bounds.
#[derive(Debug, Clone)]
pub(crate) struct CompiledEndpoint {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) segs: Vec<PathSeg>,
    pub(crate) latency: Latency,
    /// (cumulative upper bound, fault): a draw `u < bound` picks the first matching fault.
    pub(crate) faults: Vec<(f64, FaultKind)>,
    pub(crate) status: http::StatusCode,
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) body: Template,
}

impl CompiledEndpoint {
    pub(crate) fn compile(ep: &EndpointConfig) -> Result<Self, String> {
        let method = Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad method {:?}", ep.method))?;
        if !ep.path.starts_with('/') {
            return Err("path must start with `/`".into());
        }
        if ep.path.starts_with("/__") {
            return Err(
                "paths starting with `/__` are reserved for the sim's own endpoints".into(),
            );
        }
        let mut segs = Vec::new();
        let mut params = Vec::new();
        for s in ep.path[1..].split('/').filter(|s| !s.is_empty()) {
            if let Some(p) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if p.is_empty() || p.contains(['{', '}']) {
                    return Err(format!("bad path parameter segment {s:?}"));
                }
                if params.iter().any(|x| x == p) {
                    return Err(format!("path parameter {{{p}}} appears twice"));
                }
                params.push(p.to_owned());
                segs.push(PathSeg::Param(p.to_owned()));
            } else if s.contains(['{', '}']) {
                return Err(format!(
                    "segment {s:?}: a parameter must be a whole segment, like /{{id}}/"
                ));
            } else {
                segs.push(PathSeg::Lit(s.to_owned()));
            }
        }
        // Configs built in code skip the TOML checks: validate here too.
        ep.latency.validate()?;
        let mut faults = Vec::new();
        let mut total = 0.0;
        for f in &ep.faults {
            if !f.rate.is_finite() || !(0.0..=1.0).contains(&f.rate) {
                return Err(format!(
                    "fault {}: rate must be in 0..=1, got {}",
                    f.kind.name(),
                    f.rate
                ));
            }
            if let FaultKind::Status { status } = f.kind {
                if !(100..=599).contains(&status) {
                    return Err(format!("fault status {status} is not an HTTP status"));
                }
            }
            if let FaultKind::SlowBody { over } = f.kind {
                if over > crate::latency::MAX_LATENCY {
                    return Err("slow_body: `over` is above the 1h limit".into());
                }
            }
            total += f.rate;
            faults.push((total, f.kind.clone()));
        }
        if total > 1.0 + 1e-9 {
            return Err(format!("fault rates sum to {total}, above 1"));
        }
        let status = http::StatusCode::from_u16(ep.response.status)
            .map_err(|_| format!("bad response status {}", ep.response.status))?;
        let mut headers = Vec::new();
        for (k, v) in &ep.response.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header name {k:?}"))?;
            let value =
                http::HeaderValue::from_str(v).map_err(|_| format!("bad header value {v:?}"))?;
            headers.push((name, value));
        }
        let body = Template::compile(&ep.response.body, &params)?;
        Ok(Self {
            method,
            path: ep.path.clone(),
            segs,
            latency: ep.latency.clone(),
            faults,
            status,
            headers,
            body,
        })
    }

    /// The pattern with parameter names erased, to catch duplicates like `/a/{x}` and `/a/{y}`.
    pub(super) fn pattern_key(&self) -> String {
        self.segs
            .iter()
            .map(|s| match s {
                PathSeg::Lit(l) => l.as_str(),
                PathSeg::Param(_) => "{}",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Match a request path (already split on `/`, empty segments dropped); returns the
    /// parameters, percent-decoded.
    pub(crate) fn matches(&self, parts: &[&str]) -> Option<Vec<(String, String)>> {
        if parts.len() != self.segs.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segs.iter().zip(parts) {
            match seg {
                PathSeg::Lit(l) => {
                    if l != part {
                        return None;
                    }
                }
                PathSeg::Param(name) => params.push((name.clone(), crate::server::decode(part))),
            }
        }
        Some(params)
    }

    /// Pick a fault for a uniform draw `u` in `[0, 1)`.
    pub(crate) fn fault_for(&self, u: f64) -> Option<&FaultKind> {
        self.faults.iter().find(|(b, _)| u < *b).map(|(_, k)| k)
    }
}
