//! Integration tests against real Redis (127.0.0.1:6379, plus private `redis-server` children
//! for the outage tests). One binary, several modules: one link step.

mod purge_bus;
mod redis_tier;
mod support;
