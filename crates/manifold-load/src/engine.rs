//! The open-loop scheduler: request `i` is due at `start + i / rate`, whatever happened to the
//! requests before it. It never waits for an answer, only for the clock; if it falls behind (a
//! busy machine) it sends the overdue requests at once, and their latency still counts from when
//! they were due. The sender is a parameter so the scheduling can be tested on paused time.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::keys::KeySampler;
use crate::report::{ErrorKind, LoadReport, HISTOGRAM_MAX_US};

/// A request's result: the response status, or why there was none.
pub(crate) type Outcome = Result<u16, ErrorKind>;

/// A validated run.
pub(crate) struct Plan {
    pub(crate) total: u64,
    pub(crate) rate: f64,
    pub(crate) timeout: Duration,
    pub(crate) connections: Option<usize>,
    pub(crate) keys: KeySampler,
    pub(crate) progress: bool,
    pub(crate) timer: manifold_timer::Timer,
}

struct Done {
    scheduled: Instant,
    /// When the request's send began (after its connection slot), if it began in time.
    sent: Option<Instant>,
    finished: Instant,
    outcome: Outcome,
}

/// Schedule `plan.total` requests, each made by `send(seq, key)` (seq from 1), and measure them.
pub(crate) async fn drive<F, Fut>(mut plan: Plan, send: F) -> LoadReport
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let limit = plan.connections.map(|c| Arc::new(Semaphore::new(c.max(1))));
    let bar = progress_bar(plan.progress, plan.total);
    let start = Instant::now();
    let interval = 1.0 / plan.rate;
    let timeout = plan.timeout;

    let schedule = async {
        let mut max_lag = Duration::ZERO;
        for i in 0..plan.total {
            let due = start + Duration::from_secs_f64(i as f64 * interval);
            let now = Instant::now();
            if due > now {
                plan.timer.sleep_until(due).await;
            } else {
                max_lag = max_lag.max(now - due);
                // Behind schedule the loop never sleeps: let the requests (and, on a
                // current-thread runtime, the collector) run now and then.
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            let key = plan.keys.next_key();
            let request = send(i + 1, key);
            let limit = limit.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let work = async move {
                    // Waiting for a connection slot is part of the latency: the request was due.
                    let _permit = match &limit {
                        Some(l) => Some(l.clone().acquire_owned().await),
                        None => None,
                    };
                    let sent = Instant::now();
                    (request.await, sent)
                };
                let (outcome, sent) = match tokio::time::timeout_at(due + timeout, work).await {
                    Ok((outcome, sent)) => (outcome, Some(sent)),
                    Err(_) => (Err(ErrorKind::Timeout), None),
                };
                let _ = tx.send(Done {
                    scheduled: due,
                    sent,
                    finished: Instant::now(),
                    outcome,
                });
            });
        }
        drop(tx);
        max_lag
    };

    let collect = async {
        let mut hists = Hists::new();
        let mut report = Tally::default();
        let mut last = start;
        while let Some(d) = rx.recv().await {
            last = last.max(d.finished);
            report.add(&d, &mut hists);
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
        (hists, report, last)
    };

    let (max_lag, (hists, tally, last)) = tokio::join!(schedule, collect);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let duration = last.saturating_duration_since(start);
    let secs = duration.as_secs_f64();
    let completed = tally.ok + tally.errors;
    LoadReport {
        sent: plan.total,
        ok: tally.ok,
        errors: tally.errors,
        rate: if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        },
        duration_s: secs,
        latency_ms: LoadReport::percentiles(&hists.all),
        target_rate: plan.rate,
        errors_by_kind: tally.by_kind,
        statuses: tally.statuses,
        histogram: hists.all,
        ok_histogram: hists.ok,
        ok_from_send_histogram: hists.ok_from_send,
        send_delay_histogram: hists.send_delay,
        max_send_lag: max_lag,
    }
}

