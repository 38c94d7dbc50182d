//! `manifold sim` as a user runs it: the shop on ephemeral ports, a config file, bad configs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

fn manifold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
}

/// A `manifold sim` child, killed when dropped (also when a test fails).
pub(crate) struct SimProcess {
    child: Child,
    /// The `--json` announcement: `{"services":{"NAME":["http://ADDR"]},"stats":…}`.
    pub(crate) info: Value,
}

impl SimProcess {
    /// Start `manifold sim ARGS --json --for 120s` and wait for its address line.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = manifold()
            .args(["sim", "--json", "--for", "120s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!("no address line from manifold sim ({e}): {line:?}");
            }
        };
        Self { child, info }
    }

    /// `host:port` of a service's first replica.
    pub(crate) fn addr(&self, service: &str) -> String {
        self.info["services"][service][0]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_owned()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, JSON body).
pub(crate) fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn shop_runs_on_ephemeral_ports_and_counts_calls() {
    let sim = SimProcess::start(&["--shop", "--base-port", "0"]);
    let services: Vec<&String> = sim.info["services"].as_object().unwrap().keys().collect();
    assert_eq!(services.len(), 6, "{}", sim.info);

    let (st, order) = http(&sim.addr("order"), "POST", "/orders", r#"{"total": 12}"#);
    assert_eq!(st, 201);
    assert_eq!(order["id"].as_str().unwrap().len(), 36, "{order}");
    assert_eq!(order["total"], 12);
    let id = order["id"].as_str().unwrap();
    let (st, conf) = http(
        &sim.addr("order"),
        "POST",
        &format!("/orders/{id}/confirm"),
        "",
    );
    assert_eq!((st, conf["status"].as_str()), (200, Some("confirmed")));
    let (st, pay) = http(
        &sim.addr("payment"),
        "POST",
        "/payments",
        r#"{"order_id": "x"}"#,
    );
    assert_eq!((st, pay["status"].as_str()), (201, Some("approved")));

    // Stats from any listener, and the announced stats URL.
    let (st, stats) = http(&sim.addr("users"), "GET", "/__stats", "");
    assert_eq!(st, 200);
    assert_eq!(stats["services"]["order"]["calls"], 2);
    assert_eq!(
        stats["services"]["order"]["endpoints"]["POST /orders"]["calls"],
        1
    );
    assert_eq!(stats["services"]["payment"]["calls"], 1);
    assert_eq!(stats["services"]["users"]["calls"], 0);
    assert!(sim.info["stats"].as_str().unwrap().ends_with("/__stats"));
}

#[test]
fn a_config_file_with_replicas_and_faults() {
    let dir = std::env::temp_dir().join(format!("manifold-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sim.toml");
    std::fs::write(
        &file,
        r#"
seed = 9
[services.api]
replicas = [{}, { latency_scale = 2.0 }]
endpoints = [
  { path = "/items/{id}", latency = "1ms", response = { body = { id = "{path.id}", q = "{query.q}", n = "{seq}" } } },
  { method = "POST", path = "/fail", faults = [{ kind = "status", status = 502, rate = 1.0 }] },
]
"#,
    )
    .unwrap();
    let sim = SimProcess::start(&["-c", file.to_str().unwrap()]);
    let replicas = sim.info["services"]["api"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    let second = replicas[1].as_str().unwrap().trim_start_matches("http://");
    let (st, v) = http(second, "GET", "/items/a%20b?q=x", "");
    assert_eq!(st, 200);
    assert_eq!(v, serde_json::json!({"id": "a b", "q": "x", "n": 1}));
    let (st, _) = http(&sim.addr("api"), "POST", "/fail", "");
    assert_eq!(st, 502);
    let (_, stats) = http(&sim.addr("api"), "GET", "/__stats", "");
    assert_eq!(stats["services"]["api"]["replicas"][1]["calls"], 1);
    assert_eq!(
        stats["services"]["api"]["replicas"][1]["latency_scale"],
        2.0
    );
    assert_eq!(
        stats["services"]["api"]["endpoints"]["POST /fail"]["faults"]["status"],
        1
    );
    drop(sim);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_errors_name_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("manifold-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[services.a]\nendpoints = [\n  { path = \"/x\", latency = \"soon\" },\n]\n",
    )
    .unwrap();
    let out = manifold()
        .args(["sim", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config error"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("bad duration"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();

    let out = manifold().args(["sim"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "-c or --shop is required");
}

#[test]
fn help_teaches_with_examples() {
    let out = manifold().args(["sim", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("manifold sim --shop"), "{help}");
    assert!(help.contains("/__stats"), "{help}");
}
