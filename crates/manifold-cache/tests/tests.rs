//! Integration tests against real Redis (127.0.0.1:6379, plus private `redis-server` children
//! for the outage tests) and real memcached (127.0.0.1:11211, plus private `memcached`
//! children). One binary, several modules: one link step.

mod mc_support;
mod memcached_tier;
mod purge_bus;
mod redis_tier;
mod shared_bounds;
mod support;
