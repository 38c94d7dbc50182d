//! The peers a user would pick instead of Manifold, run as child processes on free loopback
//! ports: the seed document's Flask aggregators under gunicorn, a Node `Promise.all` aggregator
//! on express, the reverse proxies (nginx, HAProxy, Envoy: see [`proxy_peers`](crate::proxy_peers)),
//! and Manifold itself as a `manifold serve` process when its own CPU must be read from `/proc`.
//!
//! A peer that is not installed (its program is missing, its files are missing, or it exits
//! before it answers) is reported as [`Skipped`] with the reason: never a made-up figure.
//! `bench/peers/install.sh` installs them. A started peer is stopped (SIGTERM, then SIGKILL)
//! when its [`RunningPeer`] is dropped, so an error on the way out still cleans up.
//!
//! `process` starts, probes and stops a peer; `cpu` reads its CPU (and this process's threads')
//! from `/proc`; `aggregators` holds the checkout aggregators' commands.

mod aggregators;
mod cpu;
mod process;

pub use aggregators::{flask, node};
pub(crate) use cpu::proc_tree;
pub use cpu::{proc_tree_cpu_seconds, process_cpu_seconds, ThreadsCpu};
pub use process::{start, RunningPeer};

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

pub(crate) fn port_or_skip(name: &str) -> Result<u16, Skipped> {
    free_port().map_err(|e| Skipped {
        peer: name.into(),
        reason: format!("no free port: {e}"),
    })
}
