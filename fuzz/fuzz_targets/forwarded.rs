//! Fuzz the forwarding headers a proxied request carries (`X-Forwarded-*`, `Forwarded`,
//! `X-Real-IP`, `Host`): whatever a client or a proxy in front sent, never a panic; from an
//! untrusted peer the upstream sees exactly one `X-Forwarded-For` (the peer's own address), one
//! `X-Forwarded-Proto` (`http` or `https`, as the listener), no other forwarding header and no
//! `Host`; from a trusted peer the list ends with the peer's address when it could be extended.
//! The cache key's view of host and proto is what `apply` leaves, every time.
#![no_main]

use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::Authority;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Built from http and std only: included as it is rather than linking the whole gateway.
#[allow(dead_code)]
#[path = "../../crates/manifold-gateway/src/forwarded.rs"]
mod forwarded;

/// Header names the input picks from: the ones `apply` reads or removes, and a bystander.
const NAMES: [&str; 10] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-ssl",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-other",
    "connection",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let peer = if sel & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, sel))
    } else {
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, u16::from(sel)))
    };
    let trusted_peer = sel & 2 != 0;
    let over_tls = sel & 4 != 0;
    let trusted: Vec<ipnet::IpNet> = if trusted_peer {
        vec!["10.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()]
    } else {
        vec!["192.168.0.0/16".parse().unwrap()]
    };
    // Headers: (name index byte, value until the next 0xff byte), in order.
    let mut headers = HeaderMap::new();
    let mut authority = None;
    for (i, chunk) in rest.split(|b| *b == 0xff).enumerate() {
        let Some((&n, value)) = chunk.split_first() else {
            continue;
        };
        if i == 0 && sel & 8 != 0 {
            authority = std::str::from_utf8(value)
                .ok()
                .and_then(|a| a.parse::<Authority>().ok());
            continue;
        }
        let name = HeaderName::from_static(NAMES[usize::from(n) % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let key = forwarded::host_and_proto(&headers, peer, authority.as_ref(), &trusted, over_tls);
    let again = forwarded::host_and_proto(&headers, peer, authority.as_ref(), &trusted, over_tls);
    assert_eq!(key, again, "the cache key's view is deterministic");
    let mut out = headers.clone();
    forwarded::apply(&mut out, peer, authority.as_ref(), &trusted, over_tls);
    assert!(out.get(HOST).is_none(), "Host goes to the upstream client");
    let peer_text = peer.to_canonical().to_string();
    let xfp: Vec<_> = out.get_all("x-forwarded-proto").iter().collect();
    if !trusted_peer {
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff.len(), 1, "{out:?}");
        assert_eq!(xff[0].as_bytes(), peer_text.as_bytes(), "{out:?}");
        assert_eq!(xfp.len(), 1, "{out:?}");
        let want: &[u8] = if over_tls { b"https" } else { b"http" };
        assert_eq!(xfp[0].as_bytes(), want);
        for name in out.keys() {
            let n = name.as_str();
            assert!(
                !(n.starts_with("x-forwarded-") && !matches!(n, "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"))
                    && n != "forwarded"
                    && n != "x-real-ip",
                "{n} from an untrusted peer: {out:?}"
            );
        }
        assert!(out.get_all("x-forwarded-host").iter().count() <= 1);
    } else {
        assert!(!xfp.is_empty(), "{out:?}");
        // The list is rewritten as one value when its entries are text; else left as it came.
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        if xff.len() == 1 {
            if let Ok(text) = xff[0].to_str() {
                if headers.get_all("x-forwarded-for").iter().all(|v| v.to_str().is_ok()) {
                    assert!(text.ends_with(&peer_text), "{text:?} for {peer_text}");
                }
            }
        }
    }
});
