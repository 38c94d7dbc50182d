//! Manifold's call-result cache: data fetched again and again should come from memory, and a
//! burst of requests for one key should cost the upstream one call.
//!
#![doc = include_str!("../README.md")]

pub mod bench;
mod cache;
mod entry;
mod error;
mod key;
mod l2;
mod policy;
mod purge_bus;
pub mod sim;
mod stats;

pub use cache::{
    Cache, CacheSettings, Outcome, RedisSettings, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRY_BYTES,
    DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_RETRY_AFTER, DEFAULT_REDIS_TIMEOUT, REFRESH_RETRY_AFTER,
};
pub use entry::{stored_header, CachedResponse, POLICY_HEADERS};
pub use error::CacheError;
pub use key::{append_hash, default_key, KeyPart, MAX_READABLE_PATH};
pub use l2::{
    check_server_addr, MemcachedSettings, DEFAULT_MEMCACHED_MAX_ITEM_BYTES,
    DEFAULT_MEMCACHED_RETRY_AFTER, DEFAULT_MEMCACHED_TIMEOUT, MAX_MEMCACHED_PREFIX,
    MAX_MEMCACHED_SERVERS, MEMCACHED_ITEM_BYTES,
};
pub use policy::{CacheControl, CachePolicy, Lifetimes};
pub use purge_bus::RedisReadiness;
pub use stats::{CacheStats, CallStats, L1Stats, L2Stats, ServerState};
