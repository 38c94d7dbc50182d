# shellcheck shell=bash
# The checkout of `manifold bench compose` for the bench scripts that profile it
# (profile-compose.sh, telemetry-callgrind.sh): source this file, then print the configs with
# the functions below. The checkout itself is defined in
# crates/manifold-bench/src/compose/configs.rs; the test `the_scripts_checkout_is_the_benchs`
# (crates/manifold-bench/tests/scripts.rs) fails when the two disagree, so a change there is
# made here too.

# The simulated services of the checkout, each answering at once (latency 0 ms).
checkout_sim_toml() {
  cat <<'TOML'
seed = 7
host = "127.0.0.1"
[services.order]
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders"
  latency = "0ms"
  response = { status = 201, body = { id = "{uuid}", status = "created" } }
  [[services.order.endpoints]]
  method = "POST"
  path = "/orders/{id}/confirm"
  latency = "0ms"
  response = { body = { id = "{path.id}", status = "confirmed" } }
[services.payment]
  [[services.payment.endpoints]]
  method = "POST"
  path = "/payments"
  latency = "0ms"
  response = { body = { status = "paid", order_id = "{body.order_id}" } }
[services.inventory]
  [[services.inventory.endpoints]]
  method = "POST"
  path = "/inventory/reserve"
  latency = "0ms"
  response = { body = { reserved = true } }
[services.shipping]
  [[services.shipping.endpoints]]
  method = "POST"
  path = "/shipping/labels"
  latency = "0ms"
  response = { body = { label = "L-{seq}" } }
TOML
}

# The gateway's config for the checkout route: checkout_gateway_toml LISTEN ADMIN ORDER_URL
# PAYMENT_URL INVENTORY_URL SHIPPING_URL. More tables ([upstreams.X], [routes.X], [telemetry])
# may be printed after it.
checkout_gateway_toml() {
  cat <<TOML
[server]
listen = "$1"
admin = "$2"
[upstreams.order]
endpoints = ["$3"]
[upstreams.payment]
endpoints = ["$4"]
[upstreams.inventory]
endpoints = ["$5"]
[upstreams.shipping]
endpoints = ["$6"]

[routes.checkout]
method = "POST"
path = "/checkout"
deadline = "5s"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  headers = { "x-request-id" = "{query.rid}" }
  path = "/orders"
  body = "{request.body}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  headers = { "x-request-id" = "{query.rid}" }
  path = "/payments"
  body = { order_id = "{order.id}", amount = "{request.body.total}" }
  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  headers = { "x-request-id" = "{query.rid}" }
  path = "/inventory/reserve"
  body = { order_id = "{order.id}", items = "{request.body.items}" }
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  headers = { "x-request-id" = "{query.rid}" }
  path = "/shipping/labels"
  body = { order_id = "{order.id}", address = "{request.body.address}" }
  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  headers = { "x-request-id" = "{query.rid}" }
  path = "/orders/{order.id}/confirm"
  after = ["payment", "inventory", "shipping"]
  [routes.checkout.response]
  status = 201
  body = { order = "{confirm}", payment = "{payment.status}", shipping = "{shipping}" }
TOML
}
