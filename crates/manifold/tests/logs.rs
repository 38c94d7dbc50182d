//! A log reader that stalls must not stall the gateway: `manifold serve` with the access log
//! on, its stdout and stderr pipes never read once it has started. A pipe holds 64 KiB, a few
//! hundred lines; past the writers' queues lines are dropped and counted, and every request is
//! still answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// More than the access log's queue (16,384 lines) and the log's (8,192), plus the pipes.
const REQUESTS: usize = 17_500;

/// One request on `conn` (keep-alive) and its answer's status; a gateway that stops answering
/// fails at the read timeout.
fn get(conn: &mut BufReader<TcpStream>, path: &str) -> u16 {
    // One write (with `TCP_NODELAY`): a request in pieces waits on Nagle and delayed ACKs.
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    conn.get_mut()
        .write_all(request.as_bytes())
        .expect("request sent");
    let mut status = 0;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)
            .expect("an answer before the read timeout");
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a status line: {line:?}"));
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            }
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("the body");
    status
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    BufReader::new(s)
}

#[test]
fn a_stalled_log_reader_drops_counted_lines_and_holds_no_request() {
    let _one = crate::exclusive();
    let dir = std::env::temp_dir().join(format!("manifold-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("m.toml");
    // Every request is a 502 (nothing listens on port 1): one access line on stdout and one
    // `gateway error` line on stderr each.
    std::fs::write(
        &config,
        "[telemetry]\naccess_log = \"json\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\nretry = { attempts = 1 }\n[routes.r]\npath = \"/r\"\nproxy = \"a\"\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "-c", config.to_str().expect("utf-8")])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let addr = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|s| s.split([' ', ')', ',']).next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned()
    };
    let (main, admin) = (addr("listening on "), addr("(admin "));
    // From here on nobody reads stdout or stderr.
    let mut conn = connect(&main);
    for i in 0..REQUESTS {
        let status = get(&mut conn, "/r");
        assert_eq!(status, 502, "request {i}");
    }
    let mut metrics = String::new();
    let mut s = TcpStream::connect(&admin).expect("admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .expect("sent");
    s.read_to_string(&mut metrics).expect("metrics");
    child.kill().ok();
    child.wait().ok();
    // What the stderr pipe held: the gateway's log, without a terminal's colour codes.
    let mut log = Vec::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut log)
        .expect("the log");
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("gateway error"),
        "{}",
        &log[..log.len().min(500)]
    );
    assert!(!log.contains('\u{1b}'), "{}", &log[..log.len().min(500)]);
    std::fs::remove_dir_all(&dir).ok();
    let dropped = |stream: &str| -> u64 {
        let series = format!("manifold_log_lines_dropped_total{{stream=\"{stream}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in\n{metrics}"))
    };
    // Lines past the pipe (~64 KiB) and the queue are dropped; the rest were queued.
    assert!(dropped("access") > 0, "{}", dropped("access"));
    assert!(dropped("log") > 0, "{}", dropped("log"));
    assert!(dropped("access") < REQUESTS as u64);
}
