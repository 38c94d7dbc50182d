//! A minimal client for memcached's meta protocol (`mg`, `ms`, `md`), one server at a time.
//!
//! Why not a client crate: the maintained async one (`async-memcached`) is one connection per
//! client behind `&mut self`, with no pool, no per-command bound and no notion of several
//! servers, and a command abandoned by a timeout leaves its connection out of step. Here a
//! [`Server`] owns a small pool; a batch of pipelined commands borrows one connection and gives
//! it back only after every reply was read, so a batch cut short by a timeout (the future is
//! dropped) takes its connection with it and the next batch starts on a clean one.
//!
//! Every input from the server is bounded: reply lines by [`MAX_LINE`], values by the
//! configured item size; anything else is a protocol error that drops the connection.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::l2::Health;

/// Longest reply line accepted (meta replies are a status and a few short flags).
const MAX_LINE: usize = 1024;
/// Connections one gateway opens to one server at most; more callers wait (within their timeout).
const MAX_CONNECTIONS: usize = 64;
/// Idle connections kept per server.
const MAX_IDLE: usize = 16;

/// What went wrong talking to a server: the tier treats both as "server down".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// One reply to one meta command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `HD`: success without a value; `cas` when the command asked for it (`c` flag).
    Stored { cas: Option<u64> },
    /// `VA`: a value.
    Value(Bytes),
    /// `EN`: `mg` found nothing.
    Miss,
    /// `NS`: not stored (an `add` whose key exists).
    NotStored,
    /// `EX`: the compare-and-swap value did not match.
    Exists,
    /// `NF`: `md` found nothing.
    NotFound,
    /// `SERVER_ERROR …`: the server answered but refused (e.g. "object too large for cache").
    ServerError(String),
}

/// A batch of pipelined commands, written in one go.
#[derive(Default)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    count: usize,
}

impl Batch {
    /// `mg <key> v`: the value, or a miss.
    pub(crate) fn get(&mut self, key: &str) -> &mut Self {
        self.line(&["mg", key, "v"])
    }

