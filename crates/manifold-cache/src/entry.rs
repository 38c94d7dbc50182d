//! The cached value: an upstream answer reduced to what a later reply needs (status, a few
//! headers, the body), its wire form in Redis, and the in-memory entry with its deadlines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::policy::CacheControl;

/// The headers a call's answer keeps when its headers reach no client (a composed call's answer
/// is read for its status and body): those that steer the policy (`cache-control`, `age`), let
/// it be revalidated (`etag`, `last-modified`), describe the body (type, encoding, language),
/// or are the answer itself (`location`: a redirect kept by negative caching means nothing
/// without it). See [`CachedResponse::from_parts`].
pub const POLICY_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::AGE,
    header::LOCATION,
];

/// Whether a stored entry keeps header `name`. Not the headers of one exchange: hop-by-hop
/// headers, the framing and date the server writes afresh, cookies (an answer that sets one is
/// never stored at all), and the ids and timings of the request that happened to fill the
/// entry. Everything else is stored and replayed — an entry served without the upstream's
/// `access-control-*`, `content-security-policy`, `strict-transport-security`, `vary` or a
/// route's own response headers would answer differently from the upstream, and a browser
/// would block or trust it differently on a hit than on a miss.
pub fn stored_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "date"
            | "set-cookie"
            | "set-cookie2"
            | "x-request-id"
            | "traceparent"
            | "tracestate"
            | "server-timing"
            | "manifold-cache"
            | "manifold-partial"
    )
}

/// One upstream answer as the cache keeps it. Cheap to clone (the body is reference counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    /// The upstream's status.
    pub status: StatusCode,
    /// The headers, in upstream order: those [`stored_header`] keeps in a stored entry; an
    /// answer a fetcher hands over may carry more, which the cache drops when it stores the
    /// answer and keeps when it does not (the answer then goes out as the upstream sent it).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
    /// When the cache stored it (wall clock, shared across replicas through Redis); `None` for
    /// an answer straight from the fetcher that was not stored. A reply's `Age` is
    /// `now - stored_at`.
    pub stored_at: Option<SystemTime>,
    /// The upstream answer set a cookie (`Set-Cookie`, itself never kept): it was meant for one
    /// client, so it is never stored (see [`CachePolicy::lifetimes`](crate::CachePolicy::lifetimes)).
    pub sets_cookie: bool,
}

