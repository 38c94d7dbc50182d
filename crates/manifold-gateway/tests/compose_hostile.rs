//! Composed routes against a hostile client: values that would reshape an upstream path.

use crate::support::*;
use serde_json::json;

/// A route whose calls put a query value alone in a path segment: in the middle, at the end,
/// first; and one with literal text beside it in its segment.
fn segments_config(up: &Upstream) -> String {
    format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.middle]
path = "/middle"
  [[routes.middle.calls]]
  name = "orders"
  upstream = "u"
  path = "/users/{{query.id}}/orders"
[routes.last]
path = "/last"
  [[routes.last.calls]]
  name = "user"
  upstream = "u"
  method = "DELETE"
  path = "/users/{{query.id}}"
[routes.first]
path = "/first"
  [[routes.first.calls]]
  name = "tenant"
  upstream = "u"
  path = "/{{header.x-tenant}}/orders"
[routes.prefixed]
path = "/prefixed"
  [[routes.prefixed.calls]]
  name = "user"
  upstream = "u"
  path = "/users/u-{{query.id}}/{{query.a}}{{query.b}}"
"#,
        up.url()
    )
}

/// A value that renders empty where it is a whole path segment would leave `//` or a trailing
/// `/`: `/users//orders` is `/users/orders` to an upstream that merges slashes (nginx does by
/// default), `DELETE /users/` the collection, `//orders` a network-path reference to URL
/// parsers. The call fails as `bad_input` and nothing is sent; a value beside literal text in
/// its segment, or one of two values that is not empty, is sent as ever.
#[tokio::test]
async fn a_value_that_renders_an_empty_path_segment_is_refused_not_sent() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&segments_config(&up)).await;
    for path in [
        "/middle",
        "/middle?id=",
        "/last",
        "/last?id=",
        "/first",
        "/prefixed?id=1",
    ] {
        let (status, _, body) = send("GET", &gw.url(path), None).await;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body)["error"]["kind"], "bad_input", "{path}");
    }
    assert_eq!(
        up.requests()
            .into_iter()
            .map(|s| s.path_and_query)
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "sent although a segment was empty"
    );
    for path in [
        "/middle?id=7",
        "/last?id=7",
        "/prefixed?a=x",
        "/prefixed?id=1&b=y",
    ] {
        let (status, _, body) = send("GET", &gw.url(path), None).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let seen: Vec<String> = up
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(
        seen,
        ["/users/7/orders", "/users/7", "/users/u-/x", "/users/u-1/y"]
    );
}
