//! The fault windows: when they open, which upstream they hit and how, and the driver that opens
//! them while the load runs.

use super::report::FaultRecord;
use super::setup::{Upstream, UPSTREAMS};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a fault window breaks its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The upstream accepts requests but answers none until the window ends.
    Stall,
    /// The upstream is stopped (its connections dropped, new ones refused), then restarted.
    Down,
}

/// One planned fault window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// From the start of the load.
    pub start: Duration,
    /// Its length.
    pub length: Duration,
    /// Which upstream ([`UPSTREAMS`] order: users, orders, catalog, items).
    pub upstream: usize,
    /// What happens to it.
    pub kind: FaultKind,
}

/// Windows at every multiple of `every`, each followed by at least its own length of load (so the
/// recovery is seen too). Window `k` hits upstream `k mod 4`; the kind alternates so that short
/// runs see both kinds and every eight windows cover every upstream with both.
pub(crate) fn windows(duration: Duration, every: Duration, length: Duration) -> Vec<Window> {
    let mut out = Vec::new();
    if every.is_zero() {
        return out;
    }
    let n = UPSTREAMS.len();
    let mut k = 0usize;
    loop {
        let start = every * (k as u32 + 1);
        if start + length * 2 > duration {
            return out;
        }
        out.push(Window {
            start,
            length,
            upstream: k % n,
            kind: if (k + k / n).is_multiple_of(2) {
                FaultKind::Stall
            } else {
                FaultKind::Down
            },
        });
        k += 1;
    }
}

/// Sleep until `until`; false if `stop` came first.
async fn sleep_or_stop(until: Instant, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep_until(until) => true,
    }
}

/// Open the planned fault windows on the upstreams, in turn, until the plan ends or `stop` (the
/// load is over). A window cut short by `stop` is recorded as long as it lasted.
pub(crate) async fn drive_faults(
    ups: &mut [Upstream],
    windows: &[Window],
    t0: Instant,
    state: watch::Sender<Option<String>>,
    stop: CancellationToken,
) -> Vec<FaultRecord> {
    let mut out = Vec::new();
    for w in windows {
        if !sleep_or_stop(t0 + w.start, &stop).await {
            break;
        }
        let up = &mut ups[w.upstream];
        let kind = match w.kind {
            FaultKind::Stall => "stall",
            FaultKind::Down => "down",
        };
        state.send_replace(Some(format!("{kind} {}", up.name)));
        let at_s = t0.elapsed().as_secs_f64();
        let mut error = None;
        let end = t0 + w.start + w.length;
        let finished = match w.kind {
            FaultKind::Stall => {
                if let Some(sim) = &up.sim {
                    sim.stall(w.length);
                }
                sleep_or_stop(end, &stop).await
            }
            FaultKind::Down => {
                up.stop().await;
                let finished = sleep_or_stop(end, &stop).await;
                error = up.restart().await.err();
                finished
            }
        };
        state.send_replace(None);
        out.push(FaultRecord {
            at_s,
            upstream: up.name.into(),
            kind: kind.into(),
            for_s: t0.elapsed().as_secs_f64() - at_s,
            error,
        });
        if !finished {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /users/7 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// A `down` window refuses connections, then the upstream answers again on the same port; a
    /// `stall` holds answers until it ends; `stop` cuts the plan short and says how long the cut
    /// window lasted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_stall_take_down_restart_and_stop_when_told() {
        let mut ups = vec![Upstream::start("users").await.unwrap()];
        let port = ups[0].port;
        let ms = Duration::from_millis;
        let plan = [
            Window {
                start: ms(100),
                length: ms(300),
                upstream: 0,
                kind: FaultKind::Down,
            },
            Window {
                start: ms(500),
                length: ms(400),
                upstream: 0,
                kind: FaultKind::Stall,
            },
            Window {
                start: ms(1000),
                length: ms(5000),
                upstream: 0,
                kind: FaultKind::Down,
            },
        ];
        let t0 = Instant::now();
        let (tx, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let probe = {
            let stop = stop.clone();
            async move {
                tokio::time::sleep_until(t0 + ms(250)).await;
                let refused = get(port).await.is_err();
                let label = rx.borrow().clone();
                tokio::time::sleep_until(t0 + ms(550)).await;
                let stalled = get(port).await.unwrap();
                let stalled_until = t0.elapsed();
                tokio::time::sleep_until(t0 + ms(1200)).await;
                stop.cancel();
                (refused, label, stalled, stalled_until)
            }
        };
        let (records, (refused, label, stalled, stalled_until)) =
            tokio::join!(drive_faults(&mut ups, &plan, t0, tx, stop), probe);
        assert!(
            refused,
            "the upstream still accepted during its down window"
        );
        assert_eq!(label.as_deref(), Some("down users"));
        assert!(stalled.starts_with("HTTP/1.1 200"), "{stalled}");
        assert!(
            stalled_until >= ms(900),
            "answered at {stalled_until:?}, inside the stall"
        );
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["down", "stall", "down"]);
        assert!(records.iter().all(|r| r.error.is_none()), "{records:?}");
        // The last window was cut at ~1.2 s, not run for its 5 s, and the upstream is back.
        assert!(records[2].for_s < 2.0, "{records:?}");
        assert!(get(port).await.unwrap().starts_with("HTTP/1.1 200"));
        ups[0].stop().await;
    }
}