/// The run's latency histograms, in microseconds.
struct Hists {
    /// Every answer, from its scheduled time.
    all: Histogram<u64>,
    /// Answers below 400, from their scheduled time.
    ok: Histogram<u64>,
    /// Answers below 400, from the start of their send.
    ok_from_send: Histogram<u64>,
    /// Every request that was sent: from its scheduled time to the start of its send.
    send_delay: Histogram<u64>,
}

impl Hists {
    fn new() -> Self {
        Hists {
            all: new_histogram(),
            ok: new_histogram(),
            ok_from_send: new_histogram(),
            send_delay: new_histogram(),
        }
    }
}

/// `later - earlier` in whole microseconds, within the histograms' range.
fn micros(earlier: Instant, later: Instant) -> u64 {
    let us = later.saturating_duration_since(earlier).as_micros();
    u64::try_from(us)
        .unwrap_or(u64::MAX)
        .clamp(1, HISTOGRAM_MAX_US)
}

/// 1 µs to one hour at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant bounds are valid")
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    by_kind: std::collections::BTreeMap<ErrorKind, u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
}

impl Tally {
    fn add(&mut self, d: &Done, h: &mut Hists) {
        if let Some(sent) = d.sent {
            h.send_delay.saturating_record(micros(d.scheduled, sent));
        }
        let kind = match d.outcome {
            Ok(status) => {
                let us = micros(d.scheduled, d.finished);
                h.all.saturating_record(us);
                if status < 400 {
                    h.ok.saturating_record(us);
                    if let Some(sent) = d.sent {
                        h.ok_from_send.saturating_record(micros(sent, d.finished));
                    }
                }
                *self.statuses.entry(status).or_default() += 1;
                match status {
                    400..=499 => Some(ErrorKind::Http4xx),
                    500.. => Some(ErrorKind::Http5xx),
                    _ => None,
                }
            }
            Err(k) => Some(k),
        };
        match kind {
            None => self.ok += 1,
            Some(k) => {
                self.errors += 1;
                *self.by_kind.entry(k).or_default() += 1;
            }
        }
    }
}

