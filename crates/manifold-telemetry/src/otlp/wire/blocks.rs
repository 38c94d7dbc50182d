//! The parts of a span that are the same for every span of one call attempt's shape (call,
//! upstream, method, endpoint, attempt) or of one route's SERVER span, encoded once and copied.
//!
//! Why: a composed call's CLIENT span carries ~12 attributes, of which the span's name,
//! `http.request.method`, `manifold.call`, `manifold.upstream`, `manifold.attempt`,
//! `manifold.attempt.kind`, `server.address` and `server.port` (and `url.full`'s
//! `scheme://host:port`) depend only on the call and the endpoint. Written fresh they took
//! ~3 capacity checks and copies each, ~100 instructions an attribute; copied as three
//! blocks they are three copies.
//!
//! The attributes keep the prost reference's order (a repeated field's elements are ordered),
//! so a span's blocks are copied around the fields that change from span to span (`url.path`
//! between the name and method block and the call block). The span's name is a field of its
//! own and protobuf takes fields in any order: it goes in the first block.
//!
//! Keys are the `Arc`s' pointers (compared, never dereferenced for equality): the gateway
//! shares one `Arc` per call, upstream and endpoint address across requests, so a pointer
//! comparison is the whole lookup. The cache holds clones of the `Arc`s it was keyed by, so a
//! key's allocation cannot be freed and reused by a different string while its entry lives.
//! It is bounded ([`CALL_SLOTS`], [`ROOT_SLOTS`] entries) and 4-way set-associative: a key is
//! looked for in the [`WAYS`] entries of its set, and a new key takes an empty one or, in
//! turn, replaces one (a config reload's new `Arc`s replace the old ones the same way).
//! Direct-mapped (one entry a key), two of a checkout's five calls landed on one slot in one
//! run of six and replaced each other on every checkout (~740 instructions more a miss than
//! a hit: 2,055 instructions a checkout in the lookups instead of 575).

use std::sync::Arc;

use http::Method;

use super::key;
use super::protobuf::{put_str, LEN};
use super::span::decimal;
use super::value::{put_attr, Val};
use crate::span::{AttemptKind, CallInfo, Endpoint, RootInfo, RootKind};

/// Entries for call spans: a route's calls times their endpoints, about.
pub(super) const CALL_SLOTS: usize = 64;
/// Entries for SERVER spans: routes.
pub(super) const ROOT_SLOTS: usize = 16;
/// Entries a key may be in (see the module's doc).
const WAYS: usize = 4;

/// Span { name = 5 }, left out when empty (as prost leaves out a default field).
pub(super) fn put_name(b: &mut Vec<u8>, name: &str) {
    if !name.is_empty() && name.len() < 0x80 {
        b.extend_from_slice(&[5 << 3 | LEN as u8, name.len() as u8]);
        b.extend_from_slice(name.as_bytes());
    } else {
        put_str(b, 5, name);
    }
}

/// A call span's name and `http.request.method` (block 1 of 3).
pub(super) fn put_call_name_method(b: &mut Vec<u8>, i: &CallInfo) {
    put_name(b, &i.call);
    put_attr(b, &key::HTTP_REQUEST_METHOD, &Val::Str(i.method.as_str()));
}

/// `manifold.call` to `http.request.resend_count` (block 2 of 3).
pub(super) fn put_call_attempt(b: &mut Vec<u8>, i: &CallInfo) {
    put_attr(b, &key::CALL, &Val::Str(&i.call));
    put_attr(b, &key::UPSTREAM, &Val::Str(&i.upstream));
    put_attr(b, &key::ATTEMPT, &Val::Int(i64::from(i.attempt)));
    put_attr(b, &key::ATTEMPT_KIND, &Val::Str(i.attempt_kind.as_str()));
    if i.attempt > 1 {
        put_attr(
            b,
            &key::HTTP_REQUEST_RESEND_COUNT,
            &Val::Int(i64::from(i.attempt - 1)),
        );
    }
}

