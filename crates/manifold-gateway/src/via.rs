//! `Via` on every request sent upstream, and the loop it lets the gateway see.
//!
//! An upstream that leads back to a gateway — a port typed wrong, a balancer whose pool holds
//! the gateway itself, two deployments that route to each other — turns each request into a new
//! one, and each composed call into as many new requests as its route has calls, until the
//! deadline: a loop amplifies itself into the whole gateway's capacity. `manifold check` warns
//! about an endpoint that is one of the gateway's own listeners; the loops it cannot see (behind
//! a balancer, across deployments) show at run time in `Via` (RFC 9110 §7.6.3), which every
//! request the gateway sends carries: a request that names Manifold there `server.loop_limit`
//! times has been around that often, and is answered 508 Loop Detected before any work.
//!
//! Why a fixed pseudonym and not an instance id: replicas behind one balancer are one gateway
//! to a loop, and a loop through them counts every pass whichever replica it lands on. A
//! deliberate chain of Manifold deployments counts too, which is what `loop_limit` allows for.
//!
//! Why on requests only: `Via` on answers would tell every client on the internet what the
//! gateway is, and loops travel on requests. nginx, HAProxy and Envoy add none by default.
//!
//! Why `1.1` whatever the client spoke: the entry names the protocol of the message it is on,
//! and every request the gateway sends upstream is HTTP/1.1 on its first hop (HTTP/2 is
//! negotiated by the pool, below this header), as Varnish writes `1.1 varnish`.

use http::header::{HeaderMap, HeaderValue, VIA};

/// The pseudonym, as counted in a request's `Via`.
const NAME: &[u8] = b"manifold";

/// The entry this gateway adds.
pub(crate) const ENTRY: HeaderValue = HeaderValue::from_static("1.1 manifold");

/// Add this gateway's entry to a request about to go upstream (after any the client's request
/// carried, which a proxied request keeps: the list is the path the request took).
pub(crate) fn add(headers: &mut HeaderMap) {
    headers.append(VIA, ENTRY);
}

/// Copy the client's `Via` lines (`from`) onto a request the gateway makes for it (`to`): a
/// composed call, a queued task. A client without one (most) costs one lookup.
pub(crate) fn carry(from: &HeaderMap, to: &mut HeaderMap) {
    for value in from.get_all(VIA) {
        to.append(VIA, value.clone());
    }
}

/// How many entries of `headers`' `Via` name Manifold (`received-protocol manifold
/// [comment]`, the name compared ignoring case), reading at most `limit` of them: the caller
/// asks only whether a request has passed `limit` times.
pub(crate) fn passes(headers: &HeaderMap, limit: u32) -> u32 {
    let mut n = 0;
    for value in headers.get_all(VIA) {
        for entry in value.as_bytes().split(|&b| b == b',') {
            let mut words = entry
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            let named = words.next().is_some() && words.next().is_some_and(is_us);
            if named {
                n += 1;
                if n >= limit {
                    return n;
                }
            }
        }
    }
    n
}

fn is_us(received_by: &[u8]) -> bool {
    received_by.eq_ignore_ascii_case(NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(VIA, HeaderValue::from_str(v).expect("a header value"));
        }
        h
    }

    #[test]
    fn entries_naming_manifold_are_counted_across_lines_and_lists() {
        assert_eq!(passes(&HeaderMap::new(), 3), 0);
        assert_eq!(passes(&with(&["1.1 nginx", "HTTP/2 lb (x)"]), 3), 0);
        assert_eq!(passes(&with(&["1.1 manifold"]), 3), 1);
        assert_eq!(
            passes(&with(&["1.1 manifold, 1.0 fred", "2 MANIFOLD (c)"]), 3),
            2
        );
        assert_eq!(
            passes(&with(&["1.1 manifold,1.1 manifold , 1.1\tmanifold"]), 9),
            3
        );
    }

    #[test]
    fn counting_stops_at_the_limit_and_ignores_lookalikes() {
        let many = vec!["1.1 manifold"; 100];
        assert_eq!(passes(&with(&many), 3), 3);
        // The name is the second word of an entry, exactly: not a comment, not a prefix.
        let lookalikes = [
            "manifold",
            "1.1 manifolds",
            "1.1 my-manifold",
            "1.1 lb (manifold)",
            ", ,",
            "",
        ];
        assert_eq!(passes(&with(&lookalikes), 3), 0);
    }

    /// What a client may put in `Via`: bytes beyond ASCII, a 64 KiB entry, a list of nothing but
    /// commas, whitespace only. Counted as nothing, never a panic; the scan is one pass.
    #[test]
    fn hostile_via_values_count_as_nothing() {
        let mut h = HeaderMap::new();
        for v in [
            HeaderValue::from_bytes(b"1.1 manifold\xff").expect("obs-text is a header value"),
            HeaderValue::from_bytes(b"\xc3\xa9 manifold\xc3\xa9").expect("obs-text"),
            HeaderValue::from_str(&"x".repeat(64 << 10)).expect("a long value"),
            HeaderValue::from_str(&",".repeat(64 << 10)).expect("commas"),
            HeaderValue::from_static(" \t "),
        ] {
            h.append(VIA, v);
        }
        assert_eq!(passes(&h, 3), 0);
        // A real entry among them is still found.
        h.append(VIA, HeaderValue::from_static("1.1 manifold"));
        assert_eq!(passes(&h, 3), 1);
    }

    #[test]
    fn the_entry_added_is_counted() {
        let mut h = with(&["1.0 fred"]);
        add(&mut h);
        add(&mut h);
        assert_eq!(passes(&h, 5), 2);
        assert_eq!(h.get_all(VIA).iter().count(), 3);
    }
}
