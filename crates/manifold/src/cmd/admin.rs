//! Talking to a running gateway's admin listener, for the commands that manage one
//! (`manifold cache purge`, `manifold queue …`, `manifold reload`): one way to find the
//! listener and one way to send the token.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;

/// The environment variable holding the admin token for `manifold cache`, `manifold queue` and
/// `manifold reload`.
pub(crate) const TOKEN_ENV: &str = "MANIFOLD_ADMIN_TOKEN";

/// Which admin listener to ask, and with what token.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    token: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// The admin address: `--admin` if given, else the config file's `server.admin`. The token:
/// `--token-file` (contents trimmed), else `$MANIFOLD_ADMIN_TOKEN`, else the config's own
/// `server.admin_token[_file]` when the config is read for the address. Never a command-line
/// value: arguments are visible to every user of the host in the process list.
pub(crate) fn target(
    admin: Option<SocketAddr>,
    config: &Path,
    token_file: Option<&Path>,
) -> anyhow::Result<Target> {
    let mut token = match token_file {
        Some(p) => Some(read_token_file(p)?),
        None => std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    };
    let addr = match admin {
        Some(a) => a,
        None => {
            let server = manifold_config::load(config)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .server;
            if token.is_none() {
                token = server.admin_token.map(|t| t.expose().to_owned());
            }
            server.admin
        }
    };
    Ok(Target { addr, token })
}

/// The longest token file read. A token is tens of bytes; the bound keeps a wrong path
/// (`/dev/zero`, a log) from being read until memory runs out.
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// The token in `path`, trimmed, read up to [`MAX_TOKEN_FILE_BYTES`].
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut raw))
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    if raw.len() as u64 > MAX_TOKEN_FILE_BYTES {
        anyhow::bail!(
            "the admin token file {} is larger than {} KiB: is it the token?",
            path.display(),
            MAX_TOKEN_FILE_BYTES >> 10
        );
    }
    let text = String::from_utf8(raw).map_err(|_| {
        anyhow::anyhow!("the admin token file {} is not UTF-8 text", path.display())
    })?;
    Ok(text.trim().to_owned())
}

/// At most this much of an answer's body is quoted in an error: a gateway (or whatever listens
/// there) answering a megabyte of text must not fill the terminal.
const QUOTED: usize = 300;

/// `body`, trimmed and cut to [`QUOTED`] characters (with how many more there were).
pub(crate) fn excerpt(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(QUOTED) {
        None => body.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &body[..cut], body.len()),
    }
}

/// Percent-encode a query value.
pub(crate) fn encode(s: &str) -> String {
    encode_keeping(s, b"-._~/:")
}

/// Percent-encode one path segment (a task id): a `/` in it is encoded too, so an id such as
/// `../cache` stays one segment instead of naming another admin path.
pub(crate) fn encode_segment(s: &str) -> String {
    encode_keeping(s, b"-._~")
}

fn encode_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 exchange with the admin listener, on hyper's client connection: the answer is
/// parsed by hyper (status line, headers, chunked or sized body), not by hand, and its body is
/// read up to [`MAX_ANSWER_BYTES`]. An answer that is no HTTP, a body cut short or broken, a
/// listener that never answers (30 s) is an error naming the address.
pub(crate) async fn request(
    target: &Target,
    method: &str,
    path_and_query: &str,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    let admin = target.addr;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, admin.to_string());
    if let Some(t) = &target.token {
        // A token with a CR or LF would end the header early: refuse it rather than send it.
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("the admin token must be visible ASCII (no spaces or line breaks)");
        }
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    // Not quoted in the error: a path too long for a request line is the usual cause, and it
    // could fill the terminal.
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .with_context(|| {
            format!(
                "cannot make a request line of {} bytes for the admin listener",
                path_and_query.len()
            )
        })?;
    let exchange = async {
        let stream = match tokio::net::TcpStream::connect(admin).await {
            Ok(s) => s,
            // Said as it is: no answer to speak of yet.
            Err(e) => {
                return Ok(Err(anyhow::anyhow!(
                    "cannot reach the gateway's admin listener at {admin}: is it running? ({e})"
                )))
            }
        };
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // The connection is driven beside the exchange and dropped with it.
        let conn = tokio::spawn(conn);
        let answer = send.send_request(req).await?;
        let status = answer.status().as_u16();
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    anyhow::anyhow!(
                        "it is larger than {} MiB: is it a Manifold gateway?",
                        MAX_ANSWER_BYTES >> 20
                    )
                } else {
                    anyhow::anyhow!("its body could not be read: {e}")
                }
            })?
            .to_bytes();
        conn.abort();
        anyhow::Ok(Ok((status, String::from_utf8_lossy(&body).into_owned())))
    };
    // Outer: what went wrong with the answer (named so); inner: the listener was not reached.
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!("timeout: the admin listener at {admin} did not answer within 30s")
        })?
        .with_context(|| format!("the answer of the admin listener at {admin}"))?
}

