//! `manifold bench memory`: what an idle keep-alive client connection and an in-flight request
//! cost in resident memory, Manifold beside nginx (issue 15, goal 3: at most nginx's per
//! connection).
//!
//! Each round starts fresh processes (a `manifold serve` child, nginx with as many workers as
//! Manifold has worker threads) in front of one simulated upstream, and for each:
//! 1. reads its memory at rest (VmRSS summed over the process tree, and Pss from
//!    `smaps_rollup`, which counts pages shared between nginx's master and workers once);
//! 2. opens N connections, each sending one `GET /item` and keeping the connection open, and
//!    reads the memory again: (RSS_N − RSS_0) / N is the cost of one idle connection;
//! 3. closes them, opens K connections (one request each), then sends one slow request on each
//!    (the upstream answers after `upstream_delay`) and, once the upstream holds all of them,
//!    reads the memory: (RSS_K in flight − RSS_K idle) / K is the cost of one request in
//!    flight, apart from its connection. For Manifold the slow request is proxied and then
//!    composed (two parallel upstream calls); nginx proxies it (it does not compose).
//!
//! Fresh processes per round, because a process that served a phase keeps some of what it
//! freed (allocators rarely give memory back), and the next phase's rest would start higher.
//! Kernel socket buffers are not in any process's RSS, so they are not counted for either.

use crate::peers::{self, RunningPeer, Skipped};
use crate::{BenchError, Spread};
use manifold_sim::{RunningSim, Sim, SimConfig};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most idle connections a run may ask for (each is a file descriptor here and in the target).
pub const MAX_CONNECTIONS: usize = 50_000;
/// Most requests a run may hold in flight at once (each is also two upstream calls composed).
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Connections opened at once while building up the idle set.
const OPENING_AT_ONCE: usize = 256;
/// How long one connection may take to open and answer its first request.
const FIRST_ANSWER: Duration = Duration::from_secs(20);
/// The largest answer read (the simulator's are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct MemorySpec {
    /// Idle keep-alive connections (N).
    pub connections: usize,
    /// Requests in flight at once (K).
    pub in_flight: usize,
    /// How long the upstream holds each slow request.
    pub upstream_delay: Duration,
    /// Rounds (fresh processes each).
    pub rounds: usize,
    /// The `manifold` binary, run as `manifold serve`.
    pub manifold_exe: PathBuf,
    /// Where the peers live (for `nginx-memory.conf.template`). `None`: no nginx.
    pub peers_dir: Option<PathBuf>,
    /// Manifold's worker threads (tokio's default: one per core) and so nginx's workers.
    pub workers: usize,
}

