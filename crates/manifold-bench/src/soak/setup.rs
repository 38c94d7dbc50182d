//! What the soak runs against: four simulated upstreams, each a simulator of its own so one can
//! be stalled or taken down while the others carry on, and the gateway config whose three routes
//! (composed, cached, proxy) use them.

use crate::BenchError;
use manifold_sim::{RunningSim, Sim, SimConfig};
use std::time::Duration;
use tokio::time::Instant;

/// The simulated upstreams, in the order fault windows rotate through them.
pub(crate) const UPSTREAMS: [&str; 4] = ["users", "orders", "catalog", "items"];

/// One route the load is spread over: (name, kind, the path the load sends, `{key}` per request).
pub(crate) const ROUTES: [(&str, &str, &str); 3] = [
    ("profile", "composed", "/profile/{key}"),
    ("product", "cached", "/product/{key}"),
    ("item", "proxy", "/items/{key}"),
];

/// The gateway's bound on every upstream call (each upstream's `timeout` and the composed
/// routes' `deadline`): a stalled upstream is answered 504 after this long, well inside the load
/// generator's own timeout, so a client that gets no answer at all is the gateway's fault.
pub(crate) const GATEWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// The simulator config of one upstream on `port` (0: an ephemeral one). Background faults, drawn
/// per request by the simulator, come on top of the fault windows: a reset on `orders` (an
/// optional call: a partial answer) and a 503 on `items` (the proxy route forwards it).
pub(crate) fn sim_config(name: &str, port: u16) -> Result<SimConfig, BenchError> {
    let endpoint = match name {
        "users" => {
            r#"path = "/users/{id}"
  latency = "1ms"
  response = { body = { id = "{path.id}", name = "user {path.id}" } }"#
        }
        "orders" => {
            r#"path = "/orders"
  latency = "2ms"
  faults = [{ kind = "reset", rate = 0.002 }]
  response = { body = { user = "{query.user}", count = 3 } }"#
        }
        "catalog" => {
            r#"path = "/catalog/{id}"
  latency = "5ms"
  response = { body = { id = "{path.id}", price = 9.5 } }"#
        }
        "items" => {
            r#"path = "/items/{id}"
  latency = "1ms"
  faults = [{ kind = "status", status = 503, rate = 0.001 }]
  response = { body = { id = "{path.id}", name = "widget" } }"#
        }
        other => return Err(BenchError::Setup(format!("no simulated upstream {other}"))),
    };
    let toml = format!(
        r#"seed = 12
host = "127.0.0.1"
[services.{name}]
port = {port}
  [[services.{name}.endpoints]]
  method = "GET"
  {endpoint}
"#
    );
    SimConfig::from_toml(&toml)
        .map_err(|e| BenchError::Setup(format!("simulator config of {name}: {e}")))
}

/// The gateway config: `urls` are the upstreams' `http://ADDR`, in [`UPSTREAMS`] order.
pub(crate) fn gateway_toml(urls: &[String; 4]) -> String {
    let timeout = humantime::format_duration(GATEWAY_TIMEOUT);
    let [users, orders, catalog, items] = urls;
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.users]
endpoints = ["{users}"]
timeout = "{timeout}"
[upstreams.orders]
endpoints = ["{orders}"]
timeout = "{timeout}"
[upstreams.catalog]
endpoints = ["{catalog}"]
timeout = "{timeout}"
[upstreams.items]
endpoints = ["{items}"]
timeout = "{timeout}"

# Composed: a required call, then an optional one that reads it.
[routes.profile]
method = "GET"
path = "/profile/{{id}}"
deadline = "{timeout}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  [[routes.profile.calls]]
  name = "orders"
  upstream = "orders"
  path = "/orders"
  query = {{ user = "{{user.id}}" }}
  optional = true
  [routes.profile.response]
  body = {{ user = "{{user}}", orders = "{{orders}}" }}

# Cached: hits, background refreshes, stale answers while the upstream is faulty.
[routes.product]
method = "GET"
path = "/product/{{id}}"
deadline = "{timeout}"
  [[routes.product.calls]]
  name = "item"
  upstream = "catalog"
  path = "/catalog/{{path.id}}"
  cache = {{ ttl = "2s", stale = "10s" }}

# Proxy: streamed pass-through.
[routes.item]
method = "GET"
path = "/items/{{id}}"
proxy = "items"
"#
    )
}

/// One simulated upstream, restartable on its port after a "down" window.
pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) sim: Option<RunningSim>,
}

impl Upstream {
    pub(crate) async fn start(name: &'static str) -> Result<Upstream, BenchError> {
        let sim = Sim::start(sim_config(name, 0)?)
            .await
            .map_err(|e| BenchError::Setup(format!("simulated upstream {name}: {e}")))?;
        let port = sim
            .addr(name)
            .map(|a| a.port())
            .ok_or_else(|| BenchError::Setup(format!("simulator has no service {name}")))?;
        Ok(Upstream {
            name,
            port,
            sim: Some(sim),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop listening and drop every connection (the gateway's pooled ones included).
    pub(crate) async fn stop(&mut self) {
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
    }

    /// Listen again on the same port. The port was ours a moment ago, but another process may
    /// have taken it: retried for up to 5 s, then the reason.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        let config = sim_config(self.name, self.port).map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match Sim::start(config.clone()).await {
                Ok(sim) => {
                    self.sim = Some(sim);
                    return Ok(());
                }
                Err(e) if Instant::now() >= until => {
                    return Err(format!(
                        "restarting {} on port {}: {e}",
                        self.name, self.port
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_upstream_and_the_gateway_config_compile() {
        for name in UPSTREAMS {
            sim_config(name, 0).unwrap();
        }
        let urls = UPSTREAMS.map(|_| "http://127.0.0.1:1".to_owned());
        let toml = gateway_toml(&urls);
        let config = manifold_config::compile("soak.toml".as_ref(), &toml).unwrap();
        for (route, _, _) in ROUTES {
            assert!(config.route(route).is_some(), "{route}");
        }
        assert_eq!(config.upstreams.len(), UPSTREAMS.len());
        assert!(sim_config("nope", 0).is_err());
    }
}
