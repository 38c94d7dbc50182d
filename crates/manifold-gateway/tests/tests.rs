//! The gateway end to end: real upstream servers and the real gateway on loopback.

mod admin;
mod cache;
mod cache_coalesced;
mod cache_headers;
mod cache_keys;
mod cache_memcached;
mod compose;
mod compose_hostile;
mod connection_metrics;
mod dataflow;
mod edge;
mod enqueue;
mod error_detail;
mod hooks;
mod http;
mod idempotency_scope;
mod loops;
mod offload;
mod parse_budget;
// The promtool runner manifold-telemetry's tests use: one rule, one place (std-only).
#[path = "../../manifold-telemetry/tests/promtool.rs"]
mod promtool;
mod proxy;
mod publish;
mod rapid_reset;
mod reload;
mod shed;
mod status;
mod stream_send;
mod support;
mod telemetry;
mod telemetry_calls;
mod telemetry_hostile;
mod tls;
mod traces;
mod upstream_policies;
mod values;