impl MemorySpec {
    /// The defaults: 10,000 idle connections, 1,000 requests in flight, 3 rounds.
    pub fn new(manifold_exe: PathBuf) -> Self {
        MemorySpec {
            connections: 10_000,
            in_flight: 1_000,
            upstream_delay: Duration::from_secs(8),
            rounds: 3,
            manifold_exe,
            peers_dir: Some(peers::default_dir()),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// A short run for smoke tests and `--quick`.
    pub fn quick(manifold_exe: PathBuf) -> Self {
        MemorySpec {
            connections: 1_000,
            in_flight: 100,
            upstream_delay: Duration::from_secs(4),
            rounds: 1,
            ..MemorySpec::new(manifold_exe)
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::Spec(what));
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad(format!(
                "connections = {} must be between 1 and {MAX_CONNECTIONS}",
                self.connections
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            return bad(format!(
                "in-flight = {} must be between 1 and {MAX_IN_FLIGHT}",
                self.in_flight
            ));
        }
        if self.rounds == 0 || self.rounds > 100 {
            return bad(format!(
                "rounds = {} must be between 1 and 100",
                self.rounds
            ));
        }
        if self.upstream_delay < Duration::from_millis(500)
            || self.upstream_delay > Duration::from_secs(60)
        {
            return bad(format!(
                "upstream delay {:?} must be between 500ms and 60s (long enough to send every \
                 slow request before the first is answered)",
                self.upstream_delay
            ));
        }
        Ok(())
    }
}

/// Resident memory of a process tree, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resident {
    /// VmRSS summed over the tree.
    pub rss_kib: u64,
    /// Pss summed over the tree (shared pages split between their users).
    pub pss_kib: u64,
}

/// Read `pid`'s tree (the process and its direct children: nginx's workers).
pub fn resident(pid: u32) -> Option<Resident> {
    let mut total = Resident::default();
    for p in peers::proc_tree(pid) {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
        total.rss_kib += kib_field(&status, "VmRSS:")?;
        total.pss_kib += kib_field(&rollup, "Pss:")?;
    }
    Some(total)
}

/// This process's soft limit on open files (`None`: unlimited or unreadable).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `NAME:   1234 kB` → 1234.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One target's figures over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct TargetMemory {
    /// "manifold" or "nginx".
    pub target: String,
    /// RSS at rest, KiB.
    pub rest_rss_kib: Spread,
    /// RSS with the N idle connections open, KiB.
    pub idle_rss_kib: Spread,
    /// (RSS_N − RSS_0) / N, bytes.
    pub per_connection_rss_bytes: Spread,
    /// The same from Pss, bytes.
    pub per_connection_pss_bytes: Spread,
    /// (RSS in flight − RSS with the K connections idle) / K, bytes, for a proxied request.
    pub per_proxied_in_flight_bytes: Spread,
    /// The same for a composed request (Manifold only).
    pub per_composed_in_flight_bytes: Option<Spread>,
    /// Idle connections that failed to open or to get their first answer, over rounds.
    pub failed_connections: u64,
    /// Idle connections the target had closed when the memory was read, over rounds.
    pub closed_early: u64,
    /// Slow requests not answered 200, over rounds.
    pub failed_in_flight: u64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Always "memory".
    pub scenario: &'static str,
    /// Idle connections (N).
    pub connections: usize,
    /// Requests in flight (K).
    pub in_flight: usize,
    /// The upstream's delay for slow requests, seconds.
    pub upstream_delay_s: f64,
    /// Rounds.
    pub rounds: usize,
    /// Manifold's worker threads and nginx's worker processes.
    pub workers: usize,
    /// Manifold, then nginx when it ran.
    pub targets: Vec<TargetMemory>,
    /// Manifold's per-connection RSS over nginx's (medians); `None` without nginx.
    pub per_connection_ratio: Option<f64>,
    /// Peers that could not run, and why.
    pub skipped: Vec<Skipped>,
}

/// The upstream: `GET /item` at once, `GET /slow` after `delay`.
fn sim_config(delay: Duration) -> Result<SimConfig, BenchError> {
    let toml = format!(
        r#"
seed = 7
host = "127.0.0.1"
[services.item]
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  response = {{ body = {{ id = "{{seq}}", name = "widget", price = 9.5 }} }}
  [[services.item.endpoints]]
  method = "GET"
  path = "/slow"
  latency = "{}ms"
  response = {{ body = {{ id = "{{seq}}", name = "slow widget", price = 9.5 }} }}
"#,
        delay.as_millis()
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// Manifold's config: `/item` and `/slow` proxied, `/composed` two parallel `/slow` calls. The
/// connection limit and the keep-alive timeout are raised so that every connection of the run
/// is served and none is closed while the memory is read; the concurrency limit is fixed well
/// above K so that a burst of slow requests is measured, not shed.
pub fn gateway_toml(upstream_url: &str, spec: &MemorySpec) -> String {
    let max_connections = spec.connections + spec.in_flight + 100;
    let concurrency = 2 * spec.in_flight + 100;
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_connections = {max_connections}
header_read_timeout = "300s"
concurrency = {concurrency}

[upstreams.u]
endpoints = ["{upstream_url}"]
timeout = "120s"

[routes.item]
method = "GET"
path = "/item"
proxy = "u"

[routes.slow]
method = "GET"
path = "/slow"
proxy = "u"

[routes.composed]
method = "GET"
path = "/composed"
deadline = "120s"
  [[routes.composed.calls]]
  name = "a"
  upstream = "u"
  method = "GET"
  path = "/slow"
  [[routes.composed.calls]]
  name = "b"
  upstream = "u"
  method = "GET"
  path = "/slow"
  [routes.composed.response]
  body = {{ a = "{{a}}", b = "{{b}}" }}
"#
    )
}

/// Samples of one target over rounds.
#[derive(Debug, Default)]
struct Samples {
    rest: Vec<f64>,
    idle: Vec<f64>,
    per_conn_rss: Vec<f64>,
    per_conn_pss: Vec<f64>,
    proxied: Vec<f64>,
    composed: Vec<f64>,
    failed: u64,
    closed_early: u64,
    failed_in_flight: u64,
}

/// Run the memory benchmark. `progress` is told what is being measured.
pub async fn run(
    spec: &MemorySpec,
    mut progress: impl FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    spec.check()?;
    // This process holds the N client sockets, then K client sockets and the simulator's 2K.
    let needed = spec.connections.max(3 * spec.in_flight) as u64 + 256;
    if let Some(limit) = open_file_limit() {
        if limit < needed {
            return Err(BenchError::Spec(format!(
                "{} connections and {} in flight need about {needed} open files; this \
                 process may open {limit} (raise `ulimit -n`, or lower --connections / --in-flight)",
                spec.connections, spec.in_flight
            )));
        }
    }
    let sim = Sim::start(sim_config(spec.upstream_delay)?)
        .await
        .map_err(|e| BenchError::Setup(format!("simulator: {e}")))?;
    let result = rounds(spec, &sim, &mut progress).await;
    sim.shutdown().await;
    result
}

async fn rounds(
    spec: &MemorySpec,
    sim: &RunningSim,
    progress: &mut impl FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    let upstream = sim
        .url("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let upstream_addr = sim
        .addr("item")
        .ok_or_else(|| BenchError::Setup("simulator has no service item".into()))?;
    let mut manifold = Samples::default();
    let mut nginx = Samples::default();
    let mut skipped = Vec::new();
    for round in 0..spec.rounds {
        // Alternate which goes first: neither always measures on the cooler machine.
        for k in 0..2 {
            let first_nginx = round % 2 == 1;
            let is_nginx = (k == 0) == first_nginx;
            if is_nginx {
                let Some(dir) = &spec.peers_dir else { continue };
                if !skipped.is_empty() {
                    continue;
                }
                progress(&format!("nginx, round {}/{}", round + 1, spec.rounds));
                let nofile = (spec.connections + 3 * spec.in_flight + 1000).to_string();
                let vars = [
                    ("UPSTREAM", upstream_addr.to_string()),
                    ("WORKERS", spec.workers.to_string()),
                    ("WORKER_CONNECTIONS", nofile.clone()),
                    ("NOFILE", nofile),
                ];
                let started = match crate::proxy_peers::nginx_from(
                    dir,
                    "nginx-memory.conf.template",
                    "/item",
                    &vars,
                ) {
                    Ok(cmd) => peers::start(cmd).await,
                    Err(s) => Err(s),
                };
                match started {
                    Ok(p) => measure_target(spec, sim, &p, false, &mut nginx, progress).await?,
                    Err(s) => {
                        progress(&s.to_string());
                        skipped.push(s);
                    }
                }
            } else {
                progress(&format!("manifold, round {}/{}", round + 1, spec.rounds));
                let toml = gateway_toml(&upstream, spec);
                let cmd = peers::manifold_serve(&spec.manifold_exe, &toml, "/item")
                    .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
                let p = peers::start(cmd)
                    .await
                    .map_err(|s| BenchError::Setup(format!("manifold serve: {}", s.reason)))?;
                measure_target(spec, sim, &p, true, &mut manifold, progress).await?;
            }
        }
    }
    let mut targets = vec![summarize("manifold", manifold)];
    if !nginx.rest.is_empty() {
        targets.push(summarize("nginx", nginx));
    }
    let per_connection_ratio = targets.get(1).and_then(|n| {
        let n = n.per_connection_rss_bytes.median;
        (n > 0.0).then(|| targets[0].per_connection_rss_bytes.median / n)
    });
    Ok(MemoryReport {
        scenario: "memory",
        connections: spec.connections,
        in_flight: spec.in_flight,
        upstream_delay_s: spec.upstream_delay.as_secs_f64(),
        rounds: spec.rounds,
        workers: spec.workers,
        targets,
        per_connection_ratio,
        skipped,
    })
}

fn summarize(name: &str, s: Samples) -> TargetMemory {
    TargetMemory {
        target: name.into(),
        rest_rss_kib: Spread::of(&s.rest),
        idle_rss_kib: Spread::of(&s.idle),
        per_connection_rss_bytes: Spread::of(&s.per_conn_rss),
        per_connection_pss_bytes: Spread::of(&s.per_conn_pss),
        per_proxied_in_flight_bytes: Spread::of(&s.proxied),
        per_composed_in_flight_bytes: (!s.composed.is_empty()).then(|| Spread::of(&s.composed)),
        failed_connections: s.failed,
        closed_early: s.closed_early,
        failed_in_flight: s.failed_in_flight,
    }
}

/// Memory of the target now, after letting it settle: read until two readings 200 ms apart
/// agree within 1% (at most 3 s), so a phase's last allocations are in.
async fn settled(p: &RunningPeer) -> Result<Resident, BenchError> {
    let read = || {
        resident(p.pid()).ok_or_else(|| {
            BenchError::Setup(format!(
                "cannot read /proc/{} (did {} exit?)",
                p.pid(),
                p.name()
            ))
        })
    };
    let mut last = read()?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = read()?;
        if now.rss_kib.abs_diff(last.rss_kib) * 100 <= last.rss_kib.max(1) {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Bytes per unit between two readings (KiB), `n` units.
fn per(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) * 1024.0 / n.max(1) as f64
}

async fn measure_target(
    spec: &MemorySpec,
    sim: &RunningSim,
    p: &RunningPeer,
    is_manifold: bool,
    s: &mut Samples,
    progress: &mut impl FnMut(&str),
) -> Result<(), BenchError> {
    let addr: SocketAddr = p
        .url("")
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| BenchError::Setup(format!("{} address: {e}", p.name())))?;
    let rest = settled(p).await?;
    progress(&format!(
        "  {}: {} idle connections",
        p.name(),
        spec.connections
    ));
    let (conns, failed) = open_idle(addr, spec.connections).await;
    // Manifold gives up an idle connection's buffers once it has been idle for 50 ms
    // (`PARK_AFTER` in manifold-gateway's idle.rs): read after every connection had that time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = settled(p).await?;
    let closed_early = count_closed(&conns);
    let open = conns.len() - closed_early as usize;
    s.rest.push(rest.rss_kib as f64);
    s.idle.push(idle.rss_kib as f64);
    s.per_conn_rss.push(per(rest.rss_kib, idle.rss_kib, open));
    s.per_conn_pss.push(per(rest.pss_kib, idle.pss_kib, open));
    s.failed += failed;
    s.closed_early += closed_early;
    drop(conns);
    let mut paths = vec![("/slow", 1)];
    if is_manifold {
        paths.push(("/composed", 2));
    }
    for (path, calls) in paths {
        progress(&format!(
            "  {}: {} requests in flight ({path})",
            p.name(),
            spec.in_flight
        ));
        let (bytes, failed) = in_flight(spec, sim, p, addr, path, calls).await?;
        s.failed_in_flight += failed;
        if path == "/slow" {
            s.proxied.push(bytes);
        } else {
            s.composed.push(bytes);
        }
    }
    Ok(())
}

/// K connections, one quick request each; then one slow request on each, the memory read
/// while the upstream holds them all; then every answer read. Returns the bytes per request in
/// flight and how many slow requests were not answered 200.
async fn in_flight(
    spec: &MemorySpec,
    sim: &RunningSim,
    p: &RunningPeer,
    addr: SocketAddr,
    path: &str,
    calls_each: u64,
) -> Result<(f64, u64), BenchError> {
    // The previous phase's connections are closed: let the target see it.
    let (mut conns, _) = open_idle(addr, spec.in_flight).await;
    let before = settled(p).await?;
    let slow_before = slow_in_flight(sim);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let sent_at = Instant::now();
    let mut sent = 0usize;
    for c in &mut conns {
        if c.write_all(request.as_bytes()).await.is_ok() {
            sent += 1;
        }
    }
    // Wait (bounded: three quarters of the upstream's delay) until the upstream holds every
    // call: on a loaded machine, a thousand composed requests take seconds to fan out.
    let want = slow_before + sent as u64 * calls_each;
    let until = sent_at + spec.upstream_delay * 3 / 4;
    while slow_in_flight(sim) < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = slow_in_flight(sim);
    // Read now, before the first answer can leave the upstream.
    let during = resident(p.pid())
        .ok_or_else(|| BenchError::Setup(format!("cannot read /proc/{}", p.pid())))?;
    if Instant::now() >= sent_at + spec.upstream_delay {
        return Err(BenchError::Setup(format!(
            "{}: sending {sent} slow requests took longer than the upstream's delay ({:?}): \
             raise it or lower the number in flight",
            p.name(),
            spec.upstream_delay
        )));
    }
    if held < want {
        return Err(BenchError::Setup(format!(
            "{}: only {} of {} upstream calls for {path} were in flight within {:?}",
            p.name(),
            held.saturating_sub(slow_before),
            want - slow_before,
            spec.upstream_delay * 3 / 4
        )));
    }
    let mut answers = JoinSet::new();
    for mut c in conns {
        answers.spawn(async move {
            tokio::time::timeout(Duration::from_secs(130), read_answer(&mut c))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    let mut ok = 0u64;
    while let Some(a) = answers.join_next().await {
        if matches!(a, Ok(Some(200))) {
            ok += 1;
        }
    }
    let failed = spec.in_flight as u64 - ok;
    Ok((per(before.rss_kib, during.rss_kib, sent), failed))
}

/// Upstream calls to `/slow` being served now.
fn slow_in_flight(sim: &RunningSim) -> u64 {
    sim.stats()
        .services
        .get("item")
        .and_then(|s| s.endpoints.get("GET /slow"))
        .map_or(0, |e| e.in_flight)
}

/// Open `n` connections to `addr`, each answered once (`GET /item`), kept open. Returns the
/// open ones and how many failed.
async fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, u64) {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0u64;
    let mut opening = JoinSet::new();
    let mut next = 0usize;
    while next < n || !opening.is_empty() {
        while next < n && opening.len() < OPENING_AT_ONCE {
            next += 1;
            opening.spawn(tokio::time::timeout(FIRST_ANSWER, open_one(addr)));
        }
        match opening.join_next().await {
            Some(Ok(Ok(Ok(c)))) => conns.push(c),
            Some(_) => failed += 1,
            None => break,
        }
    }
    (conns, failed)
}

async fn open_one(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"GET /item HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    match read_answer(&mut c).await? {
        200 => Ok(c),
        other => Err(std::io::Error::other(format!("status {other}"))),
    }
}

/// Connections the other side has closed (a read would return end of file now).
fn count_closed(conns: &[TcpStream]) -> u64 {
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|c| matches!(c.try_read(&mut buf), Ok(0)))
        .count() as u64
}

/// Read one HTTP/1.1 answer (Content-Length or chunked body) and return its status.
async fn read_answer(c: &mut TcpStream) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before a complete answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(bad("answer too large"));
        }
        if let Some(status) = complete(&buf).map_err(bad)? {
            return Ok(status);
        }
    }
}

