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
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the admin token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
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

/// Percent-encode a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
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
        stream.take(1 << 20).read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(30), io)
        .await
        .context("timeout: the admin listener did not answer within 30s")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the admin listener's answer is not HTTP")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_and_chunks_joined() {
        assert_eq!(encode("users GET /u?a=1&b"), "users%20GET%20/u%3Fa%3D1%26b");
        assert_eq!(dechunk("5\r\nhello\r\n0\r\n\r\n"), "hello");
    }
}
