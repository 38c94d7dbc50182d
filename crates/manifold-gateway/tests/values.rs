//! What a composed route sends for values at the edges of what JSON and a query can say, as
//! docs/configuration.md ("Templates") documents them: integers within 64 bits pass exactly, a
//! larger one becomes the nearest 64-bit float; a missing query value is sent empty.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn numbers_and_missing_query_values_go_out_as_documented() {
    let up = Upstream::start(vec![("POST", "/v", Reply::json(0, json!({})))]).await;
    let toml = format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.v]
method = "POST"
path = "/v"
  [[routes.v.calls]]
  name = "v"
  upstream = "u"
  method = "POST"
  path = "/v"
  query = {{ q = "{{query.q}}" }}
  body = {{ big = "{{request.body.big}}", max = "{{request.body.max}}", min = "{{request.body.min}}" }}
"#,
        up.url()
    );
    let gw = TestGateway::start(&toml).await;
    let body = r#"{"big": 123456789012345678901234, "max": 18446744073709551615, "min": -9223372036854775808}"#;
    let (status, _, answer) = send("POST", &gw.url("/v"), Some(body)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let seen = up.find("/v");
    assert_eq!(seen.path_and_query, "/v?q=");
    let sent = String::from_utf8_lossy(&seen.body).into_owned();
    let value: serde_json::Value = serde_json::from_str(&sent).expect("JSON");
    // The nearest 64-bit float (Rust's own parse of the literal is exact), not one step off.
    assert_eq!(
        value["big"].as_f64(),
        Some(123_456_789_012_345_678_901_234f64),
        "{sent}"
    );
    assert!(sent.contains(r#""max":18446744073709551615"#), "{sent}");
    assert!(sent.contains(r#""min":-9223372036854775808"#), "{sent}");
    gw.shutdown().await;
}
