//! The benchmark's own minimal HTTP/1.1 client: it opens keep-alive connections and reads whole
//! answers with nothing but a socket, so that the client holds as little as possible per
//! connection and can hold tens of thousands of them.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections opened at once while building up the idle set.
const OPENING_AT_ONCE: usize = 256;
/// How long one connection may take to open and answer its first request.
const FIRST_ANSWER: Duration = Duration::from_secs(20);
/// The largest answer read (the simulator's are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// Open `n` connections to `addr`, each answered once (`GET /item`), kept open. Returns the
/// open ones and how many failed.
pub(super) async fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, u64) {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0u64;
    let mut opening = JoinSet::new();
    let mut next = 0usize;
    while next < n || !opening.is_empty() {
        while next < n && opening.len() < OPENING_AT_ONCE {
            next += 1;
            opening.spawn(tokio::time::timeout(FIRST_ANSWER, open_one(addr)));
        }
        match opening.join_next().await {
            Some(Ok(Ok(Ok(c)))) => conns.push(c),
            Some(_) => failed += 1,
            None => break,
        }
    }
    (conns, failed)
}

async fn open_one(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(b"GET /item HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    match read_answer(&mut c).await? {
        200 => Ok(c),
        other => Err(std::io::Error::other(format!("status {other}"))),
    }
}

/// Connections the other side has closed (a read would return end of file now).
pub(super) fn count_closed(conns: &[TcpStream]) -> u64 {
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|c| matches!(c.try_read(&mut buf), Ok(0)))
        .count() as u64
}

/// Read one HTTP/1.1 answer (Content-Length or chunked body) and return its status.
pub(super) async fn read_answer(c: &mut TcpStream) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed before a complete answer"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(bad("answer too large"));
        }
        if let Some(status) = complete(&buf).map_err(bad)? {
            return Ok(status);
        }
    }
}

/// `Some(status)` when `buf` holds one whole answer; `None` when more is to come.
pub(super) fn complete(buf: &[u8]) -> Result<Option<u16>, &'static str> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "answer head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no status line")?;
    let body = &buf[head_end + 4..];
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|_| "bad length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let done = if chunked {
        body.ends_with(b"0\r\n\r\n")
    } else {
        body.len() >= length.unwrap_or(0)
    };
    Ok(done.then_some(status))
}
