//! The checkout: the simulator's services and the gateway's route over them.

use crate::BenchError;
use manifold_sim::{RunningSim, SimConfig};

/// The simulator config for the checkout's services with service times `delays` (ms: order, payment,
/// inventory, shipping, confirm), plus a `hop` service with none.
pub fn sim_config(delays: [u64; 5]) -> Result<SimConfig, BenchError> {
    SimConfig::from_toml(&sim_toml(delays))
        .map_err(|e| BenchError::Setup(format!("simulator config: {e}")))
}

/// [`sim_config`] as TOML (what bench/lib/checkout.sh's `checkout_sim_toml` must match with
/// zero delays, less the `hop` service).
pub fn sim_toml(delays: [u64; 5]) -> String {
    let [o, p, i, s, c] = delays;
    format!(
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
    )
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
    Ok(gateway_toml_for(
        "127.0.0.1:0",
        "127.0.0.1:0",
        [
            url("order")?,
            url("payment")?,
            url("inventory")?,
            url("shipping")?,
        ],
    ))
}

/// The checkout gateway's config as TOML, listening on `listen` and `admin`, with the upstream
/// base URLs of order, payment, inventory and shipping (what bench/lib/checkout.sh's
/// `checkout_gateway_toml` must match).
pub fn gateway_toml_for(listen: &str, admin: &str, upstreams: [String; 4]) -> String {
    let [order, payment, inventory, shipping] = upstreams;
    format!(
        r#"
[server]
listen = "{listen}"
admin = "{admin}"
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
"#
    )
}