/// The largest answer read from the admin listener. Its answers are small JSON documents (a
/// dead-letter listing of 1,000 tasks included); the bound keeps whatever else listens at the
/// address from being read until memory runs out.
const MAX_ANSWER_BYTES: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(encode("users GET /u?a=1&b"), "users%20GET%20/u%3Fa%3D1%26b");
        assert_eq!(encode_segment("../cache"), "..%2Fcache");
    }

    /// Ask a listener on loopback that answers `raw` to one request and closes.
    async fn ask(raw: Vec<u8>) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await?;
            s.write_all(&raw).await?;
            s.shutdown().await
        });
        let answer = request(&Target { addr, token: None }, "GET", "/queue").await;
        let _ = server.await;
        answer
    }

    /// Found by rev-cli: a chunk that ends inside a UTF-8 character (`é` is two bytes) made
    /// `manifold queue`/`cache purge` panic on a string slice, and a body cut short was taken
    /// for a whole one. hyper reads the answer now; each broken one is an error naming the
    /// listener.
    #[tokio::test]
    async fn broken_answers_are_errors_and_chunks_are_joined_on_bytes() {
        let chunked = |body: &[u8]| {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(body);
            raw
        };
        // `é` split across two chunks.
        let (status, body) = ask(chunked(b"1\r\n\xc3\r\n1;x=y\r\n\xa9\r\n0\r\n\r\n"))
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "\u{e9}"));
        for bad in [
            chunked("1\r\n\u{e9}\r\n0\r\n\r\n".as_bytes()),
            chunked(b"ffffffffffffffffffff\r\nab\r\n0\r\n\r\n"),
            chunked(b"zz\r\nab\r\n0\r\n\r\n"),
            chunked(b"5\r\nab"),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            b"\x00\xff garbage\r\n\r\n".to_vec(),
            Vec::new(),
        ] {
            let err = ask(bad.clone()).await.unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("admin listener at 127.0.0.1:"),
                "{bad:?}: {text}"
            );
        }
        // An answer past the bound is refused, not read until memory runs out.
        let mut big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_ANSWER_BYTES + 1
        )
        .into_bytes();
        big.resize(big.len() + MAX_ANSWER_BYTES + 1, b'x');
        let err = ask(big).await.unwrap_err();
        assert!(format!("{err:#}").contains("larger than 16 MiB"), "{err:#}");
    }

    #[test]
    fn long_bodies_are_quoted_cut() {
        assert_eq!(excerpt("  short \n"), "short");
        let long = "\u{e9}".repeat(1000);
        let cut = excerpt(&long);
        assert!(cut.starts_with(&"\u{e9}".repeat(QUOTED)), "{cut}");
        assert!(cut.ends_with("… (2000 bytes in all)"), "{cut}");
    }

    #[test]
    fn a_token_file_that_never_ends_is_refused() {
        let err = read_token_file(Path::new("/dev/zero")).unwrap_err();
        assert!(format!("{err:#}").contains("larger than 64 KiB"), "{err:#}");
    }
}
