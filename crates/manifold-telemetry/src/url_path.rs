//! A call span's `url.path`, kept without copying it.
//!
//! Every attempt of every call records its path. The upstream request already holds that path
//! in a shared buffer (its `PathAndQuery`), so a span that can reach the request's
//! `PathAndQuery` keeps a clone of it (a reference count) instead of a `String` copy: one
//! allocation less per attempt on the request path. Text from anywhere else is owned; a copy
//! made with [`UrlPath::copied`] is shared by its clones (a proxied request's SERVER span and
//! its attempts' spans share one copy of the path they all record).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use http::uri::PathAndQuery;

/// The most bytes of a path a span records (`url.path`, and so `url.full`); a longer one is
/// cut at a character boundary at or below it.
///
/// Why: the trace store and the export queue are bounded in requests, and every span records
/// its path, which the client chooses up to the 64 KiB an `http::Uri` may hold (for a composed
/// call, once per call). Uncut, one client's long paths made each stored request and each
/// queued trace up to 64 KiB a span, and an export batch (2,048 spans) over 100 MB, which
/// collectors refuse whole, losing every other request's spans with it.
pub const URL_PATH_MAX: usize = 2048;

/// What the gateway records of a client's path anywhere (spans, the trace store, log lines):
/// its first [`URL_PATH_MAX`] bytes, cut at a character boundary. One rule for every record.
pub fn recorded_path(path: &str) -> &str {
    cut(path)
}

/// `s` cut to at most [`URL_PATH_MAX`] bytes, at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= URL_PATH_MAX {
        return s;
    }
    let mut end = URL_PATH_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `url.path` as sent: read it as a `&str` (it derefs to one).
#[derive(Clone, Default)]
pub struct UrlPath(Repr);

#[derive(Clone)]
enum Repr {
    Owned(String),
    /// The path part of the request's origin form (the query is not `url.path`).
    Shared(PathAndQuery),
    /// A copy of the gateway's own, shared by clones.
    Copied(Arc<str>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Owned(String::new())
    }
}

impl UrlPath {
    /// The path.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            Repr::Shared(pq) => pq.path(),
            Repr::Copied(s) => s,
        }
    }

    /// A copy of `path` that clones share (a reference count each). For text that lives in a
    /// buffer a stored trace must not keep alive (the incoming request's, a slice of hyper's
    /// read buffer), and that several spans record.
    pub fn copied(path: &str) -> Self {
        UrlPath(Repr::Copied(Arc::from(cut(path))))
    }
}

impl Deref for UrlPath {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for UrlPath {
    fn from(mut s: String) -> Self {
        let keep = cut(&s).len();
        s.truncate(keep);
        UrlPath(Repr::Owned(s))
    }
}

impl From<&str> for UrlPath {
    fn from(s: &str) -> Self {
        UrlPath(Repr::Owned(cut(s).to_owned()))
    }
}

/// The request's path and query, shared: the span's path is its path part (a copy of its
/// first [`URL_PATH_MAX`] bytes when it is longer: the shared buffer would keep it all).
impl From<PathAndQuery> for UrlPath {
    fn from(pq: PathAndQuery) -> Self {
        if pq.path().len() > URL_PATH_MAX {
            return UrlPath::from(pq.path());
        }
        UrlPath(Repr::Shared(pq))
    }
}

impl PartialEq for UrlPath {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for UrlPath {}

impl PartialEq<str> for UrlPath {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for UrlPath {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for UrlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for UrlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_path_is_the_path_without_the_query() {
        let pq = PathAndQuery::from_static("/orders/7/confirm?x=1");
        let shared = UrlPath::from(pq);
        assert_eq!(shared.as_str(), "/orders/7/confirm");
        assert_eq!(shared, UrlPath::from("/orders/7/confirm"));
        assert_eq!(
            format!("{shared}|{shared:?}"),
            "/orders/7/confirm|\"/orders/7/confirm\""
        );
        assert_eq!(&*UrlPath::default(), "");
    }

    #[test]
    fn every_way_in_cuts_a_long_path_at_a_character_boundary() {
        let long = format!("/{}", "a".repeat(URL_PATH_MAX * 2));
        let pq = PathAndQuery::try_from(format!("{long}?q=1").as_str()).expect("a path");
        for p in [
            UrlPath::copied(&long),
            UrlPath::from(long.clone()),
            UrlPath::from(long.as_str()),
            UrlPath::from(pq),
        ] {
            assert_eq!(p.len(), URL_PATH_MAX);
            assert!(long.starts_with(p.as_str()));
        }
        // A two-byte character across the limit is left out whole.
        let wide = format!("{}é", "a".repeat(URL_PATH_MAX - 1));
        assert_eq!(UrlPath::copied(&wide).as_str(), &wide[..URL_PATH_MAX - 1]);
        let exact = "b".repeat(URL_PATH_MAX);
        assert_eq!(UrlPath::from(exact.as_str()), exact.as_str());
    }

    #[test]
    fn a_copied_path_is_shared_by_its_clones() {
        let given = String::from("/item/7");
        let copied = UrlPath::copied(&given);
        assert_eq!(copied, "/item/7");
        assert_ne!(copied.as_str().as_ptr(), given.as_ptr());
        let clone = copied.clone();
        assert_eq!(clone.as_str().as_ptr(), copied.as_str().as_ptr());
    }
}
