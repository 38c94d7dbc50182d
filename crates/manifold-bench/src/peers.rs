//! The peers a user would pick instead of Manifold, run as child processes on free loopback
//! ports: the seed document's Flask aggregators under gunicorn, a Node `Promise.all` aggregator
//! on express, the reverse proxies (nginx, HAProxy, Envoy: see [`proxy_peers`](crate::proxy_peers)),
//! and Manifold itself as a `manifold serve` process when its own CPU must be read from `/proc`.
//!
//! A peer that is not installed (its program is missing, its files are missing, or it exits
//! before it answers) is reported as [`Skipped`] with the reason: never a made-up figure.
//! `bench/peers/install.sh` installs them. A started peer is stopped (SIGTERM, then SIGKILL)
//! when its [`RunningPeer`] is dropped, so an error on the way out still cleans up.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A peer that could not be measured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The peer ("flask", "node", "nginx", …).
    pub peer: String,
    /// Why it did not run (not installed, exited early, did not answer, …).
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: skipped: {}", self.peer, self.reason)
    }
}

/// How to start one peer.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    /// Short name used in reports.
    pub name: String,
    /// The program: a path (checked to exist) or a bare name looked up on `PATH`.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Files the peer needs (its code, its installed modules); a missing one skips it.
    pub requires: Vec<PathBuf>,
    /// The loopback port it was told to listen on (see [`free_port`]).
    pub port: u16,
    /// `GET` this path until any HTTP answer comes back: the peer is then ready.
    pub probe_path: String,
    /// How long to wait for that answer.
    pub ready_timeout: Duration,
    /// A scratch directory the peer uses (its config, logs); removed when the peer stops.
    pub scratch: Option<PathBuf>,
}

/// A started peer. Dropping it stops the process (and, through it, its workers).
#[derive(Debug)]
pub struct RunningPeer {
    name: String,
    port: u16,
    child: Child,
    log: PathBuf,
    scratch: Option<PathBuf>,
}

