//! Cache keys. Readable where it is safe (so `purge --prefix users` works and an operator can
//! see what is cached), hashed where it is not (header values such as `authorization` must
//! neither appear in Redis nor collide).

use sha2::{Digest, Sha256};

/// Paths and queries longer than this are cut and the rest hashed, keeping keys bounded.
pub const MAX_READABLE_PATH: usize = 256;

/// The default key of a call: `{upstream} {METHOD} {path_and_query}`, then ` vary={hash}` when
/// the call sends headers listed in `vary`.
///
/// * `upstream`, `method`, `path_and_query` are the executor's rendered strings (the path
///   already percent-encoded, so it contains no spaces).
/// * `vary`: `(header name, value)` pairs; names are compared case-insensitively and the pairs'
///   order does not matter. Their SHA-256 (first 128 bits, hex) goes in the key, never the values.
/// * A path and query longer than [`MAX_READABLE_PATH`] bytes keeps its first bytes and a hash of
///   the whole, so different long URLs never share a key.
///
/// Purging by prefix works on the readable part: `users ` (one upstream), `users GET /users/42`.
pub fn default_key(
    upstream: &str,
    method: &str,
    path_and_query: &str,
    vary: &[(&str, &str)],
) -> String {
    let mut key = String::with_capacity(upstream.len() + method.len() + path_and_query.len() + 48);
    key.push_str(upstream);
    key.push(' ');
    key.push_str(&method.to_ascii_uppercase());
    key.push(' ');
    if path_and_query.len() <= MAX_READABLE_PATH {
        key.push_str(path_and_query);
    } else {
        let mut cut = MAX_READABLE_PATH;
        while !path_and_query.is_char_boundary(cut) {
            cut -= 1;
        }
        key.push_str(&path_and_query[..cut]);
        key.push_str("…#");
        key.push_str(&hex128(
            Sha256::digest(path_and_query.as_bytes()).as_slice(),
        ));
    }
    if !vary.is_empty() {
        let mut pairs: Vec<(String, &str)> = vary
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), *v))
            .collect();
        pairs.sort();
        let mut h = Sha256::new();
        for (name, value) in &pairs {
            // Length prefixes make the encoding unambiguous ("a"+"bc" ≠ "ab"+"c").
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_be_bytes());
            h.update(value.as_bytes());
        }
        key.push_str(" vary=");
        key.push_str(&hex128(h.finalize().as_slice()));
    }
    key
}

/// One part of what a key covers: `None` when the value is absent, so an absent value and an
/// empty one never hash alike.
pub type KeyPart<'a> = Option<&'a [u8]>;

/// Appends ` {label}=` and a SHA-256 (first 128 bits, hex) of `parts` to `key`: the values
/// decide the key but never appear in it (nor in Redis).
///
/// The encoding is unambiguous: each part is a tag byte (`0` absent, `1` present) and, when
/// present, its length (u64, big endian) and bytes. The parts' count and order are the
/// caller's fixed layout (from the compiled config), so two requests share a key exactly when
/// every part is equal, presence included.
pub fn append_hash(key: &mut String, label: &str, parts: &[KeyPart<'_>]) {
    let mut h = Sha256::new();
    h.update((parts.len() as u64).to_be_bytes());
    for part in parts {
        match part {
            None => h.update([0u8]),
            Some(bytes) => {
                h.update([1u8]);
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
        }
    }
    key.push(' ');
    key.push_str(label);
    key.push('=');
    key.push_str(&hex128(h.finalize().as_slice()));
}

fn hex128(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in digest.iter().take(16) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_and_stable() {
        assert_eq!(
            default_key("users", "get", "/users/42?x=1", &[]),
            "users GET /users/42?x=1"
        );
        let a = default_key(
            "users",
            "GET",
            "/u",
            &[("Accept-Language", "en"), ("x-tenant", "7")],
        );
        let b = default_key(
            "users",
            "GET",
            "/u",
            &[("x-tenant", "7"), ("accept-language", "en")],
        );
        assert_eq!(a, b, "header order and case do not matter");
        assert!(a.starts_with("users GET /u vary="));
        assert_eq!(a.len(), "users GET /u vary=".len() + 32);
        // Pinned (computed independently with Python's hashlib) so replicas built at different
        // times agree on keys.
        assert_eq!(a, "users GET /u vary=0712dfd1f7e8c4025d2703b3a8f9ced6");
        assert_eq!(
            default_key("u", "GET", "/", &[("a", "b")]),
            default_key("u", "GET", "/", &[("a", "b")])
        );
    }

    #[test]
    fn values_change_the_key_and_never_appear_in_it() {
        let a = default_key("u", "GET", "/", &[("authorization", "Bearer alice")]);
        let b = default_key("u", "GET", "/", &[("authorization", "Bearer bob")]);
        assert_ne!(a, b);
        assert!(!a.contains("alice"));
        assert_ne!(
            default_key("u", "GET", "/", &[("a", "bc")]),
            default_key("u", "GET", "/", &[("ab", "c")])
        );
    }

    #[test]
    fn hashed_parts_tell_absent_from_empty_and_never_shift() {
        let key = |parts: &[KeyPart<'_>]| {
            let mut k = "u GET /".to_owned();
            append_hash(&mut k, "req", parts);
            k
        };
        assert_ne!(key(&[None]), key(&[Some(b"")]));
        assert_ne!(key(&[Some(b"a"), Some(b"")]), key(&[Some(b""), Some(b"a")]));
        assert_ne!(
            key(&[Some(b"ab"), Some(b"c")]),
            key(&[Some(b"a"), Some(b"bc")])
        );
        assert_ne!(key(&[]), key(&[None]));
        let alice = key(&[Some(b"Bearer alice")]);
        assert_ne!(alice, key(&[Some(b"Bearer bob")]));
        assert!(alice.starts_with("u GET / req=") && !alice.contains("alice"));
        assert_eq!(alice, key(&[Some(b"Bearer alice")]));
    }

    #[test]
    fn long_paths_are_bounded_but_distinct() {
        let long1 = format!("/search?q={}", "é".repeat(400));
        let long2 = format!("{long1}x");
        let k1 = default_key("s", "GET", &long1, &[]);
        let k2 = default_key("s", "GET", &long2, &[]);
        assert_ne!(k1, k2);
        assert!(k1.len() < MAX_READABLE_PATH + 64);
        assert!(k1.starts_with("s GET /search?q=é"));
    }
}
