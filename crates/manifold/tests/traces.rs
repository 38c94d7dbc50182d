//! `curl …/traces?format=jaeger | manifold analyze -`: the gateway's own traces, read by the
//! real binary from standard input, with the same critical-path shares as the trace store's.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str =
    r#"{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}"#;

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head[9..12].parse().expect("status");
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

fn config(sim: &manifold_sim::RunningSim) -> manifold_config::Config {
    let url = |s: &str| sim.url(s).expect("the shop has it");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
drain_delay = "0s"
[upstreams.order]
endpoints = ["{}"]
[upstreams.payment]
endpoints = ["{}"]
[upstreams.inventory]
endpoints = ["{}"]
[upstreams.shipping]
endpoints = ["{}"]
[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  body = "{{request.body}}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = {{ order_id = "{{order.id}}" }}
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}" }}
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory", "shipping"]
  [routes.checkout.response]
  status = 201
  body = {{ order = "{{confirm}}" }}
"#,
        url("order"),
        url("payment"),
        url("inventory"),
        url("shipping")
    );
    manifold_config::compile("traces.toml".as_ref(), &toml).expect("config")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_export_piped_into_analyze_gives_the_stores_shares() {
    let sim = manifold_sim::Sim::start(manifold_sim::SimConfig::shop())
        .await
        .expect("sim");
    let gw = manifold_gateway::Gateway::bind(config(&sim))
        .await
        .expect("bind");
    let (addr, admin) = (gw.local_addr(), gw.admin_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(gw.run(stop.clone()));
    for _ in 0..4 {
        assert_eq!(http(addr, "POST", "/checkout", BODY).await.0, 201);
    }

    // The store's own shares, from each request's waterfall.
    let (s, list) = http(admin, "GET", "/traces?route=checkout", "").await;
    assert_eq!(s, 200);
    let list: Value = serde_json::from_slice(&list).expect("json");
    assert_eq!(list["count"], 4);
    let mut ours: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for t in list["traces"].as_array().expect("traces") {
        let id = t["trace_id"].as_str().expect("id");
        let (s, d) = http(admin, "GET", &format!("/traces/{id}"), "").await;
        assert_eq!(s, 200);
        let d: Value = serde_json::from_slice(&d).expect("json");
        total += f(&d["duration_ms"]);
        *ours.entry("manifold:POST /checkout".into()).or_default() += f(&d["manifold"]["total_ms"]);
        // The client's body wait, a span of its own in the export (none here: each body came
        // with its head, so nothing waited on it).
        *ours
            .entry("manifold:client request body".into())
            .or_default() += f(&d["client_ms"]);
        for c in d["calls"].as_array().expect("calls") {
            let key = format!(
                "{}:{}",
                c["upstream"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            );
            *ours.entry(key).or_default() += f(&c["critical_ms"]);
        }
    }

    // curl …/traces?format=jaeger | manifold analyze - --json
    let (s, jaeger) = http(admin, "GET", "/traces?format=jaeger", "").await;
    assert_eq!(s, 200);
    stop.cancel();
    task.await.expect("gateway stops");
    sim.shutdown().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["analyze", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run manifold");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&jaeger)
        .expect("pipe");
    let out = child.wait_with_output().expect("manifold analyze");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the --json report");
    assert_eq!(report["traces"], 4);
    assert_eq!(report["warnings"], 0, "{report:#}");
    let theirs: HashMap<String, f64> = report["hotspots"]
        .as_array()
        .expect("hotspots")
        .iter()
        .map(|h| {
            (
                format!(
                    "{}:{}",
                    h["service"].as_str().unwrap(),
                    h["operation"].as_str().unwrap()
                ),
                f(&h["share"]),
            )
        })
        .collect();
    assert_eq!(report["hotspots"][0]["operation"], "shipping", "{report:#}");
    for (k, v) in &ours {
        let share = v / total;
        let other = theirs.get(k).copied().unwrap_or(0.0);
        assert!(
            (share - other).abs() <= 0.01,
            "{k}: store {share:.4}, analyze {other:.4}\n{report:#}"
        );
    }
    for k in theirs.keys() {
        assert!(
            ours.get(k).is_some_and(|v| *v > 0.0),
            "{k} only in analyze: {theirs:?}"
        );
    }
}
