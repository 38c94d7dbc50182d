//! `X-Forwarded-For`, `-Proto` and `-Host` on a proxied request.
//!
//! These headers are only as true as whoever wrote them. An upstream that reads the client's
//! address from `X-Forwarded-For` (rate limits, audit logs, allow-lists) must get the address
//! Manifold saw, not one the client typed. So, as nginx's `set_real_ip_from` and Envoy's
//! `xff_num_trusted_hops` do, the headers a peer sent are believed only when that peer is in
//! `server.trusted_proxies` (a load balancer in front, say): then its list is extended with its
//! own address and its `-Proto` / `-Host` kept. From any other peer they are replaced: the list is
//! the peer's address alone, `-Proto` is `https` for a request that came over the TLS listener
//! and `http` otherwise, `-Host` the
//! request's `Host` (HTTP/1.1; the URI's authority for a request in absolute form) or
//! `:authority` (HTTP/2). `Forwarded` (RFC 7239) and
//! `X-Real-IP`, which upstreams read the same way, are dropped from untrusted peers, and so is
//! every other `X-Forwarded-*` (`-Port`, `-Prefix`, `-Ssl`, `-Scheme`, …: see [`is_forwarding`]).

use http::header::{HeaderName, HeaderValue, FORWARDED, HOST};
use http::uri::Authority;
use http::HeaderMap;
use std::net::IpAddr;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether `peer` is one of `server.trusted_proxies`: the one rule for believing what a peer says
/// about others (its forwarding headers; its `traceparent` sampled flag with
/// `parent_sampled = "trusted_proxies"`). An IPv4 client on a dual-stack listener shows up as
/// `::ffff:a.b.c.d` and is judged as the IPv4 address.
pub(crate) fn is_trusted(peer: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// Rewrite `headers` (the client's, `Host` still among them) for the upstream: `Host` is removed
/// (the upstream client sets the upstream's), the forwarding headers set as described above.
/// `authority` is the request URI's (HTTP/2's `:authority`); `over_tls` whether the request
/// came over the TLS listener.
pub(crate) fn apply(
    headers: &mut HeaderMap,
    peer: IpAddr,
    authority: Option<&Authority>,
    trusted: &[ipnet::IpNet],
    over_tls: bool,
) {
    let proto = HeaderValue::from_static(if over_tls { "https" } else { "http" });
    // An IPv4 client on a dual-stack listener shows up as `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    // The request URI's authority wins over `Host` where there is one: HTTP/2's `:authority`,
    // or an HTTP/1.1 request in absolute form, whose `Host` a server must ignore (RFC 9112
    // §3.2.2). `Host` is removed either way (the upstream client sets the upstream's).
    let from_host = headers.remove(HOST);
    let host = match authority {
        Some(a) => HeaderValue::from_str(a.as_str()).ok().or(from_host),
        None => from_host,
    };
    if is_trusted(peer, trusted) {
        append_forwarded_for(headers, peer);
        if !headers.contains_key(&XFP) {
            headers.insert(XFP, proto);
        }
        if let (false, Some(host)) = (headers.contains_key(&XFH), host) {
            headers.insert(XFH, host);
        }
    } else {
        // Looked for before removing: a client rarely sends any, and removing an absent name
        // still hashes it.
        if headers.keys().any(is_forwarding) {
            let names: Vec<HeaderName> = headers
                .keys()
                .filter(|k| is_forwarding(k))
                .cloned()
                .collect();
            for name in names {
                headers.remove(name);
            }
        }
        // No list is left: the peer's address is the whole of it.
        insert_forwarded_for(headers, peer);
        headers.insert(XFP, proto);
        if let Some(host) = host {
            headers.insert(XFH, host);
        }
    }
}

/// What [`apply`] tells the upstream of the request's host and scheme: every value of
/// `X-Forwarded-Host` and then of `X-Forwarded-Proto`, each list counted and each value
/// length-prefixed. Part of a cached proxy route's key (`cache_key::route_key`): an upstream
/// that builds links or redirects from them answers differently for each, and keyed without
/// them one client's `Host: evil.example` would be stored and served to every other client.
/// Made by running [`apply`] itself on a copy of the few headers it reads, so the key can never
/// disagree with what is forwarded.
pub(crate) fn host_and_proto(
    headers: &HeaderMap,
    peer: IpAddr,
    authority: Option<&Authority>,
    trusted: &[ipnet::IpNet],
    over_tls: bool,
) -> Vec<u8> {
    let mut view = HeaderMap::with_capacity(8);
    for name in [HOST, XFH, XFP] {
        for v in headers.get_all(&name) {
            view.append(name.clone(), v.clone());
        }
    }
    apply(&mut view, peer, authority, trusted, over_tls);
    let mut out = Vec::with_capacity(64);
    for name in [XFH, XFP] {
        let values = view.get_all(&name);
        out.extend_from_slice(&(values.iter().count() as u64).to_be_bytes());
        for v in values {
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
    out
}

/// Whether `name` is a header only a proxy in front may write: `Forwarded`, `X-Real-IP`, or any
/// `X-Forwarded-*`. Not just the three set here: upstreams read the others the same way
/// (`X-Forwarded-Ssl: on` and `X-Forwarded-Scheme` make Rack see https, `X-Forwarded-Port` and
/// `-Prefix` shape the URLs Spring builds), so an untrusted client's would claim https on the
/// plaintext listener, or another host's port and path, behind the proto this module sets.
fn is_forwarding(name: &HeaderName) -> bool {
    name == FORWARDED || name == X_REAL_IP || name.as_str().starts_with("x-forwarded-")
}

/// Append `ip` to `X-Forwarded-For`, folding the entries already there (one header or several)
/// into one list in order.
///
/// Why the first branch: a client's request usually has no list yet (and an untrusted peer's
/// was just removed), and then the value is the address alone, written once into its header
/// value; the general fold below costs three more allocations and a join for every request.
fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    if !headers.contains_key(&XFF) {
        insert_forwarded_for(headers, ip);
        return;
    }
    let ip = ip.to_string();
    let mut list: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    list.push(&ip);
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(XFF, v);
    }
}

/// Set `X-Forwarded-For` to `ip` alone (there is no list to extend).
fn insert_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    // The longest IPv6 text is 39 bytes (45 with an embedded IPv4).
    let mut buf = [0u8; 64];
    let len = ip_text(ip, &mut buf);
    if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
        headers.insert(XFF, v);
    }
}