/// A loopback port that was free a moment ago (bound to port 0, then released for the child).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh, empty scratch directory under the system temp dir.
pub fn scratch_dir(label: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "manifold-bench-{}-{label}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Find `program`: a path must exist; a bare name is searched on `PATH`.
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The first of `candidates` that resolves (see [`resolve_program`]).
pub fn first_program(candidates: &[&Path]) -> Option<PathBuf> {
    candidates.iter().find_map(|c| resolve_program(c))
}

/// Manifold itself as a `manifold serve` child of `exe`, so its CPU, memory and file descriptors
/// are its own (read from `/proc/PID`): `toml` is written to a scratch directory (removed when the
/// peer stops), the listener and admin listener get free loopback ports, and it logs at `warn`.
pub fn manifold_serve(exe: &Path, toml: &str, probe_path: &str) -> Result<PeerCommand, Skipped> {
    let skip = |reason: String| Skipped {
        peer: "manifold".into(),
        reason,
    };
    let dir = scratch_dir("manifold").map_err(|e| skip(format!("scratch dir: {e}")))?;
    let conf = dir.join("manifold.toml");
    std::fs::write(&conf, toml).map_err(|e| skip(format!("writing {}: {e}", conf.display())))?;
    let port = port_or_skip("manifold")?;
    let admin = port_or_skip("manifold")?;
    Ok(PeerCommand {
        name: "manifold".into(),
        program: exe.to_path_buf(),
        args: vec![
            "serve".into(),
            "-c".into(),
            conf.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin".into(),
            format!("127.0.0.1:{admin}"),
        ],
        env: vec![("RUST_LOG".into(), "warn".into())],
        cwd: None,
        requires: Vec::new(),
        port,
        probe_path: probe_path.into(),
        ready_timeout: Duration::from_secs(20),
        scratch: Some(dir),
    })
}

/// Start a peer and wait until it answers. Anything that stops it from answering is a
/// [`Skipped`] with the reason (and the tail of its output, when it printed one).
pub async fn start(cmd: PeerCommand) -> Result<RunningPeer, Skipped> {
    let skip = |reason: String| Skipped {
        peer: cmd.name.clone(),
        reason,
    };
    let Some(program) = resolve_program(&cmd.program) else {
        if let Some(s) = &cmd.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
        return Err(skip(format!(
            "{} not found (run bench/peers/install.sh)",
            cmd.program.display()
        )));
    };
    if let Some(missing) = cmd.requires.iter().find(|p| !p.exists()) {
        if let Some(s) = &cmd.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
        return Err(skip(format!(
            "{} is missing (run bench/peers/install.sh)",
            missing.display()
        )));
    }
    let scratch = match &cmd.scratch {
        Some(s) => s.clone(),
        None => scratch_dir(&cmd.name).map_err(|e| skip(format!("scratch dir: {e}")))?,
    };
    let log = scratch.join("output.log");
    let out = std::fs::File::create(&log).map_err(|e| skip(format!("log file: {e}")))?;
    let err = out
        .try_clone()
        .map_err(|e| skip(format!("log file: {e}")))?;
    let mut command = Command::new(&program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(cwd) = &cmd.cwd {
        command.current_dir(cwd);
    }
    let child = command
        .spawn()
        .map_err(|e| skip(format!("cannot start {}: {e}", program.display())))?;
    let mut peer = RunningPeer {
        name: cmd.name.clone(),
        port: cmd.port,
        child,
        log,
        scratch: Some(scratch),
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://127.0.0.1:{}{}", cmd.port, cmd.probe_path);
    let until = Instant::now() + cmd.ready_timeout;
    loop {
        if let Ok(Some(status)) = peer.child.try_wait() {
            return Err(skip(format!(
                "exited before answering ({status}): {}",
                peer.output_tail()
            )));
        }
        if let Ok(req) = http::Request::get(url.as_str()).body(Empty::new()) {
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(2), client.request(req)).await
            {
                let _ = resp.into_body().collect().await;
                return Ok(peer);
            }
        }
        if Instant::now() >= until {
            return Err(skip(format!(
                "did not answer {url} within {:?}: {}",
                cmd.ready_timeout,
                peer.output_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl RunningPeer {
    /// The peer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process id of the peer's main process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) used so far by the peer and its direct children (gunicorn's
    /// and nginx's workers), from `/proc`. `None` where `/proc` cannot be read.
    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_tree_cpu_seconds(self.pid())
    }

    /// Peak resident memory (VmHWM) of the peer and its direct children, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_tree(self.pid())
            .into_iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| {
                                v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
                            })
                    })
            })
            .sum()
    }

    /// The last lines the peer printed (for error reports).
    pub fn output_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
        if tail.is_empty() {
            "no output".to_owned()
        } else {
            tail
        }
    }
}

impl Drop for RunningPeer {
    fn drop(&mut self) {
        // SIGTERM first: gunicorn's and nginx's masters then stop their workers themselves.
        let pid = self.child.id().to_string();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..150 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let Some(s) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

/// `pid` and the processes whose parent it is.
pub(crate) fn proc_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if child != pid && proc_stat(child).map(|s| s.ppid) == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

struct ProcStat {
    ppid: u32,
    ticks: u64,
}

/// `/proc/PID/stat`: the parent and user + system clock ticks of every thread of the process.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold spaces: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3]; ppid is 4, utime 14, stime 15.
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture it runs on.
const USER_HZ: f64 = 100.0;

/// CPU seconds of `pid` and its direct children.
pub fn proc_tree_cpu_seconds(pid: u32) -> Option<f64> {
    let me = proc_stat(pid)?;
    let children: u64 = proc_tree(pid)
        .into_iter()
        .skip(1)
        .filter_map(proc_stat)
        .map(|s| s.ticks)
        .sum();
    Some((me.ticks + children) as f64 / USER_HZ)
}

/// The on-CPU time of this process's threads of one name, by thread: one component's CPU when
/// it runs on a tokio runtime of its own inside this process (its workers and blocking threads
/// all carry the runtime's thread name).
#[derive(Debug, Clone, Default)]
pub struct ThreadsCpu(HashMap<u32, f64>);

impl ThreadsCpu {
    /// Read every thread of this process named `name` now. The kernel keeps 15 bytes of a
    /// thread's name, so `name` is compared at that length. Nanoseconds from
    /// `/proc/self/task/*/schedstat` where the kernel has it, else `stat`'s 10 ms ticks. `None`
    /// when no such thread is running (or `/proc` cannot be read).
    pub fn read(name: &str) -> Option<ThreadsCpu> {
        let want = name.as_bytes().get(..15).unwrap_or(name.as_bytes());
        Self::read_tasks(Path::new("/proc/self/task"), Some(want))
    }

    /// Read every thread of process `pid` (another process: a `manifold serve` child), with
    /// the same nanosecond resolution. `None` when it has no threads left (or no `/proc`).
    pub fn of_process(pid: u32) -> Option<ThreadsCpu> {
        Self::read_tasks(Path::new(&format!("/proc/{pid}/task")), None)
    }

    fn read_tasks(tasks: &Path, want: Option<&[u8]>) -> Option<ThreadsCpu> {
        let mut by_thread = HashMap::new();
        for e in std::fs::read_dir(tasks).ok()?.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = e.path();
            if let Some(want) = want {
                let Ok(comm) = std::fs::read(dir.join("comm")) else {
                    continue;
                };
                if comm.strip_suffix(b"\n").unwrap_or(&comm) != want {
                    continue;
                }
            }
            let from_schedstat = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9);
            let secs = from_schedstat.or_else(|| {
                let text = std::fs::read_to_string(dir.join("stat")).ok()?;
                Some(parse_stat(&text)?.ticks as f64 / USER_HZ)
            });
            if let Some(s) = secs {
                by_thread.insert(tid, s);
            }
        }
        (!by_thread.is_empty()).then_some(ThreadsCpu(by_thread))
    }

