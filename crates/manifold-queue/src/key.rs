//! Idempotency keys: what makes two tasks "the same work" to an upstream that honours
//! `Idempotency-Key`, and to JetStream's duplicate window for events (`Nats-Msg-Id`). Two tasks
//! with one key are one piece of work there: the second is dropped. So a key must be shared only
//! by retries of one request, never by two requests.
//!
//! A client's `Idempotency-Key` names a retry only within its scope: the same route, from the
//! same principal. The same key sent to another route is another operation, and from another
//! principal it is someone else's request (a client that could guess a victim's key, an order
//! number say, would otherwise get the victim's task dropped by sending first). The principal is
//! the request headers `[queue] idempotency_scope` names: `Authorization` by default; a
//! deployment whose clients sign in with a session cookie, or behind a proxy that writes the
//! user's id into a header, names that header. The scope goes into the key as a digest, so the
//! upstream never sees the credentials.

use crate::task::MAX_ID_LEN;

/// A client's own `Idempotency-Key` and the scope it was sent in.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey<'a> {
    /// The header's value, as the client sent it.
    pub key: &'a str,
    /// The route's name (`[routes.NAME]`).
    pub route: &'a str,
    /// The values of the request headers that say who sent it (`[queue] idempotency_scope`,
    /// by default `Authorization` alone), in the configured order; `None` for one it lacked.
    pub principal: &'a [Option<&'a [u8]>],
}

/// Hex digits of the scope digest: 64 bits, so two scopes colliding is not a practical worry.
const SCOPE_HEX: usize = 16;

/// The idempotency key of a task rendered for `call`: `<client key>:<call>:<scope>` when the
/// client sent a key (stable across the client's retries of the same request, different on
/// another route or for another `Authorization`), else `<task id>:<call>` (new per request).
/// A key that would pass [`MAX_ID_LEN`] becomes the SHA-256 (hex) of that key: still a function
/// of the same inputs alone, so retries keep matching.
pub fn task_key(client: Option<&ClientKey<'_>>, task_id: &str, call: &str) -> String {
    let key = match client {
        Some(c) => format!("{}:{call}:{}", c.key, scope(c)),
        None => format!("{task_id}:{call}"),
    };
    if key.len() <= MAX_ID_LEN {
        return key;
    }
    crate::status::auth_hash(key.as_bytes())
}

/// The call a task key of `task_id` was made for ([`task_key`]'s `call`), for what names the
/// task's delivery (its spans); `None` for a key hashed for its length. Call names are letters,
/// digits, `_` and `-`, so the call is the key's last `:`-part, before the scope when the client
/// gave the key (`<client key>:<call>:<scope>`, the client key holding any `:` it likes).
pub fn call_of<'k>(key: &'k str, task_id: &str) -> Option<&'k str> {
    if let Some(call) = key
        .strip_prefix(task_id)
        .and_then(|rest| rest.strip_prefix(':'))
    {
        return Some(call);
    }
    let (rest, scope) = key.rsplit_once(':')?;
    let scoped = scope.len() == SCOPE_HEX && scope.bytes().all(|b| b.is_ascii_hexdigit());
    match rest.rsplit_once(':') {
        Some((_, call)) if scoped => Some(call),
        // A key made before the scope (`<client key>:<call>`): a replayed dead letter.
        _ => Some(scope),
    }
}

