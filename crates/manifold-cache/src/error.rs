//! The crate's one error type. Cache failures on the request path never reach a client (they
//! degrade to L1 or the upstream); these errors come from building a cache, administration
//! (purge) and the simulator, where the caller must know what went wrong and whose fault it is.

/// What went wrong, by kind.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The settings are invalid (bad Redis URL or memcached address, both tiers set, zero sizes...): fix the config, retrying won't help.
    #[error("cache config error: {0}")]
    Config(String),
    /// The caller passed an argument outside its allowed range.
    #[error("cache input error: {0}")]
    Input(String),
    /// Redis did not answer within the allowed time; a retry may help.
    #[error("cache timeout: {0}")]
    Timeout(String),
    /// Redis answered with an error or the connection failed; a retry may help.
    #[error("cache redis error: {context}")]
    Redis {
        /// What the cache was doing.
        context: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A memcached server failed or answered unexpectedly during administration (purge); a
    /// retry may help.
    #[error("cache memcached error: {0}")]
    Memcached(String),
    /// A local resource (runtime, thread) could not be created.
    #[error("cache io error: {0}")]
    Io(String),
}

impl CacheError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Redis { .. } | Self::Memcached(_) | Self::Io(_)
        )
    }
}
