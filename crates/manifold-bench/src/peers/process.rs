//! Starting a peer, waiting until it answers, and stopping it (with its workers) when dropped.

use super::cpu::{proc_tree, proc_tree_cpu_seconds};
use super::{resolve_program, scratch_dir, PeerCommand, Skipped};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A started peer. Dropping it stops the process (and, through it, its workers).
#[derive(Debug)]
pub struct RunningPeer {
    name: String,
    port: u16,
    child: Child,
    log: PathBuf,
    scratch: Option<PathBuf>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::free_port;

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
}