/// The first [`SCOPE_HEX`] hex digits of SHA-256 over the route and the principal's headers,
/// each delimited so no two different scopes feed the same bytes: a header value never holds
/// the bytes 0 or 1 (RFC 9110 §5.5), and the number of headers is the config's. With the
/// default scope (`Authorization` alone) these are the bytes the scope always hashed, so keys
/// made before the scope could name other headers still match their retries.
fn scope(c: &ClientKey<'_>) -> String {
    let values: usize = c
        .principal
        .iter()
        .map(|v| v.map_or(1, |v| v.len() + 1))
        .sum();
    let mut bytes = Vec::with_capacity(c.route.len() + 1 + values);
    bytes.extend_from_slice(c.route.as_bytes());
    bytes.push(0);
    for value in c.principal {
        match value {
            Some(a) => {
                bytes.push(1);
                bytes.extend_from_slice(a);
            }
            None => bytes.push(0),
        }
    }
    let mut hex = crate::status::auth_hash(&bytes);
    hex.truncate(SCOPE_HEX);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, route: &str, auth: Option<&str>) -> String {
        keyed(k, route, &[auth])
    }

    fn keyed(k: &str, route: &str, principal: &[Option<&str>]) -> String {
        let principal: Vec<Option<&[u8]>> =
            principal.iter().map(|v| v.map(str::as_bytes)).collect();
        let c = ClientKey {
            key: k,
            route,
            principal: &principal,
        };
        task_key(Some(&c), "unused", "notify")
    }

    #[test]
    fn the_default_scope_hashes_what_it_always_did() {
        // SHA-256 over `checkout\0\1Bearer a`, as keys were made before the scope could name
        // other headers: a retry across the upgrade is still the same task.
        assert_eq!(
            key("k-1", "checkout", Some("Bearer a")),
            "k-1:notify:6f0a4d6f9dcdf155"
        );
    }

    #[test]
    fn a_scope_of_several_headers_tells_each_apart() {
        let a = keyed("k", "r", &[Some("s=1"), None]);
        assert_eq!(a, keyed("k", "r", &[Some("s=1"), None]));
        let others = [
            keyed("k", "r", &[Some("s=2"), None]),
            keyed("k", "r", &[None, Some("s=1")]),
            keyed("k", "r", &[Some("s=1"), Some("")]),
            keyed("k", "r", &[None, None]),
            keyed("k", "r", &[]),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(&a, o);
            for p in &others[i + 1..] {
                assert_ne!(o, p);
            }
        }
    }

    #[test]
    fn a_client_key_is_stable_within_its_scope_and_distinct_outside_it() {
        let a = key("k-1", "checkout", Some("Bearer a"));
        assert_eq!(a, key("k-1", "checkout", Some("Bearer a")));
        assert!(a.starts_with("k-1:notify:") && a.len() == "k-1:notify:".len() + SCOPE_HEX);
        let others = [
            key("k-1", "refund", Some("Bearer a")),
            key("k-1", "checkout", Some("Bearer b")),
            key("k-1", "checkout", None),
            // An empty header is not the same as none.
            key("k-1", "checkout", Some("")),
            // Delimited: moving bytes between the route and the header changes the scope.
            key("k-1", "checkou", Some("tBearer a")),
            key("k-2", "checkout", Some("Bearer a")),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(&a, o);
            for p in &others[i + 1..] {
                assert_ne!(o, p);
            }
        }
    }

    #[test]
    fn the_call_is_read_back_from_every_form_of_key() {
        let c = ClientKey {
            key: "order:42",
            route: "checkout",
            principal: &[Some(b"Bearer a")],
        };
        assert_eq!(
            call_of(&task_key(Some(&c), "t-1", "notify"), "t-1"),
            Some("notify")
        );
        assert_eq!(
            call_of(&task_key(None, "t-1", "notify"), "t-1"),
            Some("notify")
        );
        // Made before the scope: the last part is the call.
        assert_eq!(call_of("order:42:notify", "t-1"), Some("notify"));
        // Hashed for its length: no call to read.
        let long = ClientKey {
            key: &"k".repeat(96),
            ..c
        };
        let hashed = task_key(Some(&long), "t-1", &"c".repeat(40));
        assert_eq!(call_of(&hashed, "t-1"), None);
    }

    #[test]
    fn without_a_client_key_the_task_id_makes_it() {
        assert_eq!(task_key(None, "t-1", "notify"), "t-1:notify");
    }

    #[test]
    fn an_overlong_key_is_hashed_and_stays_a_function_of_its_inputs() {
        let long = "k".repeat(96);
        let call = "c".repeat(80);
        let c = ClientKey {
            key: &long,
            route: "r",
            principal: &[None],
        };
        let a = task_key(Some(&c), "t-1", &call);
        assert_eq!(a.len(), 64);
        assert_eq!(a, task_key(Some(&c), "t-2", &call));
        assert_ne!(
            a,
            task_key(Some(&ClientKey { route: "s", ..c }), "t-1", &call)
        );
        let fresh = task_key(None, &"t".repeat(32), &"c".repeat(120));
        assert_eq!(fresh.len(), 64);
        // The boundary: exactly MAX_ID_LEN is kept as it is.
        let exact = task_key(None, "t", &"c".repeat(MAX_ID_LEN - 2));
        assert_eq!(exact.len(), MAX_ID_LEN);
        assert!(exact.starts_with("t:"));
    }
}
