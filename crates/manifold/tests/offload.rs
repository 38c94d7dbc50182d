//! Durable offload with the real binary: tasks accepted while the upstream is down survive a
//! `kill -9` of the gateway and are all delivered, with their idempotency keys, after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start_gateway(config: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "serve",
            "-c",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("manifold listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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

/// A minimal upstream: answers 200 to everything, records (idempotency key, body).
fn upstream(listener: TcpListener, seen: Arc<Mutex<Vec<(String, String)>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut len, mut key) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
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
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    seen.lock()
                        .unwrap()
                        .push((key, String::from_utf8_lossy(&body).into_owned()));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
                }
            });
        }
    });
}

#[test]
fn accepted_tasks_survive_kill_9_and_are_delivered_with_their_keys() {
    let dir = std::env::temp_dir().join(format!("manifold-offload-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Reserve an address for the upstream, which is down while tasks are accepted.
    let up_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("offload.toml");
    std::fs::write(
        &config,
        format!(
            r#"[queue]
backend = "embedded"
path = "{}"
backoff_base = "50ms"
backoff_max = "300ms"

[upstreams.shipping]
endpoints = ["http://{up_addr}"]
timeout = "1s"
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
            dir.join("queue").display()
        ),
    )
    .unwrap();

    let (mut gw, addr) = start_gateway(&config);
    let mut tasks = BTreeMap::new();
    for n in 0..30 {
        let (status, body) = post(addr, "/labels", &format!("{{\"n\": {n}}}"));
        assert_eq!(status, 202, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        tasks.insert(n, v["task"].as_str().unwrap().to_owned());
    }
    // Crash: no chance to flush or drain.
    gw.kill().unwrap();
    gw.wait().unwrap();

    let (mut gw, _) = start_gateway(&config);
    let seen = Arc::new(Mutex::new(Vec::new()));
    upstream(TcpListener::bind(up_addr).unwrap(), Arc::clone(&seen));
    let mut delivered = BTreeSet::new();
    for _ in 0..600 {
        delivered = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_str::<serde_json::Value>(b).ok())
            .filter_map(|v| v["n"].as_u64())
            .collect();
        if delivered.len() == tasks.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.kill().unwrap();
    gw.wait().unwrap();
    assert_eq!(delivered.len(), tasks.len(), "delivered {delivered:?}");
    // Every delivery carried its task's idempotency key (`{task_id}:{call}`).
    let keys: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    for id in tasks.values() {
        assert!(
            keys.contains(&format!("{id}:ship")),
            "no delivery carried the key of task {id}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