    /// `ms <key> <len> T<ttl> [ME] [c]`: store (or, with `add`, only if absent) for `ttl_secs`
    /// seconds (0: no expiry); `cas` asks for the item's CAS value back.
    pub(crate) fn set(
        &mut self,
        key: &str,
        value: &[u8],
        ttl_secs: u32,
        add: bool,
        cas: bool,
    ) -> &mut Self {
        let len = value.len().to_string();
        let ttl = format!("T{ttl_secs}");
        let mut parts = vec!["ms", key, &len, &ttl];
        if add {
            parts.push("ME");
        }
        if cas {
            parts.push("c");
        }
        self.line(&parts);
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// `md <key> [C<cas>]`: delete (only if the CAS value matches, when given).
    pub(crate) fn delete(&mut self, key: &str, cas: Option<u64>) -> &mut Self {
        match cas {
            Some(c) => self.line(&["md", key, &format!("C{c}")]),
            None => self.line(&["md", key]),
        }
    }

    fn line(&mut self, parts: &[&str]) -> &mut Self {
        self.buf.extend_from_slice(parts.join(" ").as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.count += 1;
        self
    }
}

/// One memcached server: its address, its pool and whether it is up.
pub(crate) struct Server {
    pub(crate) addr: String,
    pub(crate) health: Health,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    /// Largest value accepted in a reply (the configured item size).
    max_value: usize,
}

impl Server {
    pub(crate) fn new(addr: String, health: Health, max_value: usize) -> Self {
        Self {
            addr,
            health,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
            max_value,
        }
    }

    /// Sends `batch` and reads one reply per command. Not bounded in time: the caller wraps it
    /// in its timeout (dropping this future closes the connection it held).
    pub(crate) async fn run(&self, batch: &Batch) -> Result<Vec<Reply>, ConnError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ConnError::Protocol("connection pool closed".into()))?;
        // A pooled connection may have died while idle (server restart): its first read then
        // fails at once, before any reply. Then, and only then, try once on a new connection.
        if let Some(mut conn) = self.take_idle() {
            match conn.exchange(batch, self.max_value).await {
                Ok(replies) => {
                    self.put_idle(conn);
                    return Ok(replies);
                }
                Err(Attempt::Dead(_)) => {}
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let mut conn = Conn::connect(&self.addr).await?;
        match conn.exchange(batch, self.max_value).await {
            Ok(replies) => {
                self.put_idle(conn);
                Ok(replies)
            }
            Err(Attempt::Dead(e) | Attempt::Failed(e)) => Err(e),
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(p) => p.into_inner().pop(),
        }
    }

    fn put_idle(&self, conn: Conn) {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(p) => p.into_inner(),
        };
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// How an exchange failed.
enum Attempt {
    /// The connection was closed before any reply: nothing was processed, a retry is safe.
    Dead(ConnError),
    /// Anything else: the connection is dropped.
    Failed(ConnError),
}

struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Self, ConnError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    async fn exchange(&mut self, batch: &Batch, max_value: usize) -> Result<Vec<Reply>, Attempt> {
        let write = self.stream.get_mut().write_all(&batch.buf).await;
        if let Err(e) = write {
            return Err(Attempt::Dead(e.into()));
        }
        let mut replies = Vec::with_capacity(batch.count);
        for i in 0..batch.count {
            match self.read_reply(max_value).await {
                Ok(r) => replies.push(r),
                Err(ConnError::Io(e))
                    if i == 0
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::UnexpectedEof
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Err(Attempt::Dead(e.into()))
                }
                Err(e) => return Err(Attempt::Failed(e)),
            }
        }
        Ok(replies)
    }

    async fn read_reply(&mut self, max_value: usize) -> Result<Reply, ConnError> {
        let line = self.read_line().await?;
        parse_reply(&line, max_value, |len| self.read_value(len)).await
    }

    /// One line without its `\r\n`, at most [`MAX_LINE`] bytes.
    async fn read_line(&mut self) -> Result<String, ConnError> {
        let mut line = Vec::with_capacity(64);
        loop {
            let buf = self.stream.fill_buf().await?;
            if buf.is_empty() {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let n = chunk.len();
            if line.len() + n > MAX_LINE {
                return Err(ConnError::Protocol(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            line.extend_from_slice(chunk);
            self.stream.consume(n);
            if done {
                break;
            }
        }
        if !line.ends_with(b"\r\n") {
            return Err(ConnError::Protocol("a reply line not ended by CRLF".into()));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| ConnError::Protocol("a reply line not UTF-8".into()))
    }

    async fn read_value(&mut self, len: usize) -> Result<Bytes, ConnError> {
        let mut buf = vec![0u8; len + 2];
        self.stream.read_exact(&mut buf).await?;
        if !buf.ends_with(b"\r\n") {
            return Err(ConnError::Protocol("a value not ended by CRLF".into()));
        }
        buf.truncate(len);
        Ok(Bytes::from(buf))
    }
}

/// Parses one reply line; `value` reads the data block of a `VA` line (after the size check).
async fn parse_reply<F, Fut>(line: &str, max_value: usize, value: F) -> Result<Reply, ConnError>
where
    F: FnOnce(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Bytes, ConnError>>,
{
    let mut parts = line.split(' ');
    let status = parts.next().unwrap_or("");
    Ok(match status {
        "HD" => {
            let cas = parts
                .find_map(|f| f.strip_prefix('c'))
                .map(|c| {
                    c.parse::<u64>()
                        .map_err(|_| ConnError::Protocol(format!("a bad CAS value in {line:?}")))
                })
                .transpose()?;
            Reply::Stored { cas }
        }
        "VA" => {
            let len = parts
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| ConnError::Protocol(format!("a bad value size in {line:?}")))?;
            if len > max_value {
                return Err(ConnError::Protocol(format!(
                    "a value of {len} bytes, over the {max_value}-byte item size"
                )));
            }
            Reply::Value(value(len).await?)
        }
        "EN" => Reply::Miss,
        "NS" => Reply::NotStored,
        "EX" => Reply::Exists,
        "NF" => Reply::NotFound,
        "SERVER_ERROR" => Reply::ServerError(line.trim_start_matches("SERVER_ERROR ").to_owned()),
        _ => {
            let shown: String = line.chars().take(80).collect();
            return Err(ConnError::Protocol(format!("unexpected reply {shown:?}")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(line: &str) -> Result<Reply, ConnError> {
        parse_reply(
            line,
            1024,
            |len| async move { Ok(Bytes::from(vec![b'x'; len])) },
        )
        .await
    }

    #[tokio::test]
    async fn replies_parse_and_hostile_ones_are_refused() {
        assert_eq!(
            parse("HD c42").await.unwrap(),
            Reply::Stored { cas: Some(42) }
        );
        assert_eq!(parse("HD").await.unwrap(), Reply::Stored { cas: None });
        assert_eq!(
            parse("VA 3 t5").await.unwrap(),
            Reply::Value(Bytes::from_static(b"xxx"))
        );
        assert_eq!(parse("EN").await.unwrap(), Reply::Miss);
        assert_eq!(parse("NS").await.unwrap(), Reply::NotStored);
        assert_eq!(
            parse("SERVER_ERROR object too large for cache")
                .await
                .unwrap(),
            Reply::ServerError("object too large for cache".into())
        );
        // A size over the item limit is refused before anything is allocated or read.
        assert!(matches!(
            parse("VA 99999999999999").await,
            Err(ConnError::Protocol(_))
        ));
        assert!(matches!(parse("VA x").await, Err(ConnError::Protocol(_))));
        assert!(matches!(
            parse("HD cxyz").await,
            Err(ConnError::Protocol(_))
        ));
        assert!(matches!(parse("ERROR").await, Err(ConnError::Protocol(_))));
    }

    #[test]
    fn batches_are_meta_commands() {
        let mut b = Batch::default();
        b.get("k")
            .set("k", b"ab", 5, true, true)
            .delete("k", Some(7));
        assert_eq!(
            String::from_utf8(b.buf.clone()).unwrap(),
            "mg k v\r\nms k 2 T5 ME c\r\nab\r\nmd k C7\r\n"
        );
        assert_eq!(b.count, 3);
    }
}
