//! Composition: bodies and types, overlap of independent calls, ordering of dependent ones,
//! deadlines and cancellation, optional and required failures, injection through values.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;

fn shop_config(order: &Upstream, pay: &Upstream, inv: &Upstream, ship: &Upstream) -> String {
    format!(
        r#"
[upstreams.order]
endpoints = ["{}"]
[upstreams.payment]
endpoints = ["{}"]
[upstreams.inventory]
endpoints = ["{}"]
[upstreams.shipping]
endpoints = ["{}"]

[routes.checkout]
method = "POST"
path = "/checkout"
deadline = "5s"

  [[routes.checkout.calls]]
  name = "order"
  upstream = "order"
  method = "POST"
  path = "/orders"
  body = "{{request.body}}"

  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = {{ order_id = "{{order.id}}", amount = "{{request.body.total}}", note = "order {{order.id}} of {{request.body.total}}" }}

  [[routes.checkout.calls]]
  name = "inventory"
  upstream = "inventory"
  method = "POST"
  path = "/inventory/reserve"
  body = {{ order_id = "{{order.id}}", items = "{{request.body.items}}", first = "{{request.body.items.0}}" }}

  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = {{ order_id = "{{order.id}}", address = "{{request.body.address}}" }}

  [[routes.checkout.calls]]
  name = "confirm"
  upstream = "order"
  method = "POST"
  path = "/orders/{{order.id}}/confirm"
  after = ["payment", "inventory", "shipping"]

  [routes.checkout.response]
  status = 201
  body = {{ order = "{{confirm}}", payment = "{{payment.status}}", label = "{{shipping.label}}", items = "{{request.body.items}}" }}
"#,
        order.url(),
        pay.url(),
        inv.url(),
        ship.url()
    )
}

fn overlaps(a: &Seen, b: &Seen) -> bool {
    let (ae, be) = (a.end.unwrap(), b.end.unwrap());
    a.start < be && b.start < ae
}

