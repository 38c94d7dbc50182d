//! Durable offload with the real binary, for the embedded and the NATS backend: every task the
//! gateway accepted is delivered at least once, with its idempotency key, across a `kill -9`,
//! whether the gateway died while the upstream was down or in the middle of deliveries.
//!
//! Nothing here waits for a guessed time: every wait is for an event observed from the gateway
//! (its first stdout line) or the upstream (a request received or answered), bounded by [`WAIT`].
//! The gateway process, the upstream listener, the queue directory and the NATS streams are all
//! owned by guards, so a failing assertion leaves no `manifold` process or stream behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_queue::{NatsOptions, NatsQueue, QueueConfig, RabbitOptions, RabbitQueue};
// The house clock; outside a runtime (as here) it is the real one.
use tokio::time::Instant;

/// Upper bound of any single wait; far above what a loaded 2-core machine needs, so that only a
/// hang (a real bug) hits it.
pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// Tasks accepted per scenario.
const TASKS: u64 = 30;
/// Mid-delivery scenario: requests the upstream answers before it starts holding them.
pub(crate) const QUICK: usize = 5;
pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";
pub(crate) const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Embedded,
    Nats,
    /// RabbitMQ at :5672; the queue is named like a NATS stream would be (`Store::stream`).
    RabbitMq,
}

/// A name unique to this test run (process, scenario, time), for directories and NATS streams.
pub(crate) fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "mf-offload-{tag}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// One scenario's working directory (config, gateway logs, embedded queue) and queue; the guard
/// removes both, NATS streams included, even when the test fails.
pub(crate) struct Store {
    backend: Backend,
    pub(crate) dir: PathBuf,
    /// NATS: the stream (dead letters in `<stream>_dead`) and its durable consumer.
    pub(crate) stream: String,
}

impl Store {
    pub(crate) fn new(backend: Backend, tag: &str) -> Store {
        let name = unique(tag);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        Store {
            backend,
            dir,
            stream: name,
        }
    }

    /// The backend's `[queue]` keys. Retries are fast and never run out (`max_attempts`), so
    /// a long outage cannot dead-letter a task; a NATS lease held by a killed gateway comes
    /// back after `lease_timeout`, which stays above the upstream timeout.
    pub(crate) fn queue_toml(&self) -> String {
        let backend = match self.backend {
            Backend::Embedded => format!(
                "backend = \"embedded\"\npath = \"{}\"",
                self.dir.join("queue").display()
            ),
            Backend::Nats => format!(
                "backend = \"nats\"\nurl = \"{NATS_URL}\"\nstream = \"{0}\"\nconsumer = \"{0}-dispatcher\"",
                self.stream
            ),
            Backend::RabbitMq => format!(
                "backend = \"rabbitmq\"\nurl = \"{RABBITMQ_URL}\"\nqueue = \"{}\"",
                self.stream
            ),
        };
        format!(
            "[queue]\n{backend}\nbackoff_base = \"50ms\"\nbackoff_max = \"300ms\"\nmax_attempts = 1000\nlease_timeout = \"3s\"\n"
        )
    }

