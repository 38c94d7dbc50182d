//! The gateway end to end: real upstream servers and the real gateway on loopback.

mod admin;
mod cache;
mod cache_keys;
mod cache_memcached;
mod compose;
mod dataflow;
mod edge;
mod enqueue;
mod http;
mod offload;
mod proxy;
mod publish;
mod shed;
mod support;
mod telemetry;
mod telemetry_calls;
mod upstream_policies;
