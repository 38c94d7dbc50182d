//! Where an answer came from, as the `Manifold-Cache` header and the counters name it.

use serde::Serialize;

/// Where an answer came from: the `Manifold-Cache` header's value for a call
/// ([`Outcome::as_str`]) and the counter it is added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Fresh, from the in-process tier.
    Hit,
    /// Fresh, from Redis.
    L2Hit,
    /// Fetched from the upstream for this caller (stored if the policy allowed it).
    Miss,
    /// Stale within the policy's window, answered at once; a background refresh was started
    /// (or is already running).
    Stale,
    /// Stale, answered because refreshing it failed (upstream error or 5xx).
    StaleIfError,
    /// Another caller's fetch (or another replica's, through the Redis lock) answered this one.
    Coalesced,
    /// The policy caches nothing; the fetcher ran directly.
    Bypass,
}

impl Outcome {
    /// The short name used in the `Manifold-Cache` response header (`user=hit`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::L2Hit => "hit-l2",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::StaleIfError => "stale-if-error",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }

    /// Whether the answer came from the cache rather than a fetch made for this caller.
    pub fn is_cached(self) -> bool {
        !matches!(self, Self::Miss | Self::Bypass)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