fn progress_bar(wanted: bool, total: u64) -> Option<indicatif::ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos}/{len} done  {per_sec}  {elapsed} elapsed, eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyDist;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// HDR histograms keep 3 significant digits: equal within 0.1%.
    fn approx(got: f64, want: f64) -> bool {
        (got - want).abs() <= want.abs() * 0.001 + 1e-9
    }

    fn plan(total: u64, rate: f64) -> Plan {
        Plan {
            total,
            rate,
            timeout: Duration::from_secs(10),
            connections: None,
            keys: KeyDist::Uniform { n: 10 }.sampler(1).unwrap(),
            progress: false,
            timer: manifold_timer::Timer::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_on_schedule_without_waiting_for_answers() {
        let start = Instant::now();
        let sends = Arc::new(Mutex::new(Vec::new()));
        let s = sends.clone();
        // Each answer takes 1 s, far longer than the 10 ms interval: an open loop must not care.
        let r = drive(plan(100, 100.0), move |seq, _| {
            s.lock().unwrap().push((seq, Instant::now() - start));
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(200)
            }
        })
        .await;
        let sends = sends.lock().unwrap();
        assert_eq!(sends.len(), 100);
        for (i, (seq, at)) in sends.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*at, Duration::from_millis(10 * i as u64), "request {seq}");
        }
        assert_eq!((r.sent, r.ok, r.errors), (100, 100, 0));
        assert!(approx(r.latency_ms.p50, 1000.0), "{:?}", r.latency_ms);
        assert!(approx(r.latency_ms.max, 1000.0), "{:?}", r.latency_ms);
        // Last answer at 0.99 s + 1 s.
        assert!((r.duration_s - 1.99).abs() < 1e-9, "{}", r.duration_s);
        assert!((r.rate - 100.0 / 1.99).abs() < 1e-6);
        assert_eq!(r.max_send_lag, Duration::ZERO);
    }

    /// A server that freezes from 1 s to 2 s: every answer due in the freeze comes at 2 s.
    fn frozen(
        start: Instant,
    ) -> impl Fn(u64, u64) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
        move |_, _| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let t = Instant::now() - start;
                if t >= Duration::from_secs(1) && t < Duration::from_secs(2) {
                    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
                }
                Ok(200)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_shows_in_the_tail() {
        let start = Instant::now();
        let r = drive(plan(300, 100.0), frozen(start)).await;
        assert_eq!(r.ok, 300);
        // 100 of 300 requests were due in the freeze, waiting 1000 ms down to ~10 ms.
        assert!(approx(r.latency_ms.p50, 1.0), "p50 {}", r.latency_ms.p50);
        assert!(r.latency_ms.p99 > 900.0, "p99 {}", r.latency_ms.p99);
        // The first request due in the freeze (at 1.00 s) is answered at 2 s.
        assert!(approx(r.latency_ms.max, 1000.0), "max {}", r.latency_ms.max);
        // The share of requests slower than 500 ms: the ~50 due in the freeze's first half.
        let slow = r
            .histogram
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > 500_000)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        assert!((48..=52).contains(&slow), "slow {slow}");
    }

    #[tokio::test(start_paused = true)]
    async fn connection_cap_queues_and_counts_the_wait() {
        let in_flight = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (f, p) = (in_flight.clone(), peak.clone());
        let mut pl = plan(10, 100.0);
        pl.connections = Some(1);
        let r = drive(pl, move |_, _| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                let n = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                Ok(200)
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 1);
        // Request i is due at 10·i ms and answered at 100·(i+1) ms: the last waited 910 ms.
        assert!(approx(r.latency_ms.max, 910.0), "max {}", r.latency_ms.max);
        // The median request (the 5th, due at 40 ms) is answered at 500 ms.
        assert!(approx(r.latency_ms.p50, 460.0), "p50 {}", r.latency_ms.p50);
        // Measured from its send, every request took its 100 ms: the rest was the client's own
        // wait for the one connection, which the send delay holds (the last: sent at 900 ms,
        // due at 90 ms).
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        assert_eq!(r.ok_from_send_histogram.len(), 10);
        assert!(approx(ms(&r.ok_from_send_histogram, 0.0), 100.0));
        assert!(approx(ms(&r.ok_from_send_histogram, 1.0), 100.0));
        assert_eq!(r.send_delay_histogram.len(), 10);
        assert!(approx(ms(&r.send_delay_histogram, 1.0), 810.0));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_and_statuses_are_errors_by_kind() {
        let mut pl = plan(6, 10.0);
        pl.timeout = Duration::from_secs(2);
        let r = drive(pl, move |seq, _| async move {
            match seq {
                1 => std::future::pending().await,
                2 => Err(ErrorKind::Connect),
                3 => Ok(404),
                4 => Ok(503),
                _ => Ok(200),
            }
        })
        .await;
        assert_eq!((r.sent, r.ok, r.errors), (6, 2, 4));
        for k in [
            ErrorKind::Timeout,
            ErrorKind::Connect,
            ErrorKind::Http4xx,
            ErrorKind::Http5xx,
        ] {
            assert_eq!(r.errors_by_kind.get(&k), Some(&1), "{k}");
        }
        // Responses with an error status still have a latency; timeouts and connect errors don't.
        assert_eq!(r.histogram.len(), 4);
        // Only the answers counted as ok have a latency in `ok_histogram`.
        assert_eq!(r.ok_histogram.len(), 2);
        assert_eq!(r.ok_from_send_histogram.len(), 2);
        // Every request but the timed-out one was sent and given an outcome.
        assert_eq!(r.send_delay_histogram.len(), 5);
        assert_eq!(r.statuses.get(&503), Some(&1));
        // The timed-out request ends the run: due at 0, given up at 2 s.
        assert!((r.duration_s - 2.0).abs() < 1e-9);
    }
}
