//! `sim.toml`: the services to simulate, their replicas, endpoints, latencies, faults and replies.
//!
//! See `docs/sim.md` and `examples/sim.toml` for the user-facing description.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::latency::Latency;
use crate::SimError;

mod endpoint;
mod shop;

pub(crate) use endpoint::CompiledEndpoint;

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

/// The largest sim config read, in bytes. A sim config is kilobytes; the bound keeps a wrong
/// path (`/dev/zero`, a log) from being read until memory runs out. A pipe is read as a file
/// (`-c <(generate)`).
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

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
        use std::io::Read as _;
        let mut src = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut src))
            .map_err(|source| SimError::Io {
                what: format!("reading {}", path.display()),
                source,
            })?;
        if src.len() as u64 > MAX_CONFIG_BYTES {
            return Err(SimError::Config(format!(
                "{}: larger than {} MiB: is it the sim config?",
                path.display(),
                MAX_CONFIG_BYTES >> 20
            )));
        }
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

#[cfg(test)]
mod tests;