#[tokio::test]
async fn checkout_runs_as_a_dag_and_composes_typed_json() {
    let order = Upstream::start(vec![
        (
            "POST",
            "/orders/",
            Reply::json(20, json!({"confirmed": true})),
        ),
        ("POST", "/orders", Reply::json(40, json!({"id": 42}))),
    ])
    .await;
    let pay = Upstream::start(vec![(
        "POST",
        "/payments",
        Reply::json(120, json!({"status": "paid"})),
    )])
    .await;
    let inv = Upstream::start(vec![(
        "POST",
        "/inventory",
        Reply::json(60, json!({"reserved": true})),
    )])
    .await;
    let ship = Upstream::start(vec![(
        "POST",
        "/shipping",
        Reply::json(90, json!({"label": "L-1"})),
    )])
    .await;
    let gw = TestGateway::start(&shop_config(&order, &pay, &inv, &ship)).await;

    let (status, _, body) = send(
        "POST",
        &gw.url("/checkout"),
        Some(r#"{"total": 99.5, "items": [{"sku": "a"}, {"sku": "b"}], "address": "1 Main St"}"#),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json(&body),
        json!({"order": {"confirmed": true}, "payment": "paid", "label": "L-1", "items": [{"sku": "a"}, {"sku": "b"}]})
    );

    // Types survive: a number stays a number, an array an array; text templates become strings.
    let p = pay.find("/payments");
    assert_eq!(
        p.json(),
        json!({"order_id": 42, "amount": 99.5, "note": "order 42 of 99.5"})
    );
    assert_eq!(
        inv.find("/inventory").json(),
        json!({"order_id": 42, "items": [{"sku": "a"}, {"sku": "b"}], "first": {"sku": "a"}})
    );
    assert_eq!(order.find("/orders").json()["total"], json!(99.5));
    assert_eq!(p.headers["content-type"], "application/json");

    // Ordering, from the times the upstreams recorded.
    let created = order.find("/orders");
    let confirm = order.find("/orders/42/confirm");
    let (i, s) = (inv.find("/inventory"), ship.find("/shipping"));
    for dep in [&p, &i, &s] {
        assert!(
            dep.start >= created.end.unwrap(),
            "a dependent call started before order finished"
        );
        assert!(
            confirm.start >= dep.end.unwrap(),
            "confirm started before its `after` calls finished"
        );
    }
    assert!(
        overlaps(&p, &i) && overlaps(&p, &s) && overlaps(&i, &s),
        "independent calls did not overlap"
    );
    // Eager, not level by level: nothing here waits for anything but its inputs; confirm
    // started right after the last of its three inputs, which is shipping's or payment's end.
    let last_input = [&p, &i, &s].iter().map(|x| x.end.unwrap()).max().unwrap();
    assert!(confirm.start >= last_input);
    assert_eq!(order.requests().len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_call_starts_when_its_own_inputs_are_ready_not_its_level() {
    // a (10 ms) → c ; b (300 ms) → d. c must start long before b ends.
    let up = Upstream::start(vec![
        ("GET", "/a", Reply::json(10, json!({"v": 1}))),
        ("GET", "/b", Reply::json(300, json!({"v": 2}))),
        ("GET", "/c", Reply::json(10, json!({"v": 3}))),
        ("GET", "/d", Reply::json(10, json!({"v": 4}))),
    ])
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "a"
  upstream = "u"
  path = "/a"
  [[routes.r.calls]]
  name = "b"
  upstream = "u"
  path = "/b"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  path = "/c/{{a.v}}"
  [[routes.r.calls]]
  name = "d"
  upstream = "u"
  path = "/d/{{b.v}}"
"#,
        up.url()
    ))
    .await;
    let (status, _, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        json!({"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}, "d": {"v": 4}})
    );
    let (b, c) = (up.find("/b"), up.find("/c/1"));
    assert!(
        c.end.unwrap() < b.end.unwrap(),
        "c waited for b, which it does not read"
    );
    assert!(up.find("/d/2").start >= b.end.unwrap());
}

fn profile_config(users: &Upstream, orders: &Upstream, optional: bool, deadline: &str) -> String {
    format!(
        r#"
[upstreams.users]
endpoints = ["{}"]
timeout = "2s"
[upstreams.orders]
endpoints = ["{}"]
timeout = "2s"

[routes.profile]
path = "/user-profile/{{id}}"
deadline = "{deadline}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}"
  query = {{ view = "{{query.view}}" }}
  [[routes.profile.calls]]
  name = "orders"
  upstream = "orders"
  path = "/users/{{path.id}}/orders"
  optional = {optional}
  [routes.profile.response]
  body = {{ user_data = "{{user}}", orders_data = "{{orders}}" }}
"#,
        users.url(),
        orders.url()
    )
}

#[tokio::test]
async fn optional_failure_answers_partially() {
    let users = Upstream::start(vec![(
        "GET",
        "/users",
        Reply::json(5, json!({"name": "ann"})),
    )])
    .await;
    let orders = Upstream::start(vec![("GET", "/users", Reply::raw(5, 500, "{}"))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, true, "2s")).await;
    let (status, headers, body) = send("GET", &gw.url("/user-profile/7?view=full"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        json!({"user_data": {"name": "ann"}, "orders_data": null})
    );
    assert_eq!(partial_names(&headers), "orders");
    // Why, where and how many times (issue 13, item 7).
    let partial = headers["manifold-partial"].to_str().expect("ASCII");
    let detail = format!(
        "orders;kind=upstream_status;upstream=\"orders\";endpoint=\"{}\";attempts=1;ended=\"500\"",
        orders.addr.expect("listening")
    );
    assert_eq!(partial, detail);
    assert_eq!(users.find("/users/7").path_and_query, "/users/7?view=full");
}

#[tokio::test]
async fn required_failures_name_the_call() {
    // Non-2xx → 502.
    let users = Upstream::start(vec![(
        "GET",
        "/users",
        Reply::json(5, json!({"name": "ann"})),
    )])
    .await;
    let orders = Upstream::start(vec![("GET", "/users", Reply::raw(5, 503, "{}"))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, false, "2s")).await;
    let (status, _, body) = send("GET", &gw.url("/user-profile/7"), None).await;
    assert_eq!(status, 502);
    let b = json(&body);
    assert_eq!(b["error"]["call"], "orders");
    assert_eq!(b["error"]["kind"], "upstream_status");
    assert_eq!(b["error"]["upstream_status"], 503);
    // The default policy retries connects only: one attempt, named.
    assert_eq!(b["error"]["upstream"], "orders");
    assert_eq!(b["error"]["attempts"], 1);
    assert_eq!(
        b["error"]["endpoint"],
        orders.addr.expect("listening").to_string()
    );
    assert_eq!(b["error"]["outcomes"][0]["ended"], "503");

    // A body that is not JSON → 502.
    let orders = Upstream::start(vec![("GET", "/users", Reply::raw(5, 200, "<html>"))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, false, "2s")).await;
    let (status, _, body) = send("GET", &gw.url("/user-profile/7"), None).await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"]["kind"], "invalid_json");

    // Nobody listening → 502 connect.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    };
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"http://{dead}\"]\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"u\"\n"
    ))
    .await;
    let (status, _, body) = send("GET", &gw.url("/r"), None).await;
    assert_eq!(status, 502);
    let b = json(&body);
    assert_eq!(b["error"]["kind"], "connect");
    // Retried on connect (nothing was sent) until the attempts ran out, each one told.
    assert_eq!(b["error"]["attempts"], 3);
    assert_eq!(b["error"]["endpoint"], dead.to_string());
    assert_eq!(b["error"]["retry_stopped"], "attempts");
    assert_eq!(b["error"]["outcomes"][2]["ended"], "connect");
}

#[tokio::test]
async fn deadline_answers_504_and_cancels_outstanding_calls() {
    let users = Upstream::start(vec![(
        "GET",
        "/users",
        Reply::json(5, json!({"name": "ann"})),
    )])
    .await;
    let orders = Upstream::start(vec![("GET", "/users", Reply::json(10_000, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, false, "200ms")).await;
    let (status, _, body) = send("GET", &gw.url("/user-profile/7"), None).await;
    assert_eq!(status, 504);
    let b = json(&body);
    assert_eq!(b["error"]["kind"], "deadline");
    assert_eq!(b["error"]["calls"], json!(["orders"]));
    // The upstream sees its connection dropped: its handler was cancelled, not finished.
    let mut cancelled = false;
    for _ in 0..100 {
        if orders.find("/users").cancelled {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cancelled, "the slow upstream never saw the cancellation");
    // The remaining budget travelled with the call and bounded it.
    let budget: u64 = orders.find("/users").headers["manifold-deadline-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        budget <= 200,
        "deadline header {budget} exceeds the route's deadline"
    );
}

/// GET `url` with one extra header.
async fn get_with(url: &str, name: &str, value: &str) -> (http::StatusCode, Bytes) {
    let req = http::Request::get(url)
        .header(name, value)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_callers_deadline_header_tightens_the_route_deadline_and_bad_ones_are_ignored() {
    let users = Upstream::start(vec![("GET", "/users", Reply::json(5, json!({"n": 1})))]).await;
    let slow = Upstream::start(vec![("GET", "/users", Reply::json(10_000, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &slow, false, "10s")).await;
    // Another gateway upstream of this one has 150 ms left: that, not the route's 10 s, bounds
    // the request and travels on.
    let (status, body) = get_with(&gw.url("/user-profile/7"), "manifold-deadline-ms", "150").await;
    assert_eq!(status, 504);
    assert_eq!(json(&body)["error"]["kind"], "deadline");
    let budget: u64 = slow.find("/users").headers["manifold-deadline-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(budget <= 150, "{budget}");

    // Values that are no deadline (too large to matter, not a number) leave the route's own.
    let fast = Upstream::start(vec![("GET", "/users", Reply::json(5, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &fast, false, "10s")).await;
    for value in ["18446744073709551615", "abc", "-5", "1e9", ""] {
        let (status, body) =
            get_with(&gw.url("/user-profile/7"), "manifold-deadline-ms", value).await;
        assert_eq!(status, 200, "{value:?}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn per_call_timeout_answers_504() {
    let users = Upstream::start(vec![(
        "GET",
        "/users",
        Reply::json(5, json!({"name": "ann"})),
    )])
    .await;
    let orders = Upstream::start(vec![("GET", "/users", Reply::json(10_000, json!([])))]).await;
    let cfg = profile_config(&users, &orders, false, "10s").replace(
        "[upstreams.orders]\nendpoints",
        "[upstreams.orders]\nconnect_timeout = \"1s\"\nendpoints",
    );
    let cfg = cfg.replacen(
        "timeout = \"2s\"\n[routes",
        "timeout = \"150ms\"\n[routes",
        1,
    );
    let gw = TestGateway::start(&cfg).await;
    let (status, _, body) = send("GET", &gw.url("/user-profile/7"), None).await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["kind"], "timeout");
}

#[tokio::test]
async fn client_going_away_cancels_the_calls() {
    let users = Upstream::start(vec![("GET", "/users", Reply::json(10_000, json!({})))]).await;
    let orders = Upstream::start(vec![("GET", "/users", Reply::json(10_000, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, false, "30s")).await;
    let url = gw.url("/user-profile/1");
    let req = tokio::spawn(async move { send("GET", &url, None).await });
    // Wait until both upstreams have the request, then hang up.
    for _ in 0..200 {
        if !users.requests().is_empty() && !orders.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    req.abort();
    let mut both = false;
    for _ in 0..200 {
        if users.find("/users").cancelled && orders.find("/users").cancelled {
            both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(both, "the upstream calls outlived the client");
}

#[tokio::test]
async fn values_cannot_reshape_the_upstream_request() {
    let users = Upstream::start(vec![("GET", "/", Reply::json(0, json!({})))]).await;
    let orders = Upstream::start(vec![("GET", "/", Reply::json(0, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, true, "2s")).await;
    // A `/` with a dot segment between its slashes (`..%2Fadmin`) is refused instead:
    // compose_hostile::a_value_hiding_a_dot_segment_behind_an_escaped_slash_is_refused_not_sent.
    let cases = [
        ("x%2Fadmin", "/users/x%2Fadmin"),
        ("a%3Fx%3D1", "/users/a%3Fx%3D1"),
        ("a%23frag", "/users/a%23frag"),
        ("a%0D%0AX-Injected:%201", "/users/a%0D%0AX-Injected%3A%201"),
        ("a%2Fb%2Fetc", "/users/a%2Fb%2Fetc"),
    ];
    for (value, expected) in cases {
        let (status, _, body) = send(
            "GET",
            &gw.url(&format!("/user-profile/{value}?view=a%26admin%3D1%23x")),
            None,
        )
        .await;
        assert_eq!(status, 200, "{value}: {}", String::from_utf8_lossy(&body));
        let seen = users.requests().pop().unwrap();
        assert_eq!(
            seen.path_and_query,
            format!("{expected}?view=a%26admin%3D1%23x"),
            "value {value:?}"
        );
        assert!(!seen.headers.contains_key("x-injected"));
        let orders_seen = orders.requests().pop().unwrap();
        assert_eq!(orders_seen.path_and_query, format!("{expected}/orders"));
    }
}

/// `%2E%2E` is `..` to any upstream that normalizes paths (RFC 3986 §6.2.2.2), so a path value
/// of only dots can be sent in no form at all: the call fails as bad input, nothing is sent.
#[tokio::test]
async fn a_dot_segment_value_is_refused_not_sent() {
    let users = Upstream::start(vec![("GET", "/", Reply::json(0, json!({})))]).await;
    let orders = Upstream::start(vec![("GET", "/", Reply::json(0, json!([])))]).await;
    let gw = TestGateway::start(&profile_config(&users, &orders, true, "2s")).await;
    for value in ["..", "%2e%2e", ".", "%2E"] {
        let (status, _, body) = send("GET", &gw.url(&format!("/user-profile/{value}")), None).await;
        assert_eq!(status, 400, "{value}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body)["error"]["kind"], "bad_input", "{value}");
    }
    // Dots inside a longer value are no dot segment.
    let (status, _, _) = send("GET", &gw.url("/user-profile/...x"), None).await;
    assert_eq!(status, 200);
    let seen: Vec<String> = users
        .requests()
        .into_iter()
        .chain(orders.requests())
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(seen.len(), 2, "sent: {seen:?}");
    assert!(seen.contains(&"/users/...x?view=".to_owned()), "{seen:?}");
    assert!(seen.contains(&"/users/...x/orders".to_owned()), "{seen:?}");
}

/// A call whose path template carries its own query (`/users/{path.id}?view=full`): a path value
/// of only dots is refused as well, though the rendered path's last segment ends at the `?`.
#[tokio::test]
async fn a_dot_segment_value_before_a_templated_query_is_refused_not_sent() {
    let users = Upstream::start(vec![("GET", "/", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.users]
endpoints = ["{}"]
[routes.profile]
path = "/user-profile/{{id}}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{{path.id}}?view=full"
"#,
        users.url()
    ))
    .await;
    for value in ["..", "%2e%2e", "."] {
        let (status, _, body) = send("GET", &gw.url(&format!("/user-profile/{value}")), None).await;
        assert_eq!(status, 400, "{value}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body)["error"]["kind"], "bad_input", "{value}");
    }
    let (status, _, _) = send("GET", &gw.url("/user-profile/ann"), None).await;
    assert_eq!(status, 200);
    let seen: Vec<String> = users
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(seen, ["/users/ann?view=full"], "sent: {seen:?}");
}
