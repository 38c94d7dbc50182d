//! The one place that decides what an operator may see of a secret: URL passwords and the
//! values of credential-bearing headers become `***` in `/config`, dead-letter listings, the
//! `manifold queue` output, error messages and logs.
//!
//! It lives in this crate because it is the lowest one every user reaches (`manifold-config`
//! depends on no crate of ours): the config for `/config` and its error messages, the queue for
//! its broker URLs (`crate::redact` re-exports it), the gateway and the CLI for
//! listings and logs. One rule, so a header or URL shown in one place is never shown in the clear
//! in another.

/// What a redacted value is replaced with.
pub const MASK: &str = "***";

/// `scheme://user:pass@host/…` → `scheme://user:***@host/…`.
///
/// A userinfo without a password (`nats://TOKEN@host`, the NATS token form) is a secret as a
/// whole and becomes `scheme://***@host`. Only the authority is looked at: an `@` in the path,
/// query or fragment is not a userinfo. Text that is not a `scheme://` URL comes back unchanged.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{MASK}"),
        None => MASK.to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme_end], &url[scheme_end + at..])
}

/// Serializes an optional URL through [`url`]: for config fields shown on `/config`.
pub fn ser_opt_url<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(u) => s.serialize_str(&url(u)),
        None => s.serialize_none(),
    }
}

/// Whether a header with this name carries a credential: `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, or any name containing `token`, `secret`,
/// `key` or `password` (case-insensitive; `x-api-key`, `x-auth-token`, `client-secret`).
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "key", "password"]
        .iter()
        .any(|word| name.contains(word))
}

/// The value to show for header `name`: [`MASK`] for a credential, else the value itself.
pub fn header_value<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_header(name) {
        MASK
    } else {
        value
    }
}

/// Headers as `(name, value)` pairs, credential values replaced by [`MASK`].
pub fn headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.clone(), header_value(n, v).to_owned()))
        .collect()
}

/// Redact, in place, every `"headers": [[name, value], …]` list found anywhere in `value`: for
/// a client printing a gateway's JSON answer (dead letters) that may come from an older gateway
/// which did not redact.
pub fn json_headers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "headers" {
                    if let serde_json::Value::Array(pairs) = v {
                        for pair in pairs.iter_mut() {
                            if let serde_json::Value::Array(p) = pair {
                                if let [serde_json::Value::String(n), val] = p.as_mut_slice() {
                                    if is_secret_header(n) {
                                        *val = serde_json::Value::String(MASK.to_owned());
                                    }
                                }
                            }
                        }
                        continue;
                    }
                }
                json_headers(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(json_headers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_tokens_are_masked() {
        assert_eq!(
            url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            url("nats://s3cr3t@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        // An `@` outside the authority is not a userinfo.
        assert_eq!(url("http://h:80/a@b?c=d@e"), "http://h:80/a@b?c=d@e");
        assert_eq!(url("http://u:p@h/x@y"), "http://u:***@h/x@y");
        // A password holding `@` (the last `@` ends the userinfo).
        assert_eq!(url("amqp://u:p@ss@h/"), "amqp://u:***@h/");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn credential_headers_are_masked_by_name() {
        for n in [
            "Authorization",
            "proxy-authorization",
            "COOKIE",
            "set-cookie",
            "x-api-key",
            "X-Auth-Token",
            "client-secret",
            "db-password",
        ] {
            assert!(is_secret_header(n), "{n}");
            assert_eq!(header_value(n, "v"), MASK);
        }
        for n in [
            "content-type",
            "accept",
            "x-request-id",
            "idempotency-key-x",
        ] {
            // `idempotency-key-x` contains `key`: masked too (the rule is by substring).
            assert_eq!(is_secret_header(n), n.contains("key"), "{n}");
        }
        let mut v = serde_json::json!({"dead": [{"headers": [["authorization", "Bearer x"], ["accept", "a"]]}]});
        json_headers(&mut v);
        assert_eq!(
            v["dead"][0]["headers"],
            serde_json::json!([["authorization", "***"], ["accept", "a"]])
        );
    }
}
