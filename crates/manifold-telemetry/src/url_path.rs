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
        UrlPath(Repr::Copied(Arc::from(path)))
    }
}

impl Deref for UrlPath {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for UrlPath {
    fn from(s: String) -> Self {
        UrlPath(Repr::Owned(s))
    }
}

impl From<&str> for UrlPath {
    fn from(s: &str) -> Self {
        UrlPath(Repr::Owned(s.to_owned()))
    }
}

/// The request's path and query, shared: the span's path is its path part.
impl From<PathAndQuery> for UrlPath {
    fn from(pq: PathAndQuery) -> Self {
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
    fn a_copied_path_is_shared_by_its_clones() {
        let given = String::from("/item/7");
        let copied = UrlPath::copied(&given);
        assert_eq!(copied, "/item/7");
        assert_ne!(copied.as_str().as_ptr(), given.as_ptr());
        let clone = copied.clone();
        assert_eq!(clone.as_str().as_ptr(), copied.as_str().as_ptr());
    }
}
