//! Talking to a running gateway's admin listener, for the commands that manage one
//! (`manifold cache purge`, `manifold queue …`, `manifold reload`): one way to find the
//! listener and one way to send the token.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// One HTTP/1.1 exchange with the admin listener (loopback, tiny JSON answers: a client
/// library would add nothing here).
pub(crate) async fn request(
    target: &Target,
    method: &str,
    path_and_query: &str,
) -> anyhow::Result<(u16, String)> {
    let admin = target.addr;
    // A token with a CR or LF would end the header early: refuse it rather than send it.
    let auth = match &target.token {
        Some(t) if t.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("Authorization: Bearer {t}\r\n")
        }
        Some(_) => {
            anyhow::bail!("the admin token must be visible ASCII (no spaces or line breaks)")
        }
        None => String::new(),
    };
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| {
                format!("cannot reach the gateway's admin listener at {admin}: is it running?")
            })?;
        let req = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES + 1)
            .read_to_end(&mut raw)
            .await
            .with_context(|| format!("reading the answer of the admin listener at {admin}"))?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(30), io)
        .await
        .map_err(|_| {
            anyhow::anyhow!("timeout: the admin listener at {admin} did not answer within 30s")
        })??;
    if raw.len() as u64 > MAX_ANSWER_BYTES {
        anyhow::bail!(
            "the answer of the admin listener at {admin} is larger than {} MiB: is it a \
             Manifold gateway?",
            MAX_ANSWER_BYTES >> 20
        );
    }
    parse_answer(&raw).with_context(|| format!("the answer of the admin listener at {admin}"))
}

/// The largest answer read from the admin listener. Its answers are small JSON documents (a
/// dead-letter listing of 1,000 tasks included); the bound keeps whatever else listens at the
/// address from being read until memory runs out, and a cut answer from being taken for a whole.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// An HTTP/1.1 answer's status and body (de-chunked), from its raw bytes.
fn parse_answer(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => (raw, &raw[raw.len()..]),
    };
    let head = String::from_utf8_lossy(head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| head.starts_with("HTTP/"))
        .context("it is not HTTP")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Join the chunks of a chunked body (on bytes: a chunk may end inside a UTF-8 character). A
/// body that does not follow the encoding, or ends before its last chunk, is an error rather
/// than whatever part of it could be read.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("its chunked body ends before its last chunk")?;
        let size = std::str::from_utf8(&body[..line_end]).unwrap_or("");
        // A chunk size may carry extensions after `;`.
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16)
            .ok()
            .with_context(|| format!("its chunked body has a bad chunk size {size:?}"))?;
        let rest = &body[line_end + 2..];
        if n == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..n)
            .context("its chunked body ends inside a chunk")?;
        out.extend_from_slice(chunk);
        body = rest[n..]
            .strip_prefix(b"\r\n")
            .context("its chunked body has a chunk longer than its size")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_and_chunks_joined() {
        assert_eq!(encode("users GET /u?a=1&b"), "users%20GET%20/u%3Fa%3D1%26b");
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(encode_segment("../cache"), "..%2Fcache");
    }

    /// Found by rev-cli: a chunk that ends inside a UTF-8 character (`é` is two bytes) made
    /// `manifold queue`/`cache purge` panic on a string slice; a body cut short was taken for a
    /// whole one.
    #[test]
    fn chunks_are_joined_on_bytes_and_a_broken_encoding_is_an_error() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\u{e9}\r\n0\r\n\r\n";
        let err = parse_answer(raw.as_bytes()).unwrap_err();
        assert!(
            format!("{err:#}").contains("longer than its size"),
            "{err:#}"
        );
        let split = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\u{c3}\r\n1;x=y\r\n\u{a9}\r\n0\r\n\r\n";
        let split: Vec<u8> = split.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(parse_answer(&split).unwrap().1, "\u{e9}");
        for bad in [
            "ffffffffffffffffffff\r\nab\r\n0\r\n\r\n",
            "zz\r\nab\r\n0\r\n\r\n",
            "5\r\nab",
            "2\r\nab\r\n",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{bad}");
            let err = parse_answer(raw.as_bytes()).unwrap_err();
            assert!(format!("{err:#}").contains("chunk"), "{bad:?}: {err:#}");
        }
        assert!(parse_answer(b"\x00\xff garbage\r\n\r\n").is_err());
        assert!(parse_answer(b"").is_err());
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
