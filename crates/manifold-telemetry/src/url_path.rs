//! A call span's `url.path`, kept without copying it.
//!
//! Every attempt of every call records its path. The upstream request already holds that path
//! in a shared buffer (its `PathAndQuery`), so a span that can reach the request's
//! `PathAndQuery` keeps a clone of it (a reference count) instead of a `String` copy: one
//! allocation less per attempt on the request path. Text from anywhere else is owned.

use std::fmt;
use std::ops::Deref;

use http::uri::PathAndQuery;

/// `url.path` as sent: read it as a `&str` (it derefs to one).
#[derive(Clone, Default)]
pub struct UrlPath(Repr);

#[derive(Clone)]
enum Repr {
    Owned(String),
    /// The path part of the request's origin form (the query is not `url.path`).
    Shared(PathAndQuery),
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
        }
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
}