    /// Writes the gateway's config: `POST /labels` queues its body for the `shipping`
    /// upstream at `upstream` and answers 202 with the task id.
    fn write_config(&self, upstream: SocketAddr) -> PathBuf {
        let config = self.dir.join("offload.toml");
        let text = format!(
            r#"{}
[upstreams.shipping]
endpoints = ["http://{upstream}"]
timeout = "2s"
connect_timeout = "200ms"

[routes.labels]
method = "POST"
path = "/labels"
  [[routes.labels.calls]]
  name = "ship"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = "{{request.body}}"
  mode = "async"
  [routes.labels.response]
  status = 202
  body = {{ task = "{{ship.task_id}}" }}
"#,
            self.queue_toml()
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    /// Deletes the test's NATS streams or RabbitMQ queues (connecting creates them first if the
    /// gateway never did).
    fn delete_streams(&self) -> Result<(), String> {
        let cfg = QueueConfig {
            url: Some(NATS_URL.into()),
            stream: self.stream.clone(),
            consumer: format!("{}-dispatcher", self.stream),
            ..QueueConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let destroy = async {
                match self.backend {
                    Backend::RabbitMq => {
                        let cfg = QueueConfig {
                            url: Some(RABBITMQ_URL.into()),
                            queue: self.stream.clone(),
                            ..QueueConfig::default()
                        };
                        let queue = RabbitQueue::connect(RabbitOptions::from_config(&cfg)).await?;
                        queue.destroy().await
                    }
                    _ => {
                        let queue = NatsQueue::connect(NatsOptions::from_config(&cfg)).await?;
                        queue.destroy().await
                    }
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), destroy).await {
                Ok(done) => done.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".into()),
            }
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Backend::Nats | Backend::RabbitMq = self.backend {
            if let Err(e) = self.delete_streams() {
                // No panic in drop (it may run during one): say what is left behind.
                eprintln!(
                    "could not delete {:?} queue {}: {e}",
                    self.backend, self.stream
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `manifold serve`; dropping it kills the process (SIGKILL) and reaps it.
pub(crate) struct Gateway {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
}

impl Gateway {
    /// Starts the binary on free ports and waits (bounded) for its "listening" line. Its
    /// stderr goes to `log`, quoted when it fails to start.
    pub(crate) fn start(config: &Path, log: &Path) -> Gateway {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(["serve", "-c", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut gateway = Gateway {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the first line, then drains stdout so the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let first = rx.recv_timeout(WAIT);
        let line = match first {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "the gateway did not start ({other:?}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        };
        gateway.addr = line
            .strip_prefix("manifold listening on ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        gateway.admin = line
            .split_once("(admin ")
            .and_then(|(_, r)| r.split(')').next())
            .unwrap_or_else(|| panic!("no admin address in: {line}"))
            .parse()
            .unwrap();
        gateway
    }

    /// `kill -9`: no chance to flush, drain or settle anything.
    pub(crate) fn crash(mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "the gateway had already exited: {exited:?}"
        );
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Accepts one task per `n` in `ns` (body `{"n": n}`); returns `n` → task id.
    pub(crate) fn accept(&self, ns: std::ops::Range<u64>) -> BTreeMap<u64, String> {
        ns.map(|n| {
            let (status, body) = post(self.addr, "/labels", &format!("{{\"n\": {n}}}"));
            assert_eq!(status, 202, "task {n} not accepted: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (n, v["task"].as_str().unwrap().to_owned())
        })
        .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// What the upstream saw: `(idempotency key, n)` per request, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) received: Vec<(String, u64)>,
    /// Requests answered 200 (a held request is never answered).
    pub(crate) answered: Vec<(String, u64)>,
    /// Requests still to answer before holding the rest; `None`: answer everything.
    quick: Option<usize>,
    /// Requests being held right now.
    pub(crate) held: usize,
    /// Held requests end unanswered; set when their gateway is gone.
    released: bool,
    /// The test is over: the accept loop and held requests end.
    stopped: bool,
}

/// A recording upstream on loopback: answers 200 to every request, or (`hold_after`) only to
/// the first few, holding the rest unanswered until [`Upstream::release`].
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    shared: Arc<(Mutex<Log>, Condvar)>,
}

/// A free loopback address for an upstream that is not listening yet.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768+ by default): a port
/// from `bind(:0)` comes from that range, and between freeing it here and binding it again in
/// [`Upstream::start`] an outgoing connection of another test could take it as its local port
/// (AddrInUse). Ports below the range are only ever taken by an explicit bind.
pub(crate) fn reserve_addr() -> SocketAddr {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let base = 10_000u16.min(low / 2);
    let span = u32::from(low.saturating_sub(base).max(1));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for i in 0..span {
        let port = base + u16::try_from((seed.wrapping_add(i.wrapping_mul(7919))) % span).unwrap();
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Upstream {
    pub(crate) fn start(addr: SocketAddr, hold_after: Option<usize>) -> Upstream {
        let listener = TcpListener::bind(addr).unwrap();
        let shared = Arc::new((
            Mutex::new(Log {
                quick: hold_after,
                ..Log::default()
            }),
            Condvar::new(),
        ));
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if lock(&accepting).stopped {
                    return;
                }
                let Ok(stream) = stream else { return };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || serve_connection(stream, &shared));
            }
        });
        Upstream { addr, shared }
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.shared)
    }

    /// Blocks until `ready` returns `Some` for the log (checked on every request received or
    /// answered), or fails after [`WAIT`] naming `what`.
    pub(crate) fn wait_until<T>(&self, what: &str, ready: impl FnMut(&Log) -> Option<T>) -> T {
        let (log, found) = wait_log(&self.shared, self.log(), ready);
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {WAIT:?} waiting for {what}: received {}, answered {}, held {}",
                log.received.len(),
                log.answered.len(),
                log.held
            )
        })
    }

    /// Held requests end unanswered (their gateway is dead); every later one is answered.
    pub(crate) fn release(&self) {
        let mut log = self.log();
        log.released = true;
        log.quick = None;
        self.shared.1.notify_all();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.log().stopped = true;
        self.shared.1.notify_all();
        // Wake the accept loop so it sees `stopped` and closes the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn lock(shared: &(Mutex<Log>, Condvar)) -> MutexGuard<'_, Log> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on the log's condvar (notified on every change) until `ready` gives `Some`, for at
/// most [`WAIT`]; `None` when it did not.
fn wait_log<'a, T>(
    shared: &'a (Mutex<Log>, Condvar),
    mut log: MutexGuard<'a, Log>,
    mut ready: impl FnMut(&Log) -> Option<T>,
) -> (MutexGuard<'a, Log>, Option<T>) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = ready(&log) {
            return (log, Some(v));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (log, None);
        }
        log = shared
            .1
            .wait_timeout(log, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// One keep-alive connection from the gateway: read requests, record, answer or hold.
fn serve_connection(stream: TcpStream, shared: &(Mutex<Log>, Condvar)) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while let Some((key, body)) = read_request(&mut reader) {
        let n = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["n"].as_u64())
            .unwrap_or(u64::MAX);
        let mut log = lock(shared);
        log.received.push((key.clone(), n));
        let answer = match &mut log.quick {
            None => true,
            Some(0) => false,
            Some(left) => {
                *left -= 1;
                true
            }
        };
        if !answer {
            log.held += 1;
            shared.1.notify_all();
            let (mut log, _) = wait_log(shared, log, |l| (l.released || l.stopped).then_some(()));
            log.held -= 1;
            return; // Close without an answer.
        }
        drop(log);
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .is_err()
        {
            return;
        }
        let mut log = lock(shared);
        log.answered.push((key, n));
        shared.1.notify_all();
    }
}

/// One HTTP/1.1 request with a `content-length` body: `(idempotency key, body)`.
fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let (mut len, mut key) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "idempotency-key" => key = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((key, body))
}

/// Waits until the upstream has answered 200 to every accepted task at least once, each time
/// with that task's idempotency key (`{task_id}:{call}`); duplicates are allowed.
pub(crate) fn assert_all_delivered(upstream: &Upstream, tasks: &BTreeMap<u64, String>) {
    let expected: BTreeSet<(String, u64)> = tasks
        .iter()
        .map(|(n, id)| (format!("{id}:ship"), *n))
        .collect();
    upstream.wait_until("every accepted task answered with its key", |log| {
        let answered: BTreeSet<&(String, u64)> = log.answered.iter().collect();
        expected.iter().all(|t| answered.contains(t)).then_some(())
    });
}

/// The upstream is down while the gateway accepts tasks and when it is killed; after a restart
/// and the upstream coming up, every task is delivered.
fn upstream_down_then_kill_9(backend: Backend, tag: &str) {
    let store = Store::new(backend, tag);
    let up_addr = reserve_addr();
    let config = store.write_config(up_addr);
    let log = store.dir.join("gateway.log");

    let gateway = Gateway::start(&config, &log);
    let tasks = gateway.accept(0..TASKS);
    gateway.crash();

    let _gateway = Gateway::start(&config, &log);
    let upstream = Upstream::start(up_addr, None);
    assert_all_delivered(&upstream, &tasks);
}

/// The upstream answers the first few deliveries and holds the next ones; the gateway is
/// killed while the upstream holds at least one. After the restart every task is answered —
/// those held at the kill included, so they were delivered again, not lost with their lease.
fn kill_9_mid_delivery(backend: Backend, tag: &str) {
    let store = Store::new(backend, tag);
    let upstream = Upstream::start(reserve_addr(), Some(QUICK));
    let config = store.write_config(upstream.addr);
    let log = store.dir.join("gateway.log");

    let gateway = Gateway::start(&config, &log);
    let tasks = gateway.accept(0..TASKS);
    // Once the quick answers are out, the upstream answers nothing until `release`: what it
    // holds now is unanswered when the gateway dies.
    upstream.wait_until("a delivery held mid-flight", |log| {
        (log.answered.len() >= QUICK && log.held > 0).then_some(())
    });
    gateway.crash();
    upstream.release();

    let _gateway = Gateway::start(&config, &log);
    assert_all_delivered(&upstream, &tasks);
}

#[test]
fn embedded_tasks_accepted_while_upstream_down_survive_kill_9() {
    upstream_down_then_kill_9(Backend::Embedded, "down-embedded");
}

#[test]
fn nats_tasks_accepted_while_upstream_down_survive_kill_9() {
    upstream_down_then_kill_9(Backend::Nats, "down-nats");
}

#[test]
fn embedded_kill_9_mid_delivery_redelivers_unanswered_tasks() {
    kill_9_mid_delivery(Backend::Embedded, "mid-embedded");
}

#[test]
fn nats_kill_9_mid_delivery_redelivers_unanswered_tasks() {
    kill_9_mid_delivery(Backend::Nats, "mid-nats");
}
