//! An open-loop HTTP load generator, so Manifold's latency claims are measured the way users feel
//! them.
//!
//! A closed-loop client (send, wait, send the next) slows down when the server stalls, and so
//! never records the requests a real user would have sent during the stall: its percentiles hide
//! exactly the pauses that matter ("coordinated omission"). Here every request has a *scheduled*
//! send time on a fixed-rate clock, the scheduler never waits for answers, and each latency is
//! measured from the scheduled time, so a one-second stall shows as a one-second tail.
//! Latencies go into an HDR histogram (microsecond resolution, 3 significant digits).
//!
//! ```no_run
//! # async fn demo() -> Result<(), manifold_load::LoadError> {
//! use std::time::Duration;
//! let mut spec = manifold_load::LoadSpec::new("http://127.0.0.1:8080/user-profile/{key}", 100.0);
//! spec.duration = Some(Duration::from_secs(5));
//! spec.keys = manifold_load::KeyDist::Zipf { n: 1000, s: 1.0 };
//! let report = manifold_load::run(spec).await?;
//! println!("p50 {:.1} ms, p99 {:.1} ms", report.latency_ms.p50, report.latency_ms.p99);
//! println!("{}", report.to_json());
//! # Ok(()) }
//! ```

mod client;
mod engine;
mod keys;
mod report;
mod template;

use std::time::Duration;

pub use hdrhistogram::Histogram;
pub use http::Method;
pub use keys::KeyDist;
pub use report::{ErrorKind, LoadReport, Percentiles, HISTOGRAM_MAX_US};

/// The fastest schedule accepted: one million requests per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The most requests one run may schedule.
pub const MAX_REQUESTS: u64 = 100_000_000;
/// The most requests in flight at once (`connections`): far above what one machine's ports
/// allow, and far below what tokio's semaphore refuses with a panic.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The longest a request may be waited for (`timeout`): an hour. A longer one could overflow
/// the clock's arithmetic when added to a request's scheduled time.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest schedule accepted, from the first send to the last: a week. A very low rate
/// (`--rate 1e-300`) or a very long duration put the later send times past what the clock's
/// arithmetic holds (a panic), or into next year.
pub const MAX_SCHEDULE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Request bodies above this are refused (the template is checked once, before the run).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Response bodies are read up to this size; a bigger one counts as an `other` error.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// What to send, how fast, and for how long. Build with [`LoadSpec::new`] and set fields.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Target URLs (`http://` only), used in turn: request `i` goes to `urls[i % len]`. Each may
    /// hold `{seq}` (the request's number, from 1) and `{key}` (a key drawn from [`Self::keys`]).
    pub urls: Vec<String>,
    /// HTTP method (default `GET`).
    pub method: http::Method,
    /// Extra request headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Request body; `{seq}` and `{key}` are substituted as in the URL.
    pub body: Option<String>,
    /// Scheduled requests per second.
    pub rate: f64,
    /// Stop scheduling after this long. At least one of `duration` and `requests` must be set;
    /// with both, whichever ends first.
    pub duration: Option<Duration>,
    /// Stop after scheduling this many requests.
    pub requests: Option<u64>,
    /// Most requests in flight at once, and so about that many connections (the pool keeps at
    /// most this many idle). `None`: no cap, every in-flight request may hold its own
    /// connection. Requests waiting for a slot still count their latency from their scheduled
    /// time.
    pub connections: Option<usize>,
    /// Give up on a request this long after its scheduled time (counted as a `timeout` error).
    pub timeout: Duration,
    /// How `{key}` is drawn.
    pub keys: KeyDist,
    /// Seed for the key draws: the same seed sends the same key sequence.
    pub seed: u64,
    /// Draw a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// How the scheduler waits for each send time. tokio's timer (the default, which follows
    /// paused time in tests) sends up to a millisecond late, in bursts on its 1 ms ticks, and
    /// that lag counts into every latency (it is measured from the scheduled time);
    /// [`manifold_timer::Timer::precise`] sends within tens of microseconds of schedule.
    pub timer: manifold_timer::Timer,
}