impl CachedResponse {
    /// An answer with no headers.
    pub fn new(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            stored_at: None,
            sets_cookie: false,
        }
    }

    /// Builds an answer whose headers reach no client from an upstream response's parts,
    /// keeping only [`POLICY_HEADERS`] (a composed call's answer: the gateway reads its status
    /// and body, so copying its other headers would only cost memory). A fetcher whose answer
    /// goes out as it is (a cached route) hands over every header instead.
    pub fn from_parts(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let kept = headers
            .iter()
            .filter(|(name, _)| POLICY_HEADERS.contains(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Self {
            status,
            headers: kept,
            body,
            stored_at: None,
            sets_cookie: headers.contains_key(header::SET_COOKIE),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The first value of a header.
    pub fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The merged `Cache-Control` directives of every `cache-control` header.
    pub fn cache_control(&self) -> CacheControl {
        let mut cc = CacheControl::default();
        for (name, value) in &self.headers {
            if name == header::CACHE_CONTROL {
                if let Ok(v) = value.to_str() {
                    cc.merge(v);
                }
            }
        }
        cc
    }

    /// The upstream's `Age` header (seconds it already spent in caches before us).
    pub fn age(&self) -> Option<Duration> {
        let v = self.header(&header::AGE)?.to_str().ok()?;
        v.trim().parse::<u64>().ok().map(Duration::from_secs)
    }

    /// How long ago the cache stored it (zero for a fresh fetch or a clock that went back).
    pub fn age_in_cache(&self) -> Duration {
        self.stored_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    }

    /// Bytes this answer occupies, roughly: what the L1 byte bound counts.
    pub fn weight(&self) -> usize {
        self.weight_of(|_| true)
    }

    /// [`Self::weight`] of [`Self::into_kept`], without making it.
    pub(crate) fn kept_weight(&self) -> usize {
        self.weight_of(stored_header)
    }

    fn weight_of(&self, counted: impl Fn(&HeaderName) -> bool) -> usize {
        const OVERHEAD: usize = 160; // entry, Arc, deadlines, Vec headers
        let headers: usize = self
            .headers
            .iter()
            .filter(|(n, _)| counted(n))
            .map(|(n, v)| n.as_str().len() + v.len() + 16)
            .sum();
        OVERHEAD + headers + self.body.len()
    }

    /// The answer as an entry holds it: without the headers [`stored_header`] refuses.
    pub(crate) fn into_kept(mut self) -> Self {
        self.headers.retain(|(n, _)| stored_header(n));
        self
    }
}

/// An entry in the L1 tier: the answer plus its deadlines on Tokio's clock (so tests can pause
/// time).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) response: CachedResponse,
    /// Fresh (a hit) before this.
    pub(crate) fresh_until: Instant,
    /// Answerable as stale before this; gone after.
    pub(crate) stale_until: Instant,
    /// The stale window it was stored with (kept so L2 can rebuild the deadlines from PTTL).
    pub(crate) stale: Duration,
    /// How long the fetch that produced it took: XFetch's `delta`.
    pub(crate) fetch_time: Duration,
    /// After a failed (or lock-deferred) refresh: no new refresh before this.
    pub(crate) retry_at: Option<Instant>,
    /// The last refresh failed: stale answers are stale-if-error.
    pub(crate) refresh_failed: bool,
}

impl Entry {
    pub(crate) fn new(
        mut response: CachedResponse,
        now: Instant,
        ttl: Duration,
        stale: Duration,
        fetch_time: Duration,
    ) -> Self {
        response.stored_at = Some(SystemTime::now());
        let fresh_until = now.checked_add(ttl).unwrap_or_else(far_future);
        let stale_until = fresh_until.checked_add(stale).unwrap_or_else(far_future);
        Self {
            response,
            fresh_until,
            stale_until,
            stale,
            fetch_time,
            retry_at: None,
            refresh_failed: false,
        }
    }

    /// Serialises for Redis. Layout (big endian): magic `MC`, version 1, status u16, stored_at
    /// unix ms u64, stale ms u64, fetch time µs u64, header count u16, then per header name len
    /// u16 + name + value len u32 + value, then the body to the end.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let r = &self.response;
        let mut buf = BytesMut::with_capacity(64 + r.weight());
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u16(r.status.as_u16());
        let stored_ms = r
            .stored_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        buf.put_u64(stored_ms);
        buf.put_u64(u64::try_from(self.stale.as_millis()).unwrap_or(u64::MAX));
        buf.put_u64(u64::try_from(self.fetch_time.as_micros()).unwrap_or(u64::MAX));
        let headers: Vec<_> = r.headers.iter().take(usize::from(u16::MAX)).collect();
        buf.put_u16(headers.len() as u16);
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            buf.put_u16(name.len().min(usize::from(u16::MAX)) as u16);
            buf.put_slice(&name[..name.len().min(usize::from(u16::MAX))]);
            buf.put_u32(value.len() as u32);
            buf.put_slice(value.as_bytes());
        }
        buf.put_slice(&r.body);
        buf.to_vec()
    }

    /// Rebuilds an entry read from Redis; `remaining` is the key's PTTL (fresh + stale time
    /// left), so deadlines follow Redis's clock rather than this replica's. `None` when the
    /// bytes are not an entry this version wrote.
    pub(crate) fn decode(bytes: Bytes, remaining: Duration, now: Instant) -> Option<Self> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(MAGIC.len())?.as_ref() != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let stored_ms = r.u64()?;
        let stale = Duration::from_millis(r.u64()?);
        let fetch_time = Duration::from_micros(r.u64()?);
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            let name = HeaderName::from_bytes(&r.take(len)?).ok()?;
            let len = r.u32()? as usize;
            let value = HeaderValue::from_maybe_shared(r.take(len)?).ok()?;
            headers.push((name, value));
        }
        let body = r.rest();
        let stored_at = UNIX_EPOCH.checked_add(Duration::from_millis(stored_ms));
        let stale_until = now.checked_add(remaining).unwrap_or_else(far_future);
        let fresh_until = now
            .checked_add(remaining.saturating_sub(stale))
            .unwrap_or_else(far_future);
        Some(Self {
            response: CachedResponse {
                status,
                headers,
                body,
                stored_at,
                sets_cookie: false,
            },
            fresh_until,
            stale_until,
            stale,
            fetch_time,
            retry_at: None,
            refresh_failed: false,
        })
    }
}

