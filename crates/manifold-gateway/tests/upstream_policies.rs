//! The upstream stack's policies through the whole gateway (issue 13, items 4 and 7): a dead
//! endpoint among two costs no failed request, on composed and proxy routes alike, and a body
//! the client streamed reaches the live endpoint whole.

use crate::support::*;
use serde_json::json;

fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn a_dead_endpoint_among_two_costs_no_failed_request() {
    let live = Upstream::start(vec![("*", "/", Reply::json(1, json!({"ok": true})))]).await;
    let dead = dead_addr();
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["http://{dead}", "{live}"]
[routes.pass]
path = "/pass/{{*rest}}"
proxy = "u"
[routes.pass_post]
method = "POST"
path = "/pass/{{*rest}}"
proxy = "u"
[routes.composed]
path = "/composed"
  [[routes.composed.calls]]
  name = "x"
  upstream = "u"
  method = "POST"
  path = "/x"
"#,
        live = live.url()
    ))
    .await;
    for n in 0..6 {
        let (status, _, _) = send("GET", &gw.url("/pass/a"), None).await;
        assert_eq!(status, 200, "proxied GET {n}");
        let (status, _, _) = send("POST", &gw.url("/pass/b"), Some("{\"n\":1}")).await;
        assert_eq!(status, 200, "proxied POST {n}");
        let (status, _, body) = send("GET", &gw.url("/composed"), None).await;
        assert_eq!(
            status,
            200,
            "composed POST {n}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let seen = live.requests();
    assert_eq!(
        seen.len(),
        18,
        "each request reached the live endpoint once"
    );
    let posts: Vec<_> = seen
        .iter()
        .filter(|s| s.path_and_query.ends_with("/b"))
        .collect();
    assert_eq!(posts.len(), 6);
    assert!(
        posts.iter().all(|s| &s.body[..] == b"{\"n\":1}"),
        "the body arrived whole"
    );
}