/// `Some(status)` when `buf` holds one whole answer; `None` when more is to come.
fn complete(buf: &[u8]) -> Result<Option<u16>, &'static str> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "answer head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no status line")?;
    let body = &buf[head_end + 4..];
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|_| "bad length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let done = if chunked {
        body.ends_with(b"0\r\n\r\n")
    } else {
        body.len() >= length.unwrap_or(0)
    };
    Ok(done.then_some(status))
}

impl MemoryReport {
    /// The report as Markdown tables, with the goal.
    pub fn to_markdown(&self) -> String {
        let kib = |s: &Spread| {
            format!(
                "{:.1} [{:.1}–{:.1}]",
                s.median / 1024.0,
                s.min / 1024.0,
                s.max / 1024.0
            )
        };
        let b = |s: &Spread| format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max);
        let mut out = format!(
            "## Memory: {} idle keep-alive connections, {} requests in flight ({} s upstream), \
             {} worker(s), {} round(s) (medians [min–max])\n\n\
             | target | RSS at rest MiB | RSS with N idle MiB | per connection, RSS bytes | \
             per connection, Pss bytes | per proxied request in flight, bytes | per composed \
             request in flight, bytes | failed / closed early / in flight failed |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
            self.connections, self.in_flight, self.upstream_delay_s, self.workers, self.rounds
        );
        for t in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                t.target,
                kib(&t.rest_rss_kib),
                kib(&t.idle_rss_kib),
                b(&t.per_connection_rss_bytes),
                b(&t.per_connection_pss_bytes),
                b(&t.per_proxied_in_flight_bytes),
                t.per_composed_in_flight_bytes
                    .as_ref()
                    .map_or("n/a (no composition)".to_owned(), b),
                t.failed_connections,
                t.closed_early,
                t.failed_in_flight,
            ));
        }
        match self.per_connection_ratio {
            Some(r) => out.push_str(&format!(
                "\nManifold's RSS per idle connection is {r:.2}× nginx's (goal ≤ 1.00×: {}).\n",
                if r <= 1.0 { "met" } else { "NOT met" }
            )),
            None => out.push_str("\nnginx did not run: no ratio.\n"),
        }
        for s in &self.skipped {
            out.push_str(&format!("\n{s}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_complete_by_length_or_last_chunk() {
        assert_eq!(complete(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(complete(head), Ok(None));
        assert_eq!(complete(&[&head[..], b"hello"].concat()), Ok(Some(200)));
        let chunked = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        assert_eq!(complete(chunked), Ok(None));
        assert_eq!(
            complete(&[&chunked[..], b"0\r\n\r\n"].concat()),
            Ok(Some(503))
        );
        assert!(complete(b"garbage\r\n\r\n").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn absurd_specs_are_refused_with_what_is_wrong() {
        let mut s = MemorySpec::quick("manifold".into());
        s.connections = MAX_CONNECTIONS + 1;
        assert!(s.check().unwrap_err().to_string().contains("connections"));
        let mut s = MemorySpec::quick("manifold".into());
        s.in_flight = 0;
        assert!(s.check().unwrap_err().to_string().contains("in-flight"));
        let mut s = MemorySpec::quick("manifold".into());
        s.upstream_delay = Duration::from_millis(10);
        assert!(s.check().unwrap_err().to_string().contains("delay"));
    }

    #[test]
    fn this_process_has_a_resident_reading() {
        let r = resident(std::process::id()).expect("/proc is readable");
        assert!(r.rss_kib > 0 && r.pss_kib > 0, "{r:?}");
    }

    #[test]
    fn the_gateway_config_compiles() {
        let spec = MemorySpec::quick("manifold".into());
        let toml = gateway_toml("http://127.0.0.1:9", &spec);
        let c = manifold_config::compile("memory.toml".as_ref(), &toml);
        assert!(c.is_ok(), "{:?}", c.err());
    }
}
