//! Hot reload as an operator does it, on the real binary: ten reloads (SIGHUP and `manifold
//! reload` in turn, one of them with a broken file) while open-loop load runs at 1,000
//! requests/s, and not one request may fail; and `serve --watch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn manifold() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_manifold"));
    c.env_remove("MANIFOLD_ADMIN_TOKEN");
    c
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("manifold-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `manifold serve` child, killed when dropped (also when a test fails).
struct Serve {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Serve {
    fn start(config: &Path, extra: &[&str], log: &Path) -> Serve {
        let mut child = manifold()
            .args(["serve", "-c", config.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = |prefix: &str, end: char| -> SocketAddr {
            line.split(prefix)
                .nth(1)
                .and_then(|s| s.split(end).next())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        };
        let (listen, admin) = (addr("listening on ", ' '), addr("(admin ", ')'));
        Serve {
            child,
            addr: listen,
            admin,
        }
    }

    fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a fresh connection; status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Wait until `GET /r` answers plan version `v` (a SIGHUP answers nobody: this is how the test
/// sees it applied).
fn wait_for_version(addr: SocketAddr, v: u32) {
    // About 20 s: 1,000 looks 20 ms apart (counted, not timed: tests keep off the wall clock).
    let mut last = (0, String::new());
    for _ in 0..1000 {
        let (status, body) = get(addr, "/r");
        if status == 200 && body.contains(&format!("\"v\":\"{v}\"")) {
            return;
        }
        last = (status, body);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("version {v} not served after 1,000 looks; last answer {last:?}");
}

/// The gateway's config, version `v`. Every version changes the plans (the answer carries `v`)
/// and the settings of upstream `b` (its stack is replaced under load); `a` never changes (its
/// stack and connections carry over); odd versions add a route, even ones drop it.
fn config(v: u32, a: &str, b: &str) -> String {
    let extra = if v % 2 == 1 {
        "[routes.extra]\npath = \"/extra\"\nproxy = \"a\"\n"
    } else {
        ""
    };
    format!(
        r#"[server]
# A fixed limit: the adaptive one is tested elsewhere, and a debug build on a busy machine
# must not shed load here, where only a reload could fail a request.
concurrency = 4096
drain_delay = "0s"

[upstreams.a]
endpoints = ["{a}"]

[upstreams.b]
endpoints = ["{b}"]
timeout = "{timeout}ms"

[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "b"
  upstream = "b"
  path = "/b"
  [routes.r.response]
  body = {{ v = "{v}", b = "{{b}}" }}

[routes.k]
path = "/k"
  [[routes.k.calls]]
  name = "a"
  upstream = "a"
  path = "/a"
  [routes.k.response]
  body = {{ v = "{v}", a = "{{a}}" }}
{extra}"#,
        timeout = 2000 + v
    )
}

/// The simulated upstreams `a` and `b` (1 ms each), in a process of their own: this test
/// process already runs the load generator.
fn sim(tag: &str) -> crate::sim::SimProcess {
    let dir = temp_dir(&format!("sim-{tag}"));
    let file = dir.join("sim.toml");
    std::fs::write(
        &file,
        r#"
[services.a]
  [[services.a.endpoints]]
  path = "/a"
  latency = "1ms"
  response = { body = { from = "a" } }
[services.b]
  [[services.b.endpoints]]
  path = "/b"
  latency = "1ms"
  response = { body = { from = "b" } }
"#,
    )
    .unwrap();
    crate::sim::SimProcess::start(&["-c", file.to_str().unwrap()])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn ten_reloads_at_1000_requests_per_second_fail_no_request() {
    let _exclusive = crate::exclusive();
    let sim = sim("load");
    let (a, b) = (
        format!("http://{}", sim.addr("a")),
        format!("http://{}", sim.addr("b")),
    );
    let rt = runtime();
    let dir = temp_dir("load");
    let file = dir.join("manifold.toml");
    let log = dir.join("serve.log");
    std::fs::write(&file, config(0, &a, &b)).unwrap();
    let gw = Serve::start(&file, &[], &log);
    wait_for_version(gw.addr, 0);

    // Twelve seconds at 1,000/s, half to the route whose upstream changes every reload, half
    // to the one whose upstream never does. Every failure counts: any status of 400 or more,
    // any timeout, refused or reset connection.
    let mut spec = manifold_load::LoadSpec::new(format!("http://{}/r", gw.addr), 1000.0);
    spec.urls.push(format!("http://{}/k", gw.addr));
    spec.duration = Some(Duration::from_secs(12));
    spec.connections = Some(128);
    // A request a reload dropped fails at once (reset, 5xx); a timeout would only mean this
    // debug build on a shared machine fell behind the schedule, so the bound is generous. A
    // request hung by a reload would still be caught by it.
    spec.timeout = Duration::from_secs(60);
    let load = rt.spawn(manifold_load::run(spec));

    let admin = gw.admin.to_string();
    let mut refused = 0;
    for v in 1..=10u32 {
        std::thread::sleep(Duration::from_millis(900));
        if v == 5 {
            // The broken one: an unknown upstream, line 18 of the file.
            std::fs::write(
                &file,
                config(v, &a, &b).replace("upstream = \"b\"", "upstream = \"nope\""),
            )
            .unwrap();
            let out = manifold()
                .args(["reload", "--admin", &admin])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "{}:18:14: route `r`, call `b`: unknown upstream `nope`",
                    file.display()
                )),
                "{stderr}"
            );
            refused += 1;
            // Still the previous plans.
            assert!(get(gw.addr, "/r").1.contains("\"v\":\"4\""));
            continue;
        }
        std::fs::write(&file, config(v, &a, &b)).unwrap();
        if v % 2 == 0 {
            gw.hup();
        } else {
            let out = manifold()
                .args(["reload", "--admin", &admin])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("upstreams kept (same pools): a"),
                "{stdout}"
            );
            assert!(
                stdout.contains("upstreams changed (new pools): b"),
                "{stdout}"
            );
        }
        wait_for_version(gw.addr, v);
    }
    let report = rt.block_on(load).unwrap().unwrap();
    eprintln!(
        "load during the reloads: {} (statuses {:?}, errors {:?})",
        report.to_json(),
        report.statuses,
        report.errors_by_kind
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(refused, 1);
    assert_eq!(report.sent, 12_000, "{report:?}");
    assert_eq!(
        report.errors, 0,
        "failures by kind {:?}, statuses {:?}",
        report.errors_by_kind, report.statuses
    );
    assert!(
        report.statuses.keys().all(|s| (200..300).contains(s)),
        "{:?}",
        report.statuses
    );
    assert_eq!(report.ok, report.sent);
    // Nine applied (five by SIGHUP), one refused, each in the log.
    assert_eq!(log_text.matches("config reloaded").count(), 9, "{log_text}");
    assert_eq!(
        log_text.matches("SIGHUP: reloading").count(),
        5,
        "{log_text}"
    );
    assert_eq!(
        log_text.matches("config reload failed").count(),
        1,
        "{log_text}"
    );
    drop(gw);
    drop(sim);
}

#[test]
fn serve_watch_reloads_when_the_file_changes() {
    let sim = sim("watch");
    let (a, b) = (
        format!("http://{}", sim.addr("a")),
        format!("http://{}", sim.addr("b")),
    );
    let dir = temp_dir("watch");
    let file = dir.join("manifold.toml");
    let log = dir.join("serve.log");
    std::fs::write(&file, config(0, &a, &b)).unwrap();
    let gw = Serve::start(&file, &["--watch"], &log);
    wait_for_version(gw.addr, 0);
    std::fs::write(&file, config(1, &a, &b)).unwrap();
    wait_for_version(gw.addr, 1);
    // A restart-only change is applied in part and said so in the log.
    std::fs::write(
        &file,
        config(2, &a, &b).replace(
            "concurrency = 4096",
            "concurrency = 4096\nmax_connections = 10",
        ),
    )
    .unwrap();
    wait_for_version(gw.addr, 2);
    let wanted = "`server.max_connections` changed to 10: needs a restart";
    let seen = (0..500).any(|_| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.contains(wanted) || {
            std::thread::sleep(Duration::from_millis(20));
            false
        }
    });
    assert!(
        seen,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(gw);
    drop(sim);
}

#[test]
fn manifold_reload_sends_the_admin_token() {
    const TOKEN: &str = "reload-cli-token-0123456789";
    let dir = temp_dir("token");
    let file = dir.join("manifold.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nadmin_token = \"{TOKEN}\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
        ),
    )
    .unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let gw = Serve::start(&file, &[], &dir.join("serve.log"));
    let admin = gw.admin.to_string();
    let reload = || {
        let mut c = manifold();
        c.args(["reload", "--admin", &admin]);
        c
    };
    let out = reload().output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("answered 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = reload()
        .env("MANIFOLD_ADMIN_TOKEN", "not-the-token-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = reload()
        .env("MANIFOLD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded the gateway"));
    let out = reload()
        .arg("--token-file")
        .arg(&token_file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["reloaded"], true);
    assert_eq!(answer["upstreams"]["kept"], serde_json::json!(["a"]));
}

#[test]
fn reload_help_has_an_example() {
    let out = manifold().args(["reload", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("manifold reload -c manifold.toml"), "{help}");
    assert!(help.contains("file:line:col"), "{help}");
}