/// `server.address` and `server.port` (block 3 of 3).
pub(super) fn put_endpoint(b: &mut Vec<u8>, e: &Endpoint) {
    put_attr(b, &key::SERVER_ADDRESS, &Val::Str(&e.address));
    put_attr(b, &key::SERVER_PORT, &Val::Int(i64::from(e.port)));
}

/// `url.full` up to the path: `{scheme}://{address}:{port}`, the address in brackets when it
/// is an IPv6 literal.
pub(super) fn put_url_prefix(b: &mut Vec<u8>, e: &Endpoint) {
    b.extend_from_slice(if e.https { b"https://" } else { b"http://" });
    let v6 = e.address.contains(':');
    if v6 {
        b.push(b'[');
    }
    b.extend_from_slice(e.address.as_bytes());
    if v6 {
        b.push(b']');
    }
    b.push(b':');
    let mut digits = [0u8; 5];
    b.extend_from_slice(decimal(e.port, &mut digits));
}

/// A root span's name, `http.request.method` and (when there is one) `http.route`.
pub(super) fn put_root_head(b: &mut Vec<u8>, r: &RootInfo, name: &mut String) {
    name.clear();
    match r.kind {
        // A request no route matched has no `http.route`; its span is named by the method
        // alone (the semantic conventions' rule, so names stay low-cardinality).
        RootKind::Server if r.route.is_empty() => name.push_str(r.method.as_str()),
        RootKind::Server => {
            name.push_str(r.method.as_str());
            name.push(' ');
            name.push_str(&r.route);
        }
        RootKind::Consumer => {
            name.push_str("process ");
            name.push_str(&r.route);
        }
    }
    put_name(b, name);
    put_attr(b, &key::HTTP_REQUEST_METHOD, &Val::Str(r.method.as_str()));
    if !r.route.is_empty() {
        put_attr(b, &key::HTTP_ROUTE, &Val::Str(&r.route));
    }
}

/// The blocks of one call attempt's shape, and what they were encoded from.
struct CallEntry {
    call: Arc<str>,
    upstream: Arc<str>,
    method: Method,
    address: Arc<str>,
    port: u16,
    https: bool,
    attempt: u32,
    kind: AttemptKind,
    /// Blocks 1, 2 and 3 and the `url.full` prefix, back to back.
    bytes: Vec<u8>,
    /// Where blocks 1, 2 and 3 end in `bytes` (the prefix runs to its end).
    ends: [usize; 3],
}

impl CallEntry {
    fn is_for(&self, i: &CallInfo, e: &Endpoint) -> bool {
        Arc::ptr_eq(&self.call, &i.call)
            && Arc::ptr_eq(&self.upstream, &i.upstream)
            && Arc::ptr_eq(&self.address, &e.address)
            && self.port == e.port
            && self.https == e.https
            && self.attempt == i.attempt
            && self.kind == i.attempt_kind
            && self.method == i.method
    }
}

/// A call span's cached blocks (see the module's doc).
pub(super) struct CallBlocks<'a> {
    /// The name and `http.request.method`.
    pub(super) name_method: &'a [u8],
    /// `manifold.call` to `http.request.resend_count`.
    pub(super) attempt: &'a [u8],
    /// `server.address` and `server.port`.
    pub(super) endpoint: &'a [u8],
    /// `url.full` before the path.
    pub(super) url_prefix: &'a [u8],
}

struct RootEntry {
    route: Arc<str>,
    method: Method,
    kind: RootKind,
    bytes: Vec<u8>,
}

/// The cache of blocks (see the module's doc).
pub(super) struct Blocks {
    calls: Vec<Option<CallEntry>>,
    roots: Vec<Option<RootEntry>>,
    name: String,
    /// The way a new key replaces when its set is full, in turn.
    victim: usize,
    /// Call blocks encoded (misses), for the tests.
    #[cfg(test)]
    pub(super) call_misses: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks {
            calls: (0..CALL_SLOTS).map(|_| None).collect(),
            roots: (0..ROOT_SLOTS).map(|_| None).collect(),
            name: String::new(),
            victim: 0,
            #[cfg(test)]
            call_misses: 0,
        }
    }
}

