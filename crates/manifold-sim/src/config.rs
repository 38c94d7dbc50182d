//! `sim.toml`: the services to simulate, their replicas, endpoints, latencies, faults and replies.
//!
//! See `docs/sim.md` and `examples/sim.toml` for the user-facing description.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::latency::Latency;
use crate::template::Template;
use crate::SimError;

/// The default seed: runs repeat unless the config asks otherwise.
pub const DEFAULT_SEED: u64 = 1;

/// The shop's services, in the seed documents' order (the order of [`SimConfig::shop_at`]'s ports).
pub const SHOP_SERVICES: [&str; 6] = [
    "order",
    "payment",
    "inventory",
    "shipping",
    "users",
    "orders",
];

/// The whole simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seed for every random draw (latencies, faults, minted ids). Same seed, same sequence per
    /// endpoint and replica.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Address every service listens on. Defaults to loopback.
    #[serde(default = "default_host")]
    pub host: IpAddr,
    /// Services by name (ordered by name).
    pub services: BTreeMap<String, ServiceConfig>,
    /// `tls = { cert = "cert.pem", key = "key.pem" }`: every service speaks HTTPS (HTTP/1.1
    /// and HTTP/2 by ALPN) with this certificate, to try `https://` upstreams. Paths are
    /// relative to the sim file.
    #[serde(default)]
    pub tls: Option<SimTls>,
    /// How service times are waited out: tokio's millisecond timer (the default, which follows
    /// paused time in tests) or [`manifold_timer::Timer::precise`], which ends each wait within
    /// tens of microseconds instead of rounding it up to the next millisecond. Not read from
    /// TOML: the command line chooses (`manifold sim --timer`).
    #[serde(skip)]
    pub timer: manifold_timer::Timer,
}

/// `tls`: the certificate chain and key (PEM) every service presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTls {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The leaf's private key.
    pub key: std::path::PathBuf,
}

/// One simulated service: a set of endpoints served by one or more replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Port of the single replica (0 or absent: an ephemeral port). Not allowed with `replicas`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Several replicas, each with its own listener and speed. Absent: one replica on `port`.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// The endpoints every replica serves.
    pub endpoints: Vec<EndpointConfig>,
}

/// One replica of a service.
///
/// Beyond its speed, a replica can misbehave on its own, so a balancer, a breaker, retries and
/// hedges have something to tell apart: errors, stragglers, and a turn for the worse mid-run
/// (all off by default; see `crate::replica`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Port (0 or absent: ephemeral).
    #[serde(default)]
    pub port: Option<u16>,
    /// Multiplies every latency this replica samples: `2.0` is a replica twice as slow.
    #[serde(default = "one")]
    pub latency_scale: f64,
    /// With this probability (0..=1) a request is answered `error_status` (after its latency)
    /// instead of its reply: a replica failing part of its traffic.
    #[serde(default)]
    pub error_rate: f64,
    /// The status of those errors (500–599, default 503).
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// With this probability (0..=1) a request is a straggler: it takes `straggler_scale` times
    /// its sampled latency (The Tail at Scale's garbage collections and queue spikes).
    #[serde(default)]
    pub straggler_rate: f64,
    /// How many times slower a straggler is (1..=1000, default 20).
    #[serde(default = "twenty")]
    pub straggler_scale: f64,
    /// From this long after the sim started, or its counters were last reset, every latency of
    /// this replica is multiplied by `slow_scale`: a replica that turns slow mid-run. Absent:
    /// never. Measured on tokio's clock.
    #[serde(default, deserialize_with = "crate::latency::de_opt_duration")]
    pub slow_after: Option<Duration>,
    /// How many times slower the replica is once `slow_after` has passed (1..=1000, default 20).
    #[serde(default = "twenty")]
    pub slow_scale: f64,
}

