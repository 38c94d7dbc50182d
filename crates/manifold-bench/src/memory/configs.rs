//! The configurations of the two processes measured: the simulated upstream's and Manifold's.

use super::MemorySpec;
use crate::BenchError;
use manifold_sim::SimConfig;
use std::time::Duration;

/// The upstream: `GET /item` at once, `GET /slow` after `delay`.
pub(super) fn sim_config(delay: Duration) -> Result<SimConfig, BenchError> {
    let toml = format!(
        r#"
seed = 7
host = "127.0.0.1"
[services.item]
  [[services.item.endpoints]]
  method = "GET"
  path = "/item"
  response = {{ body = {{ id = "{{seq}}", name = "widget", price = 9.5 }} }}
  [[services.item.endpoints]]
  method = "GET"
  path = "/slow"
  latency = "{}ms"
  response = {{ body = {{ id = "{{seq}}", name = "slow widget", price = 9.5 }} }}
"#,
        delay.as_millis()
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// Manifold's config: `/item` and `/slow` proxied, `/composed` two parallel `/slow` calls. The
/// connection limit and the keep-alive timeout are raised so that every connection of the run
/// is served and none is closed while the memory is read; the concurrency limit is fixed well
/// above K so that a burst of slow requests is measured, not shed.
pub fn gateway_toml(upstream_url: &str, spec: &MemorySpec) -> String {
    let max_connections = spec.connections + spec.in_flight + 100;
    let concurrency = 2 * spec.in_flight + 100;
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_connections = {max_connections}
header_read_timeout = "300s"
concurrency = {concurrency}

[upstreams.u]
endpoints = ["{upstream_url}"]
timeout = "120s"

[routes.item]
method = "GET"
path = "/item"
proxy = "u"

[routes.slow]
method = "GET"
path = "/slow"
proxy = "u"

[routes.composed]
method = "GET"
path = "/composed"
deadline = "120s"
  [[routes.composed.calls]]
  name = "a"
  upstream = "u"
  method = "GET"
  path = "/slow"
  [[routes.composed.calls]]
  name = "b"
  upstream = "u"
  method = "GET"
  path = "/slow"
  [routes.composed.response]
  body = {{ a = "{{a}}", b = "{{b}}" }}
"#
    )
}