    /// CPU seconds spent since `earlier` by the threads running now. A thread that exited in
    /// between takes its share with it (a tokio blocking thread idle for 10 s, say): the figure
    /// can only be short by that, never negative.
    pub fn seconds_since(&self, earlier: &ThreadsCpu) -> f64 {
        self.0
            .iter()
            .map(|(tid, now)| (now - earlier.0.get(tid).copied().unwrap_or(0.0)).max(0.0))
            .sum()
    }
}

/// Where the peers' code and installs live: `--peers DIR`, else `bench/peers` under the current
/// directory, else the one beside this crate's source (a build from the repository).
pub fn default_dir() -> PathBuf {
    let here = PathBuf::from("bench/peers");
    if here.is_dir() {
        return here.canonicalize().unwrap_or(here);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers");
    if built.is_dir() {
        return built;
    }
    here
}

/// The checkout upstreams, as environment variables for the aggregator peers.
fn upstream_env(up: &crate::aggregator::CheckoutUpstreams) -> Vec<(String, String)> {
    vec![
        ("ORDER_URL".into(), up.order.clone()),
        ("PAYMENT_URL".into(), up.payment.clone()),
        ("INVENTORY_URL".into(), up.inventory.clone()),
        ("SHIPPING_URL".into(), up.shipping.clone()),
    ]
}

pub(crate) fn port_or_skip(name: &str) -> Result<u16, Skipped> {
    free_port().map_err(|e| Skipped {
        peer: name.into(),
        reason: format!("no free port: {e}"),
    })
}

/// The seed document's Flask aggregators (`POST /checkout` sequential, `POST
/// /checkout-threadpool`), served by gunicorn with 4 sync workers.
pub fn flask(
    dir: &Path,
    up: &crate::aggregator::CheckoutUpstreams,
) -> Result<PeerCommand, Skipped> {
    let port = port_or_skip("flask")?;
    let venv = dir.join(".venv/bin/gunicorn");
    let program = first_program(&[&venv, Path::new("gunicorn")]).unwrap_or(venv);
    Ok(PeerCommand {
        name: "flask".into(),
        program,
        args: vec![
            "--workers".into(),
            "4".into(),
            "--worker-class".into(),
            "sync".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--backlog".into(),
            "4096".into(),
            "--log-level".into(),
            "warning".into(),
            "--chdir".into(),
            dir.display().to_string(),
            "flask_app:app".into(),
        ],
        env: upstream_env(up),
        cwd: None,
        requires: vec![dir.join("flask_app.py")],
        port,
        probe_path: "/healthz".into(),
        ready_timeout: Duration::from_secs(20),
        scratch: None,
    })
}

/// The express + `Promise.all` aggregator (`POST /checkout`).
pub fn node(dir: &Path, up: &crate::aggregator::CheckoutUpstreams) -> Result<PeerCommand, Skipped> {
    let port = port_or_skip("node")?;
    let mut env = upstream_env(up);
    env.push(("PORT".into(), port.to_string()));
    env.push(("HOST".into(), "127.0.0.1".into()));
    env.push(("NODE_ENV".into(), "production".into()));
    Ok(PeerCommand {
        name: "node".into(),
        program: first_program(&[Path::new("node"), Path::new("nodejs")])
            .unwrap_or_else(|| PathBuf::from("node")),
        // Relative to `cwd`: `dir` itself may be relative to ours.
        args: vec!["app.js".into()],
        env,
        cwd: Some(dir.join("node")),
        requires: vec![
            dir.join("node/app.js"),
            dir.join("node/node_modules/express/package.json"),
        ],
        port,
        probe_path: "/healthz".into(),
        ready_timeout: Duration::from_secs(20),
        scratch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str, program: &str, args: &[&str]) -> PeerCommand {
        PeerCommand {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            cwd: None,
            requires: Vec::new(),
            port: free_port().unwrap(),
            probe_path: "/".into(),
            ready_timeout: Duration::from_secs(5),
            scratch: None,
        }
    }

    #[test]
    fn thread_cpu_is_read_by_thread_name_and_grows_with_work() {
        // A name over the kernel's 15 bytes: found by its truncated form.
        let name = "cpu-probe-thread-long-name";
        assert!(ThreadsCpu::read(name).is_none(), "no such thread yet");
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                ready.send(()).unwrap();
                // Burn CPU until told to stop (bounded: at most a few seconds).
                let mut x = 0u64;
                for _ in 0..50_000 {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                    if stopped.try_recv().is_ok() {
                        break;
                    }
                }
            })
            .unwrap();
        started.recv().unwrap();
        let first = ThreadsCpu::read(name).expect("the probe thread is found");
        assert_eq!(first.0.len(), 1, "{first:?}");
        let mut spent = 0.0;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            if let Some(now) = ThreadsCpu::read(name) {
                spent = now.seconds_since(&first);
            }
            if spent > 0.0 {
                break;
            }
        }
        stop.send(()).unwrap();
        t.join().unwrap();
        assert!(spent > 0.0, "{first:?} then {spent}");
        // Once the thread is gone it is not found, and an exited thread never counts negative.
        assert!(ThreadsCpu::read(name).is_none());
        assert_eq!(ThreadsCpu::default().seconds_since(&first), 0.0);
    }

    #[tokio::test]
    async fn a_missing_program_is_skipped_with_the_reason() {
        let err = start(command(
            "ghost",
            "/nonexistent/manifold-bench-peer",
            &["--port", "1"],
        ))
        .await
        .unwrap_err();
        assert_eq!(err.peer, "ghost");
        assert!(
            err.reason.contains("/nonexistent/manifold-bench-peer"),
            "{err}"
        );
        assert!(err.reason.contains("not found"), "{err}");
        let err = start(command("ghost2", "no-such-program-manifold-bench", &[]))
            .await
            .unwrap_err();
        assert!(err.reason.contains("not found"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_file_is_skipped_with_its_path() {
        let mut cmd = command("files", "sh", &["-c", "sleep 5"]);
        cmd.requires = vec![PathBuf::from("/nonexistent/app.js")];
        let err = start(cmd).await.unwrap_err();
        assert!(
            err.reason.contains("/nonexistent/app.js is missing"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_exits_early_is_skipped_with_its_output() {
        let cmd = command(
            "quitter",
            "sh",
            &["-c", "echo 'ModuleNotFoundError: flask' >&2; exit 3"],
        );
        let err = start(cmd).await.unwrap_err();
        assert!(err.reason.contains("exited before answering"), "{err}");
        assert!(err.reason.contains("ModuleNotFoundError: flask"), "{err}");
    }

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "4242 (tokio rt (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.ticks, 325);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_has_a_cpu_reading() {
        let cpu = proc_tree_cpu_seconds(std::process::id());
        assert!(cpu.is_some_and(|c| c >= 0.0));
    }
}