impl Default for ReplicaConfig {
    /// An ephemeral port, full speed, no misbehaviour.
    fn default() -> Self {
        ReplicaConfig {
            port: None,
            latency_scale: 1.0,
            error_rate: 0.0,
            error_status: default_error_status(),
            straggler_rate: 0.0,
            straggler_scale: twenty(),
            slow_after: None,
            slow_scale: twenty(),
        }
    }
}

/// One endpoint: a method and a path pattern such as `/orders/{id}/confirm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// HTTP method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Path pattern; `{NAME}` matches one non-empty segment.
    pub path: String,
    /// Service time before the reply (default: none).
    #[serde(default = "zero_latency")]
    pub latency: Latency,
    /// Faults, each drawn with its own probability (their rates must sum to at most 1).
    #[serde(default)]
    pub faults: Vec<FaultConfig>,
    /// The reply.
    #[serde(default)]
    pub response: ResponseConfig,
}

/// The reply of an endpoint when no fault is drawn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Status code (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// JSON body template (see the template placeholders in `docs/sim.md`).
    #[serde(default = "default_body")]
    pub body: Value,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            status: default_status(),
            body: default_body(),
            headers: BTreeMap::new(),
        }
    }
}

/// A fault and how often it happens.
#[derive(Debug, Clone, Deserialize)]
pub struct FaultConfig {
    /// Probability per request, 0..=1.
    pub rate: f64,
    /// What goes wrong.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// The kinds of fault an endpoint can inject.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Answer with this status (default 500) and a small JSON error body, after the latency.
    Status {
        /// The status code.
        #[serde(default = "default_fault_status")]
        status: u16,
    },
    /// Drop the connection without answering, after the latency (the client sees its connection
    /// closed or reset mid-request).
    Reset,
    /// Never answer: the request waits until the client gives up or the sim stops.
    Hang,
    /// Send the head on time, then trickle the body over `over` (default 2 s).
    SlowBody {
        /// How long the body takes to arrive.
        #[serde(
            default = "default_slow_over",
            deserialize_with = "crate::latency::de_duration"
        )]
        over: Duration,
    },
}

impl FaultKind {
    /// A short name, used in stats (`status`, `reset`, `hang`, `slow_body`).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status { .. } => "status",
            FaultKind::Reset => "reset",
            FaultKind::Hang => "hang",
            FaultKind::SlowBody { .. } => "slow_body",
        }
    }
}

fn default_seed() -> u64 {
    DEFAULT_SEED
}
fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn one() -> f64 {
    1.0
}
fn twenty() -> f64 {
    20.0
}
fn default_error_status() -> u16 {
    503
}
fn default_method() -> String {
    "GET".into()
}
fn zero_latency() -> Latency {
    Latency::Fixed(Duration::ZERO)
}
fn default_status() -> u16 {
    200
}
fn default_fault_status() -> u16 {
    500
}
fn default_slow_over() -> Duration {
    Duration::from_secs(2)
}
fn default_body() -> Value {
    json!({"service": "{service}", "replica": "{replica}", "method": "{method}", "path": "{path}"})
}

