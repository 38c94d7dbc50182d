//! One target's measurement in one round: memory at rest, with N idle connections, and with K
//! slow requests held by the upstream, each read once the target has settled.

use super::client::{count_closed, open_idle, read_answer};
use super::{resident, MemorySpec, Resident, Samples};
use crate::peers::RunningPeer;
use crate::BenchError;
use manifold_sim::RunningSim;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

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

pub(super) async fn measure_target(
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