/// The first slot of the set for these `Arc`s' addresses (and a small integer): a
/// multiplicative hash's top bits.
fn set(addresses: [usize; 3], small: u32, slots: usize) -> usize {
    let h = addresses[0] ^ addresses[1].rotate_left(21) ^ addresses[2].rotate_left(42);
    let h = (h as u64 ^ u64::from(small)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize % (slots / WAYS) * WAYS
}

/// The slot in `ways` holding the key `is_for` accepts, or else `None` and the slot a new
/// key takes: an empty one, or the next in turn.
fn find<T>(ways: &[Option<T>], victim: &mut usize, is_for: impl Fn(&T) -> bool) -> (bool, usize) {
    let mut empty = None;
    for (w, entry) in ways.iter().enumerate() {
        match entry {
            Some(e) if is_for(e) => return (true, w),
            Some(_) => {}
            None => empty = empty.or(Some(w)),
        }
    }
    let w = empty.unwrap_or_else(|| {
        *victim = (*victim + 1) % WAYS;
        *victim
    });
    (false, w)
}

fn address(s: &Arc<str>) -> usize {
    Arc::as_ptr(s).cast::<u8>().addr()
}

impl Blocks {
    /// The blocks of a CLIENT span of this call and endpoint, encoded on the first span of its
    /// shape (or after its entry was replaced).
    pub(super) fn call(&mut self, i: &CallInfo, e: &Endpoint) -> CallBlocks<'_> {
        let first = set(
            [address(&i.call), address(&i.upstream), address(&e.address)],
            i.attempt ^ u32::from(e.port) << 8,
            CALL_SLOTS,
        );
        let ways = &mut self.calls[first..first + WAYS];
        let (hit, w) = find(ways, &mut self.victim, |c| c.is_for(i, e));
        let entry = &mut ways[w];
        if !hit {
            #[cfg(test)]
            {
                self.call_misses += 1;
            }
            let mut bytes = entry.take().map(|c| c.bytes).unwrap_or_default();
            bytes.clear();
            put_call_name_method(&mut bytes, i);
            let first = bytes.len();
            put_call_attempt(&mut bytes, i);
            let second = bytes.len();
            put_endpoint(&mut bytes, e);
            let third = bytes.len();
            put_url_prefix(&mut bytes, e);
            *entry = Some(CallEntry {
                call: Arc::clone(&i.call),
                upstream: Arc::clone(&i.upstream),
                method: i.method.clone(),
                address: Arc::clone(&e.address),
                port: e.port,
                https: e.https,
                attempt: i.attempt,
                kind: i.attempt_kind,
                bytes,
                ends: [first, second, third],
            });
        }
        match entry {
            Some(c) => {
                let [first, second, third] = c.ends;
                CallBlocks {
                    name_method: &c.bytes[..first],
                    attempt: &c.bytes[first..second],
                    endpoint: &c.bytes[second..third],
                    url_prefix: &c.bytes[third..],
                }
            }
            // Not reached: a miss filled the entry just above (empty blocks, not a panic).
            None => CallBlocks {
                name_method: &[],
                attempt: &[],
                endpoint: &[],
                url_prefix: &[],
            },
        }
    }

    /// A root span's name, `http.request.method` and `http.route`: for a matched route's
    /// SERVER span (its `Arc` is the route's, shared by its requests; other roots' are made
    /// per request and would only replace entries).
    pub(super) fn root(&mut self, r: &RootInfo) -> &[u8] {
        let first = set([address(&r.route), 0, 0], 0, ROOT_SLOTS);
        let ways = &mut self.roots[first..first + WAYS];
        let (hit, w) = find(ways, &mut self.victim, |e| {
            Arc::ptr_eq(&e.route, &r.route) && e.kind == r.kind && e.method == r.method
        });
        let entry = &mut ways[w];
        if !hit {
            let mut bytes = entry.take().map(|e| e.bytes).unwrap_or_default();
            bytes.clear();
            put_root_head(&mut bytes, r, &mut self.name);
            *entry = Some(RootEntry {
                route: Arc::clone(&r.route),
                method: r.method.clone(),
                kind: r.kind,
                bytes,
            });
        }
        entry.as_ref().map_or(&[], |e| &e.bytes)
    }
}
