//! `manifold bench-peer hyper` and `hyper-per-core`: the bare hyper proxies `manifold bench
//! proxy` runs as the floor of a hyper-based proxy's cost. They must really proxy (else their
//! CPU rows would mean nothing) and must not be pointed off loopback.

use crate::sim::{http, SimProcess};
use std::process::{Child, Command, Stdio};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_bare_hyper_proxy_forwards_every_request_to_its_upstream() {
    forwards_every_request("hyper");
}

#[test]
fn the_per_core_hyper_proxy_forwards_every_request_to_its_upstream() {
    forwards_every_request("hyper-per-core");
}

fn forwards_every_request(peer: &str) {
    let sim = SimProcess::start(&["--shop", "--base-port", "0"]);
    let upstream = sim.addr("order");
    let listen = format!("127.0.0.1:{}", free_port());
    let _floor = Killed(
        Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(["bench-peer", peer, "--listen", &listen, "--upstream"])
            .arg(&upstream)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(&listen).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(up, "the {peer} proxy did not listen on {listen}");
    for total in [3, 4, 5] {
        let (status, order) = http(
            &listen,
            "POST",
            "/orders",
            &format!(r#"{{"total": {total}}}"#),
        );
        assert_eq!(status, 201, "{order}");
        assert_eq!(order["total"], total, "{order}");
    }
    // The upstream counted each of them: they were proxied, not answered by the peer.
    let (_, stats) = http(&upstream, "GET", "/__stats", "");
    assert_eq!(stats["services"]["order"]["calls"], 3, "{stats}");
}

#[test]
fn the_bare_hyper_proxy_refuses_addresses_off_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "bench-peer",
            "hyper",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
}