/// `ip` as text into `buf`, its length returned: `Ipv4Addr`'s `Display` written out.
///
/// Why not `write!`: `Display` goes through the formatting machinery for each of the four
/// octets (callgrind: 1,900 instructions per proxied request, more than the rest of
/// [`apply`]); the digits by hand cost a tenth. IPv6, rare behind a gateway, keeps `Display`.
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut rest = &mut buf[..];
            // 64 bytes always hold it; a failed write leaves an empty value, refused below.
            if write!(rest, "{ip}").is_err() {
                return 0;
            }
            64 - rest.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        h.append(XFF, HeaderValue::from_static("10.0.0.1"));
        h.append(XFF, HeaderValue::from_static("10.0.0.2, 10.0.0.3"));
        h.insert(XFP, HeaderValue::from_static("https"));
        h.insert(XFH, HeaderValue::from_static("evil.example"));
        h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        h.insert(X_REAL_IP, HeaderValue::from_static("1.2.3.4"));
        h
    }

    #[test]
    fn a_trusted_peer_extends_the_list_and_keeps_its_headers() {
        let nets = ["10.9.0.0/16".parse().unwrap()];
        let mut h = client_headers();
        apply(
            &mut h,
            "::ffff:10.9.1.2".parse().unwrap(),
            None,
            &nets,
            false,
        );
        let all: Vec<_> = h.get_all(XFF).iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 10.9.1.2"]);
        assert_eq!(h[XFP], "https");
        assert_eq!(h[XFH], "evil.example");
        assert!(!h.contains_key(HOST));
        assert!(h.contains_key(FORWARDED));
    }

    #[test]
    fn an_untrusted_peer_gets_its_headers_replaced() {
        let nets = ["10.9.0.0/16".parse().unwrap()];
        let mut h = client_headers();
        apply(&mut h, "192.0.2.7".parse().unwrap(), None, &nets, false);
        assert_eq!(h[XFF], "192.0.2.7");
        assert_eq!(h.get_all(XFF).iter().count(), 1);
        assert_eq!(h[XFP], "http");
        assert_eq!(h[XFH], "shop.example");
        assert!(!h.contains_key(FORWARDED) && !h.contains_key(X_REAL_IP));
    }

    /// The cache key's view is what `apply` forwards, whoever sent what: the host (from `Host`,
    /// else the URI's authority, or a trusted proxy's own `X-Forwarded-Host`) and the scheme.
    #[test]
    fn host_and_proto_is_what_apply_forwards() {
        let nets = ["10.9.0.0/16".parse().unwrap()];
        let authority: Authority = "h2.example:8443".parse().unwrap();
        let forwarded = |h: &HeaderMap, peer: &str, auth: Option<&Authority>, tls: bool| {
            let peer: IpAddr = peer.parse().unwrap();
            let mut applied = h.clone();
            apply(&mut applied, peer, auth, &nets, tls);
            let list = |name: &HeaderName| -> Vec<Vec<u8>> {
                applied
                    .get_all(name)
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect()
            };
            (
                (list(&XFH), list(&XFP)),
                host_and_proto(h, peer, auth, &nets, tls),
            )
        };
        let mut seen = std::collections::HashSet::new();
        for host in [None, Some("shop.example"), Some("evil.example")] {
            for xfh in [None, Some("front.example")] {
                for xfp in [None, Some("https")] {
                    let mut h = HeaderMap::new();
                    if let Some(v) = host {
                        h.insert(HOST, HeaderValue::from_static(v));
                    }
                    if let Some(v) = xfh {
                        h.insert(XFH, HeaderValue::from_static(v));
                    }
                    if let Some(v) = xfp {
                        h.insert(XFP, HeaderValue::from_static(v));
                    }
                    for peer in ["192.0.2.7", "10.9.1.2"] {
                        for auth in [None, Some(&authority)] {
                            for tls in [false, true] {
                                let (sent, view) = forwarded(&h, peer, auth, tls);
                                // Equal views for equal forwarded headers, different otherwise.
                                for (other_sent, other_view) in &seen {
                                    assert_eq!(sent == *other_sent, view == *other_view);
                                }
                                seen.insert((sent, view));
                            }
                        }
                    }
                }
            }
        }
        // Five hosts (none, shop, evil, the authority, the trusted proxy's), two schemes.
        assert_eq!(seen.len(), 10, "{seen:?}");
    }

    /// The other `X-Forwarded-*` headers upstreams read: an untrusted client's would claim
    /// https (`-Ssl`, `-Scheme`) or another port and base path, beside the truth set here.
    #[test]
    fn an_untrusted_peer_loses_every_x_forwarded_header() {
        let nets = ["10.9.0.0/16".parse().unwrap()];
        let others = [
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
        ];
        let spoofed = || {
            let mut h = client_headers();
            for name in others {
                h.insert(name, HeaderValue::from_static("on"));
            }
            h.insert("x-kept", HeaderValue::from_static("yes"));
            h
        };
        let mut h = spoofed();
        apply(&mut h, "192.0.2.7".parse().unwrap(), None, &nets, false);
        for name in others {
            assert!(!h.contains_key(name), "{name} reached the upstream");
        }
        assert_eq!(h[XFP], "http");
        assert_eq!(h["x-kept"], "yes");
        // A trusted proxy's are its own to send.
        let mut h = spoofed();
        apply(&mut h, "10.9.1.2".parse().unwrap(), None, &nets, false);
        for name in others {
            assert_eq!(h[name], "on", "{name}");
        }
    }

    #[test]
    fn a_request_without_a_list_gets_the_peer_alone_whatever_its_address() {
        for peer in [
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:203.0.113.9",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static("shop.example"));
            let ip: IpAddr = peer.parse().unwrap();
            apply(&mut h, ip, None, &[], false);
            let all: Vec<_> = h.get_all(XFF).iter().collect();
            assert_eq!(all, [ip.to_canonical().to_string().as_str()], "{peer}");
        }
    }

    /// An absolute-form request (`GET http://shop.example/p`) names its host in the URI, and
    /// its `Host` is ignored (RFC 9112 §3.2.2): the URI's is forwarded.
    #[test]
    fn the_uri_authority_wins_over_host() {
        let mut h = client_headers();
        h.insert(HOST, HeaderValue::from_static("evil.example"));
        let auth: Authority = "shop.example".parse().unwrap();
        apply(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            Some(&auth),
            &[],
            false,
        );
        assert_eq!(h[XFH], "shop.example");
        assert!(!h.contains_key(HOST));
    }

    #[test]
    fn without_host_the_authority_names_the_host() {
        let mut h = client_headers();
        h.remove(HOST);
        let auth: Authority = "h2.example:8080".parse().unwrap();
        apply(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            Some(&auth),
            &[],
            false,
        );
        assert_eq!(h[XFH], "h2.example:8080");
        // No host at all: the client's own `X-Forwarded-Host` is not left behind.
        let mut h = client_headers();
        h.remove(HOST);
        apply(&mut h, "192.0.2.7".parse().unwrap(), None, &[], false);
        assert!(!h.contains_key(XFH));
    }

    #[test]
    fn over_tls_the_proto_is_https() {
        // An untrusted peer on the TLS listener: its own claim is replaced by the truth.
        let mut h = client_headers();
        h.insert(XFP, HeaderValue::from_static("http"));
        apply(&mut h, "192.0.2.7".parse().unwrap(), None, &[], true);
        assert_eq!(h[XFP], "https");
        // An untrusted peer on the plaintext listener cannot claim https.
        let mut h = client_headers();
        apply(&mut h, "192.0.2.7".parse().unwrap(), None, &[], false);
        assert_eq!(h[XFP], "http");
        // A trusted proxy that said nothing: the listener's scheme.
        let nets = ["10.9.0.0/16".parse().unwrap()];
        let mut h = client_headers();
        h.remove(XFP);
        apply(&mut h, "10.9.1.2".parse().unwrap(), None, &nets, true);
        assert_eq!(h[XFP], "https");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut v4: Vec<IpAddr> = (0..=255u8)
            .map(|o| IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)]))
            .collect();
        v4.extend(
            [
                "0.0.0.0",
                "9.10.99.100",
                "255.255.255.255",
                "::1",
                "2001:db8::ff00:42:8329",
            ]
            .map(|s| s.parse::<IpAddr>().unwrap()),
        );
        for ip in v4 {
            let mut buf = [0u8; 64];
            let len = ip_text(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
    }
}