const MAGIC: &[u8] = b"MC";
const VERSION: u8 = 1;

/// A deadline that never comes (~30 years), for lifetimes too large to add.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Some(u64::from_be_bytes(a))
    }
    fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parts_keeps_only_the_useful_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("session=secret"),
        );
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let r = CachedResponse::from_parts(StatusCode::OK, &h, Bytes::from_static(b"{}"));
        assert_eq!(r.headers.len(), 2);
        assert!(r.header(&header::SET_COOKIE).is_none());
        assert_eq!(r.header(&header::CONTENT_TYPE).unwrap(), "application/json");
    }

    #[tokio::test(start_paused = true)]
    async fn redis_form_round_trips_and_deadlines_follow_the_remaining_ttl() {
        let resp = CachedResponse::new(StatusCode::NOT_FOUND, Bytes::from_static(b"\x00\xffbody"))
            .with_header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))
            .with_header(header::ETAG, HeaderValue::from_static("\"x\""));
        let now = Instant::now();
        let e = Entry::new(
            resp,
            now,
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_millis(7),
        );
        let bytes = Bytes::from(e.encode());
        let d = Entry::decode(bytes.clone(), Duration::from_secs(80), now).unwrap();
        assert_eq!(d.response.status, StatusCode::NOT_FOUND);
        assert_eq!(d.response.headers, e.response.headers);
        assert_eq!(d.response.body, e.response.body);
        assert_eq!(d.fetch_time, Duration::from_millis(7));
        assert_eq!(d.stale, Duration::from_secs(60));
        let stored = |r: &CachedResponse| {
            r.stored_at
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(stored(&d.response), stored(&e.response));
        // 80 s left of 30 + 60: 20 s fresh, then 60 s stale.
        assert_eq!(d.fresh_until - now, Duration::from_secs(20));
        assert_eq!(d.stale_until - now, Duration::from_secs(80));
        // Already in its stale window: fresh_until is now.
        let d = Entry::decode(bytes.clone(), Duration::from_secs(10), now).unwrap();
        assert_eq!(d.fresh_until, now);
        // Every truncation is rejected, never a panic.
        let header_end = bytes.len() - 6;
        for cut in 0..header_end {
            assert!(
                Entry::decode(bytes.slice(..cut), Duration::from_secs(1), now).is_none(),
                "cut {cut}"
            );
        }
        assert!(
            Entry::decode(Bytes::from_static(b"garbage"), Duration::from_secs(1), now).is_none()
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), ms in 0u64..1_000_000) {
                let now = Instant::now();
                let _ = Entry::decode(Bytes::from(bytes), Duration::from_millis(ms), now);
            }

            #[test]
            fn encode_decode_round_trips(
                status in 100u16..1000,
                headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", "[ -~]{0,40}"), 0..8),
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                ttl in 0u64..100_000,
                stale in 0u64..100_000,
            ) {
                let mut r = CachedResponse::new(StatusCode::from_u16(status).unwrap(), Bytes::from(body));
                for (n, v) in &headers {
                    r = r.with_header(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
                }
                let now = Instant::now();
                let e = Entry::new(r, now, Duration::from_millis(ttl), Duration::from_millis(stale), Duration::ZERO);
                let d = Entry::decode(Bytes::from(e.encode()), Duration::from_millis(ttl + stale), now).unwrap();
                prop_assert_eq!(&d.response.status, &e.response.status);
                prop_assert_eq!(&d.response.headers, &e.response.headers);
                prop_assert_eq!(&d.response.body, &e.response.body);
                prop_assert_eq!(d.stale, e.stale);
                prop_assert_eq!(d.fresh_until, e.fresh_until);
                prop_assert_eq!(d.stale_until, e.stale_until);
            }
        }
    }
}
