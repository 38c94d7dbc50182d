//! The keys of pass-through routes and of the edge they sit behind: `escaped_slashes` (server
//! default and per route), `server.trusted_proxies`, and the shape a proxied path pattern must
//! have. Apart from `compile.rs` so the rules for one concern read in one place.

use crate::error::{Diagnostics, ErrorKind};
use crate::model::EscapedSlashes;
use crate::spanned::Spanned;
use std::net::IpAddr;

/// Parse `escaped_slashes = "reject" | "keep"` written at `key` (for the message).
pub(crate) fn escaped_slashes(
    raw: &Spanned<String>,
    key: &str,
    diag: &mut Diagnostics<'_>,
) -> Option<EscapedSlashes> {
    match raw.get_ref().as_str() {
        "reject" => Some(EscapedSlashes::Reject),
        "keep" => Some(EscapedSlashes::Keep),
        other => {
            diag.push(
                ErrorKind::Value,
                raw.span(),
                format!("`{key}` is {other:?}; write \"reject\" (answer 400) or \"keep\" (forward `%2F` and `%5C` as they are)"),
            );
            None
        }
    }
}

/// Parse `server.trusted_proxies`: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
///
/// A CIDR with bits set past its prefix (`10.1.2.3/8`) is refused rather than silently widened
/// or narrowed: in a list that decides whose `X-Forwarded-For` is believed, a typo must not
/// trust a whole network.
pub(crate) fn trusted_proxies(
    raw: &Spanned<Vec<Spanned<String>>>,
    diag: &mut Diagnostics<'_>,
) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for entry in raw.get_ref() {
        match parse_net(entry.get_ref().trim()) {
            Ok(net) => nets.push(net),
            Err(msg) => diag.push(
                ErrorKind::Value,
                entry.span(),
                format!("`server.trusted_proxies`: {:?} {msg}", entry.get_ref()),
            ),
        }
    }
    nets
}

fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    if !text.contains('/') {
        return text
            .parse::<IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| "is not an IP address or CIDR; write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"fd00::/8\"".into());
    }
    let net: ipnet::IpNet = text.parse().map_err(|_| {
        "is not a CIDR; write ADDRESS/PREFIX, e.g. \"10.0.0.0/8\" or \"fd00::/8\"".to_owned()
    })?;
    if net.addr() != net.network() {
        return Err(format!(
            "has bits set past its /{} prefix; did you mean \"{}\"?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

/// A proxied request's path is normalized (dot segments removed, slashes merged) and must still
/// match its route's pattern: a pattern with an empty, `.` or `..` segment could never match a
/// normalized path, so every request would get 400. Say so at load instead.
pub(crate) fn check_proxy_pattern(path: &str) -> Result<(), String> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = inner.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if (seg.is_empty() && !last) || *seg == "." || *seg == ".." {
            return Err(format!(
                "has a segment {seg:?}: a proxy route's path is matched after normalization (no empty, `.` or `..` segments)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_or_say_why_not() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_net("fd00::/8").unwrap().to_string(), "fd00::/8");
        let e = parse_net("10.1.2.3/8").unwrap_err();
        assert!(e.contains("did you mean \"10.0.0.0/8\""), "{e}");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
        assert!(parse_net("").is_err());
    }

    #[test]
    fn proxy_patterns_must_survive_normalization() {
        assert!(check_proxy_pattern("/public/{*rest}").is_ok());
        assert!(check_proxy_pattern("/p/").is_ok());
        assert!(check_proxy_pattern("/").is_ok());
        assert!(check_proxy_pattern("/a//b").is_err());
        assert!(check_proxy_pattern("/a/../b").is_err());
        assert!(check_proxy_pattern("/a/./{x}").is_err());
    }
}
