//! What an operator alerts on besides requests: the connections each listener holds against
//! its `max_connections`, and the process's own CPU, memory and file descriptors, under the
//! names every Prometheus process collector uses.

use crate::promtool;
use crate::support::*;
use crate::telemetry::{sample, scrape};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive request on `conn`, its answer read whole (a small JSON answer, one read).
async fn request(conn: &mut TcpStream) {
    conn.write_all(b"GET /item HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn open_connections_and_the_process_are_in_the_metrics() {
    let up = Upstream::start(vec![("GET", "/item", Reply::json(0, json!({"id": 1})))]).await;
    let gw = TestGateway::start_with_server(
        "max_connections = 77\n",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.item]\npath = \"/item\"\nproxy = \"u\"\n",
            up.url()
        ),
    )
    .await;
    let open = "manifold_http_server_open_connections{listener=\"http\"}";
    let accepted = "manifold_http_server_connections_total{listener=\"http\"}";

    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(gw.addr).await.expect("connect");
        request(&mut c).await;
        conns.push(c);
    }
    // Past the park wait, too: a parked connection still holds its place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = scrape(&gw).await;
    assert_eq!(sample(&text, open), Some(5.0), "{text}");
    assert_eq!(sample(&text, accepted), Some(5.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "manifold_http_server_max_connections{listener=\"http\"}"
        ),
        Some(77.0),
        "{text}"
    );
    // The scrape's own connection is the admin listener's.
    assert!(sample(
        &text,
        "manifold_http_server_open_connections{listener=\"admin\"}"
    )
    .is_some_and(|n| n >= 1.0));
    if cfg!(target_os = "linux") {
        // A test process may have used under one clock tick (10 ms) of CPU so far.
        let cpu = sample(&text, "process_cpu_seconds_total ");
        assert!(cpu.is_some_and(|s| s >= 0.0), "{text}");
        for name in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                sample(&text, &format!("{name} ")).is_some_and(|v| v > 0.0),
                "{name}: {text}"
            );
        }
    }
    if promtool::available() {
        promtool::assert_passes(&text);
    }

    // Closed by the client: the gauge comes down, the counter stays.
    conns.truncate(2);
    let mut left = None;
    for _ in 0..100 {
        let text = scrape(&gw).await;
        left = sample(&text, open);
        if left == Some(2.0) {
            assert_eq!(sample(&text, accepted), Some(5.0), "{text}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left,
        Some(2.0),
        "the closed connections still counted as open"
    );

    drop(conns);
    gw.shutdown().await;
}