impl SimConfig {
    /// Parse and validate `sim.toml` text. Errors carry the TOML line and column.
    pub fn from_toml(src: &str) -> Result<Self, SimError> {
        let cfg: SimConfig =
            toml::from_str(src).map_err(|e| SimError::Config(e.to_string().trim().to_owned()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a `sim.toml` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SimError> {
        let src = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let mut cfg = Self::from_toml(&src).map_err(|e| match e {
            SimError::Config(m) => SimError::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        if let Some(tls) = &mut cfg.tls {
            let dir = path.parent().unwrap_or_else(|| std::path::Path::new(""));
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(cfg)
    }

    /// The seed documents' shop, every listener on an ephemeral loopback port:
    ///
    /// | service | endpoint | latency |
    /// |---|---|---|
    /// | order | `POST /orders`, `POST /orders/{id}/confirm` | 150 ms, 50 ms |
    /// | payment | `POST /payments` | 200 ms |
    /// | inventory | `POST /inventory/reserve` | 100 ms |
    /// | shipping | `POST /shipping/labels`, `GET /shipping/rates/{zip}` | 250 ms, 250 ms |
    /// | users | `GET /users/{id}` | 100 ms |
    /// | orders | `GET /users/{id}/orders` | 200 ms |
    pub fn shop() -> Self {
        let ep = |method: &str, path: &str, ms: u64, status: u16, body: Value| EndpointConfig {
            method: method.into(),
            path: path.into(),
            latency: Latency::fixed_ms(ms),
            faults: Vec::new(),
            response: ResponseConfig {
                status,
                body,
                headers: BTreeMap::new(),
            },
        };
        let svc = |endpoints| ServiceConfig {
            port: None,
            replicas: Vec::new(),
            endpoints,
        };
        let mut services = BTreeMap::new();
        services.insert(
            "order".to_owned(),
            svc(vec![
                ep(
                    "POST",
                    "/orders",
                    150,
                    201,
                    json!({"id": "{uuid}", "status": "created", "items": "{body.items}",
                           "total": "{body.total}"}),
                ),
                ep(
                    "POST",
                    "/orders/{id}/confirm",
                    50,
                    200,
                    json!({"id": "{path.id}", "status": "confirmed"}),
                ),
            ]),
        );
        services.insert(
            "payment".to_owned(),
            svc(vec![ep(
                "POST",
                "/payments",
                200,
                201,
                json!({"id": "{uuid}", "order_id": "{body.order_id}", "amount": "{body.amount}",
                       "status": "approved"}),
            )]),
        );
        services.insert(
            "inventory".to_owned(),
            svc(vec![ep(
                "POST",
                "/inventory/reserve",
                100,
                200,
                json!({"reservation_id": "{uuid}", "order_id": "{body.order_id}",
                       "items": "{body.items}", "status": "reserved"}),
            )]),
        );
        services.insert(
            "shipping".to_owned(),
            svc(vec![
                ep(
                    "POST",
                    "/shipping/labels",
                    250,
                    201,
                    json!({"label_id": "{uuid}", "order_id": "{body.order_id}",
                           "carrier": "usps", "tracking_number": "9400{seq}",
                           "status": "created"}),
                ),
                ep(
                    "GET",
                    "/shipping/rates/{zip}",
                    250,
                    200,
                    json!({"zip": "{path.zip}", "rates": [
                        {"carrier": "usps", "service": "ground", "cents": 795},
                        {"carrier": "ups", "service": "2day", "cents": 1450}]}),
                ),
            ]),
        );
        services.insert(
            "users".to_owned(),
            svc(vec![ep(
                "GET",
                "/users/{id}",
                100,
                200,
                json!({"id": "{path.id}", "name": "User {path.id}",
                       "email": "user{path.id}@example.com"}),
            )]),
        );
        services.insert(
            "orders".to_owned(),
            svc(vec![ep(
                "GET",
                "/users/{id}/orders",
                200,
                200,
                json!({"user_id": "{path.id}", "orders": [
                    {"id": "o-{path.id}-1", "total_cents": 4200, "status": "shipped"},
                    {"id": "o-{path.id}-2", "total_cents": 1999, "status": "processing"}]}),
            )]),
        );
        SimConfig {
            seed: DEFAULT_SEED,
            host: default_host(),
            services,
            tls: None,
            timer: manifold_timer::Timer::default(),
        }
    }

    /// The shop with fixed ports: `base` for `order`, then `base + 1` … in the order of
    /// [`SHOP_SERVICES`] (so with 7001: order 7001, payment 7002, inventory 7003, shipping 7004,
    /// users 7005, orders 7006). `base = 0` keeps every port ephemeral.
    pub fn shop_at(base: u16) -> Result<Self, SimError> {
        let mut cfg = Self::shop();
        if base == 0 {
            return Ok(cfg);
        }
        for (i, name) in SHOP_SERVICES.iter().enumerate() {
            let p = u32::from(base) + i as u32;
            let p = u16::try_from(p).map_err(|_| {
                SimError::Config(format!("base port {base}: port {p} is above 65535"))
            })?;
            if let Some(s) = cfg.services.get_mut(*name) {
                s.port = Some(p);
            }
        }
        Ok(cfg)
    }

    /// Give the services fixed ports: the n-th service (by name order) gets `base + n` for its
    /// first replica and `base + 10·r + n` for replica `r`. `base = 0` keeps every port ephemeral.
    /// Errors if a port would exceed 65535.
    pub fn with_base_port(mut self, base: u16) -> Result<Self, SimError> {
        if base == 0 {
            return Ok(self);
        }
        for (n, svc) in self.services.values_mut().enumerate() {
            let count = svc.replicas.len().max(1);
            let mut replicas = std::mem::take(&mut svc.replicas);
            if replicas.is_empty() {
                replicas.push(ReplicaConfig::default());
            }
            for (r, rep) in replicas.iter_mut().enumerate().take(count) {
                let p = u32::from(base) + 10 * r as u32 + n as u32;
                rep.port = Some(u16::try_from(p).map_err(|_| {
                    SimError::Config(format!("base port {base}: port {p} is above 65535"))
                })?);
            }
            svc.port = None;
            svc.replicas = replicas;
        }
        Ok(self)
    }

    /// Check everything that can be checked before binding: methods, paths, rates, templates.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.services.is_empty() {
            return Err(SimError::Config(
                "no services: add a [services.NAME] table".into(),
            ));
        }
        for (name, svc) in &self.services {
            let at = |m: String| SimError::Config(format!("services.{name}: {m}"));
            if svc.port.is_some() && !svc.replicas.is_empty() {
                return Err(at("set `port` or `replicas`, not both".into()));
            }
            if svc.replicas.len() > 64 {
                return Err(at("at most 64 replicas".into()));
            }
            for (i, r) in svc.replicas.iter().enumerate() {
                crate::replica::validate(r).map_err(|m| at(format!("replicas[{i}].{m}")))?;
            }
            if svc.endpoints.is_empty() {
                return Err(at("no endpoints".into()));
            }
            let mut seen = std::collections::HashSet::new();
            for ep in &svc.endpoints {
                let at = |m: String| at(format!("endpoint {} {}: {m}", ep.method, ep.path));
                let compiled = CompiledEndpoint::compile(ep).map_err(at)?;
                let key = (compiled.method.clone(), compiled.pattern_key());
                if !seen.insert(key) {
                    return Err(at("declared twice".into()));
                }
            }
        }
        Ok(())
    }
}

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
    fn pattern_key(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let src = include_str!("../../../examples/sim.toml");
        let cfg = SimConfig::from_toml(src).unwrap();
        assert!(cfg.services.len() >= 2);
    }

    #[test]
    fn shop_has_the_seed_latencies() {
        let shop = SimConfig::shop();
        shop.validate().unwrap();
        let want = [
            ("order", "POST", "/orders", 150),
            ("order", "POST", "/orders/{id}/confirm", 50),
            ("payment", "POST", "/payments", 200),
            ("inventory", "POST", "/inventory/reserve", 100),
            ("shipping", "POST", "/shipping/labels", 250),
            ("shipping", "GET", "/shipping/rates/{zip}", 250),
            ("users", "GET", "/users/{id}", 100),
            ("orders", "GET", "/users/{id}/orders", 200),
        ];
        let mut n = 0;
        for (svc, m, p, ms) in want {
            let ep = shop.services[svc]
                .endpoints
                .iter()
                .find(|e| e.method == m && e.path == p)
                .unwrap_or_else(|| panic!("{svc} {m} {p}"));
            assert_eq!(ep.latency, Latency::fixed_ms(ms), "{svc} {m} {p}");
            n += 1;
        }
        let total: usize = shop.services.values().map(|s| s.endpoints.len()).sum();
        assert_eq!(total, n, "no endpoints beyond the seed documents'");
    }

    #[test]
    fn base_port_assignment() {
        // Generic: by name order.
        let cfg = SimConfig::shop().with_base_port(7001).unwrap();
        let ports: Vec<(&str, u16)> = cfg
            .services
            .iter()
            .map(|(n, s)| (n.as_str(), s.replicas[0].port.unwrap()))
            .collect();
        assert_eq!(ports[0], ("inventory", 7001));
        assert_eq!(ports[5], ("users", 7006));
        assert!(SimConfig::shop().with_base_port(65534).is_err());
        // The shop: in the seed documents' order.
        let shop = SimConfig::shop_at(7001).unwrap();
        let port = |n: &str| shop.services[n].port.unwrap();
        let got: Vec<u16> = SHOP_SERVICES.iter().map(|n| port(n)).collect();
        assert_eq!(got, vec![7001, 7002, 7003, 7004, 7005, 7006]);
        assert_eq!(port("payment"), 7002);
        let eph = SimConfig::shop_at(0).unwrap();
        assert!(eph.services.values().all(|s| s.port.is_none()));
    }

    #[test]
    fn config_errors_are_located() {
        for (src, needle) in [
            ("[services.a]\nendpoints = []\n", "services.a: no endpoints"),
            (
                "[services.a]\nendpoints = [{ path = \"x\" }]\n",
                "must start with `/`",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\" }, { path = \"/a\", method = \"get\" }]\n",
                "declared twice",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a/{x}\", response = { body = \"{path.y}\" } }]\n",
                "no {y} segment",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", faults = [{ kind = \"reset\", rate = 0.7 }, { kind = \"hang\", rate = 0.4 }] }]\n",
                "above 1",
            ),
            (
                "[services.a]\nport = 1\nreplicas = [{}]\nendpoints = [{ path = \"/a\" }]\n",
                "not both",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", latency = \"soon\" }]\n",
                "line 2",
            ),
            (
                "[services.a]\nendpoints = [{ path = \"/a\", faults = [{ kind = \"explode\", rate = 0.1 }] }]\n",
                "explode",
            ),
            ("seed = 1\n", "missing field `services`"),
        ] {
            let err = SimConfig::from_toml(src).unwrap_err().to_string();
            assert!(err.contains(needle), "{src}\n=> {err}");
            assert!(err.starts_with("config error"), "{err}");
        }
    }

    #[test]
    fn configs_built_in_code_are_validated_too() {
        let mut cfg = SimConfig::shop();
        cfg.services.get_mut("users").unwrap().endpoints[0].latency = Latency::Uniform {
            min: Duration::from_millis(20),
            max: Duration::from_millis(10),
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("services.users") && err.contains("above max"),
            "{err}"
        );
        let mut cfg = SimConfig::shop();
        cfg.services.get_mut("users").unwrap().endpoints[0].latency = Latency::Mix(vec![]);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn path_matching_and_faults() {
        let ep = CompiledEndpoint::compile(&EndpointConfig {
            method: "post".into(),
            path: "/orders/{id}/confirm".into(),
            latency: Latency::fixed_ms(1),
            faults: vec![
                FaultConfig {
                    rate: 0.1,
                    kind: FaultKind::Reset,
                },
                FaultConfig {
                    rate: 0.2,
                    kind: FaultKind::Status { status: 503 },
                },
            ],
            response: ResponseConfig::default(),
        })
        .unwrap();
        assert_eq!(ep.method, Method::POST);
        assert_eq!(
            ep.matches(&["orders", "a%20b", "confirm"]),
            Some(vec![("id".into(), "a b".into())])
        );
        assert_eq!(ep.matches(&["orders", "1"]), None);
        assert_eq!(ep.matches(&["orders", "1", "cancel"]), None);
        assert_eq!(ep.fault_for(0.05), Some(&FaultKind::Reset));
        assert_eq!(ep.fault_for(0.25), Some(&FaultKind::Status { status: 503 }));
        assert_eq!(ep.fault_for(0.31), None);
    }
}
