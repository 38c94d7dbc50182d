//! The checkout: the simulator's services and the gateway's route over them.

use crate::BenchError;
use manifold_sim::{RunningSim, SimConfig};

/// The simulator config for the checkout's services with service times `delays` (ms: order, payment,
/// inventory, shipping, confirm), plus a `hop` service with none.
pub fn sim_config(delays: [u64; 5]) -> Result<SimConfig, BenchError> {
    let [o, p, i, s, c] = delays;
    let toml = format!(
        r#"
seed = 7
host = "127.0.0.1"
[services.order]
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders"
  latency = "{o}ms"
  response = {{ status = 201, body = {{ id = "{{uuid}}", status = "created" }} }}
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders/{{id}}/confirm"
  latency = "{c}ms"
  response = {{ body = {{ id = "{{path.id}}", status = "confirmed" }} }}
[services.payment]
  [[services.payment.endpoints]]
  method = "POST"
  path = "/payments"
  latency = "{p}ms"
  response = {{ body = {{ status = "paid", order_id = "{{body.order_id}}" }} }}
[services.inventory]
  [[services.inventory.endpoints]]
  method = "POST"
  path = "/inventory/reserve"
  latency = "{i}ms"
  response = {{ body = {{ reserved = true }} }}
[services.shipping]
  [[services.shipping.endpoints]]
  method = "POST"
  path = "/shipping/labels"
  latency = "{s}ms"
  response = {{ body = {{ label = "L-{{seq}}" }} }}
[services.hop]
  [[services.hop.endpoints]]
  method = "POST"
  path = "/hop"
  latency = "0ms"
  response = {{ body = {{ ok = true }} }}
"#
    );
    SimConfig::from_toml(&toml).map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// The gateway config for the checkout route against `sim`.
pub fn gateway_config(sim: &RunningSim) -> Result<manifold_config::Config, BenchError> {
    manifold_config::compile("bench-compose.toml".as_ref(), &gateway_toml(sim)?)
        .map_err(|e| BenchError::Setup(format!("gateway config: {e}")))
}

/// The checkout gateway's config as TOML (what [`gateway_config`] compiles, and what a
/// `manifold serve` child is given).
pub fn gateway_toml(sim: &RunningSim) -> Result<String, BenchError> {
    let url = |s: &str| {
        sim.url(s)
            .ok_or_else(|| BenchError::Setup(format!("simulator has no service {s}")))
    };
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
[upstreams.order]
endpoints = ["{order}"]
[upstreams.payment]
endpoints = ["{payment}"]
[upstreams.inventory]
endpoints = ["{inventory}"]
[upstreams.shipping]
endpoints = ["{shipping}"]

[routes.checkout]
method = "POST"
path = "/checkout"
deadline = "5s"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/orders"
  body = "{{request.body}}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}" }}
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}", items = "{{request.body.items}}" }}
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  headers = {{ "x-request-id" = "{{query.rid}}" }}
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory", "shipping"]
  [routes.checkout.response]
  status = 201
  body = {{ order = "{{confirm}}", payment = "{{payment.status}}", shipping = "{{shipping}}" }}
"#,
        order = url("order")?,
        payment = url("payment")?,
        inventory = url("inventory")?,
        shipping = url("shipping")?,
    );
    Ok(toml)
}
