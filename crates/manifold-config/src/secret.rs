//! Secrets in the config: the admin token, and how `/config` shows URLs and header values.
//! The redaction rule itself is [`crate::redact`] (one rule for every crate).

use crate::error::{Diagnostics, ErrorKind};
use crate::model::ServerSettings;
use crate::spanned::Spanned;
use crate::template::StrTemplate;
use serde::{Serialize, Serializer};
use std::fmt;
use std::path::Path;

/// Shortest admin token accepted, in bytes: a short token can be guessed over the network.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A secret value (the admin token). `Debug` and `Serialize` print `***`, so logging or
/// serving the config (`/config`, `manifold check --json`) never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(crate::redact::MASK)
    }
}

/// Check an admin token (already trimmed): long enough to resist guessing, and only visible
/// ASCII, so it can travel in an `Authorization` header as written.
pub(crate) fn check_admin_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "is {} bytes; an admin token needs at least {MIN_ADMIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII only (no spaces or control characters)".into());
    }
    Ok(())
}

/// `server.admin_token` or `server.admin_token_file` (a path relative to the config file's
/// directory, its contents trimmed), checked; errors are reported at the key.
pub(crate) fn admin_token(
    token: Option<&Spanned<String>>,
    token_file: Option<&Spanned<String>>,
    config_file: &Path,
    diag: &mut Diagnostics<'_>,
) -> Option<Secret> {
    let (value, span, what) = match (token, token_file) {
        (None, None) => return None,
        (Some(_), Some(f)) => {
            diag.push(
                ErrorKind::Value,
                f.span(),
                "`server.admin_token` and `server.admin_token_file` are both set; keep one",
            );
            return None;
        }
        (Some(t), None) => (
            t.get_ref().trim().to_owned(),
            t.span(),
            "`server.admin_token`".to_owned(),
        ),
        (None, Some(f)) => {
            let path = config_file
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join(f.get_ref());
            match read_token_file(&path) {
                Ok(text) => (
                    text.trim().to_owned(),
                    f.span(),
                    format!(
                        "the token in `server.admin_token_file` ({})",
                        path.display()
                    ),
                ),
                Err(e) => {
                    diag.push(
                        ErrorKind::Value,
                        f.span(),
                        format!(
                            "`server.admin_token_file`: cannot read {}: {e}",
                            path.display()
                        ),
                    );
                    return None;
                }
            }
        }
    };
    match check_admin_token(&value) {
        Ok(()) => Some(Secret(value)),
        Err(msg) => {
            diag.push(ErrorKind::Value, span, format!("{what} {msg}"));
            None
        }
    }
}

/// The most bytes `server.admin_token_file` may hold (a token is tens of bytes).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The token file's text. Regular files only, and at most [`MAX_TOKEN_FILE_BYTES`]: a FIFO
/// would block `manifold check`, a start or a reload forever, and `/dev/zero` (or any huge
/// file) would be read until memory ran out; the TLS files are read the same way.
fn read_token_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "more than {MAX_TOKEN_FILE_BYTES} bytes (is it the token file?)"
        )));
    }
    Ok(text)
}

/// Fail closed: an admin listener reachable beyond this host must require a token. The one
/// rule used by `manifold check` (for `server.admin`) and by the gateway at bind (which also
/// sees `manifold serve --admin`).
pub fn check_admin_exposure(server: &ServerSettings) -> Result<(), String> {
    let ip = server.admin.ip().to_canonical();
    if ip.is_loopback() || server.admin_token.is_some() {
        return Ok(());
    }
    Err(format!(
        "the admin listener {} is not a loopback address and no `server.admin_token` (or \
         `server.admin_token_file`) is set: anyone who can reach it could purge the cache and \
         replay or delete dead letters. Set a token, or bind admin to 127.0.0.1",
        server.admin
    ))
}

/// `/config` shows credential-bearing header values (by name) as `***`.
pub(crate) fn ser_headers<S: Serializer>(
    headers: &[(String, StrTemplate)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let masked = StrTemplate::literal(crate::redact::MASK);
    s.collect_seq(headers.iter().map(|(name, value)| {
        if crate::redact::is_secret_header(name) {
            (name, &masked)
        } else {
            (name, value)
        }
    }))
}

/// `/config` shows a URL without its password.
pub(crate) fn ser_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::redact::url(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn the_token_never_prints() {
        let t = Secret::new("s3cr3t-s3cr3t-s3cr3t");
        assert_eq!(format!("{t:?}"), "***");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"***\"");
    }

    #[test]
    fn a_non_loopback_admin_needs_a_token() {
        let mut s = ServerSettings::default();
        assert!(check_admin_exposure(&s).is_ok());
        for addr in ["0.0.0.0:9901", "[::]:9901", "10.0.0.1:9901"] {
            s.admin = addr.parse::<SocketAddr>().unwrap();
            let e = check_admin_exposure(&s).unwrap_err();
            assert!(e.contains("server.admin_token"), "{e}");
        }
        s.admin = "[::ffff:127.0.0.1]:9901".parse().unwrap();
        assert!(check_admin_exposure(&s).is_ok());
        s.admin = "0.0.0.0:9901".parse().unwrap();
        s.admin_token = Some(Secret::new("0123456789abcdef"));
        assert!(check_admin_exposure(&s).is_ok());
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(check_admin_token("short").is_err());
        assert!(check_admin_token("0123456789 abcdef").is_err());
        assert!(check_admin_token("0123456789abcdef").is_ok());
    }
}