impl LoadSpec {
    /// One URL at `rate` requests per second; set `duration` or `requests` before running.
    /// Defaults: `GET`, no body, no connection cap, 10 s timeout, uniform keys over 1..=1000,
    /// seed 1, no progress bar.
    pub fn new(url: impl Into<String>, rate: f64) -> Self {
        Self {
            urls: vec![url.into()],
            method: http::Method::GET,
            headers: Vec::new(),
            body: None,
            rate,
            duration: None,
            requests: None,
            connections: None,
            timeout: Duration::from_secs(10),
            keys: KeyDist::Uniform { n: 1000 },
            seed: 1,
            progress: false,
            timer: manifold_timer::Timer::default(),
        }
    }

    /// How many requests the run will schedule (the smaller of the two bounds), once the spec's
    /// numbers are checked: an absurd rate, connection cap or timeout is an input error here,
    /// never a panic or a run that measures nothing.
    pub fn total_requests(&self) -> Result<u64, LoadError> {
        if let Some(c) = self.connections {
            if c == 0 || c > MAX_CONNECTIONS {
                return Err(LoadError::Input(format!(
                    "connections must be 1 to {MAX_CONNECTIONS} (leave it out for no cap), got {c}"
                )));
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(LoadError::Input(format!(
                "timeout must be above 0 and at most {}, got {}",
                humantime::format_duration(MAX_TIMEOUT),
                humantime::format_duration(self.timeout)
            )));
        }
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > MAX_RATE {
            return Err(LoadError::Input(format!(
                "rate must be above 0 and at most {MAX_RATE} per second, got {}",
                self.rate
            )));
        }
        let by_time = self
            .duration
            .map(|d| (d.as_secs_f64() * self.rate).ceil() as u64);
        let n = match (by_time, self.requests) {
            (None, None) => {
                return Err(LoadError::Input(
                    "unbounded run: set a duration or a request count".into(),
                ))
            }
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        if n == 0 {
            return Err(LoadError::Input("the run would send no requests".into()));
        }
        if n > MAX_REQUESTS {
            return Err(LoadError::Input(format!(
                "the run would schedule {n} requests, above the {MAX_REQUESTS} limit"
            )));
        }
        // The last send is due (n - 1) / rate seconds after the first.
        let last = (n - 1) as f64 / self.rate;
        if last > MAX_SCHEDULE.as_secs_f64() {
            return Err(LoadError::Input(format!(
                "{n} requests at {} per second would be sent over {last:.0} s, above the {} \
                 limit: raise the rate or send fewer",
                self.rate,
                humantime::format_duration(MAX_SCHEDULE)
            )));
        }
        Ok(n)
    }
}

/// Parse a duration as the command line writes it: `10s`, `250ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Why a run could not start. (Failures of individual requests are not errors of the run: they
/// are counted in the [`LoadReport`] by [`ErrorKind`].)
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The spec is invalid: a bad URL, header, rate or bound.
    #[error("input error: {0}")]
    Input(String),
}

/// Run the load described by `spec` and report. Must be called inside a tokio runtime; takes
/// about the spec's duration plus the slowest outstanding answer (at most `timeout`).
pub async fn run(spec: LoadSpec) -> Result<LoadReport, LoadError> {
    let total = spec.total_requests()?;
    let sender = client::HttpSender::new(&spec)?;
    let plan = engine::Plan {
        total,
        rate: spec.rate,
        timeout: spec.timeout,
        connections: spec.connections,
        keys: spec.keys.sampler(spec.seed)?,
        progress: spec.progress,
        timer: spec.timer.clone(),
    };
    Ok(engine::drive(plan, move |seq, key| {
        let sender = sender.clone();
        async move { sender.send(seq, key).await }
    })
    .await)
}
