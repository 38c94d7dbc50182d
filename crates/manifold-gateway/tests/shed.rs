//! Load shedding at the listener's concurrency limit (`[server] concurrency`): past it a
//! request is answered 503 + `Retry-After` at once, never queued, while the admin listener
//! still answers; HTTP/2 streams on one connection each count.

use crate::support::{self, Reply, TestGateway, Upstream};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A gateway with `concurrency = 2` proxying to an upstream that answers after `delay_ms`.
async fn limited(delay_ms: u64) -> (Upstream, TestGateway) {
    let up = Upstream::start(vec![(
        "GET",
        "/slow",
        Reply::json(delay_ms, serde_json::json!({"ok": true})),
    )])
    .await;
    let toml = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[routes.slow]\npath = \"/slow\"\nproxy = \"u\"\n",
        up.url()
    );
    let gw = TestGateway::start_with_server("concurrency = 2", &toml).await;
    (up, gw)
}

/// Wait (bounded) until the upstream has seen `n` requests.
async fn until_seen(up: &Upstream, n: usize) {
    for _ in 0..500 {
        if up.requests().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the upstream saw {} requests, wanted {n}",
        up.requests().len()
    );
}

#[tokio::test]
async fn past_a_fixed_limit_requests_get_503_at_once_and_admin_still_answers() {
    let (up, gw) = limited(1500).await;
    let url = gw.url("/slow");
    let first: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { support::send("GET", &url, None).await })
        })
        .collect();
    until_seen(&up, 2).await;

    // The third is shed while the first two are still waiting on the upstream.
    let (status, headers, body) = support::send("GET", &url, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(http::header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body = support::json(&body);
    assert_eq!(body["error"]["kind"], "shed", "{body}");
    assert!(first.iter().all(|t| !t.is_finished()), "shed, not queued");
    assert_eq!(
        up.requests().len(),
        2,
        "the shed request never reached the upstream"
    );

    // Probes on the admin listener are never shed.
    let (status, _, _) = support::send("GET", &format!("http://{}/readyz", gw.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = support::send("GET", &format!("http://{}/healthz", gw.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    // The shed request is counted, and the limit and the requests holding it are shown.
    let (status, _, body) =
        support::send("GET", &format!("http://{}/metrics", gw.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    for line in [
        "manifold_http_server_rejected_requests_total{reason=\"shed\"} 1",
        "manifold_concurrency_limit 2",
        "manifold_concurrency_in_flight 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n---\n{text}");
    }
    assert!(first.iter().all(|t| !t.is_finished()));

    // Once the first two are answered, new requests are admitted.
    for t in first {
        let (status, _, _) = t.await.expect("the request task");
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = support::send("GET", &url, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.requests().len(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_streams_on_one_connection_each_take_a_slot() {
    let (up, gw) = limited(1500).await;
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let url = gw.url("/slow");
    let get = |h2: &hyper_util::client::legacy::Client<_, Full<Bytes>>| {
        let req = Request::get(url.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let h2 = h2.clone();
        tokio::spawn(async move {
            let resp = h2.request(req).await.expect("an answer");
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        })
    };
    // The client keeps one HTTP/2 connection to the gateway: the three streams share it.
    let first = get(&h2);
    until_seen(&up, 1).await;
    let second = get(&h2);
    until_seen(&up, 2).await;
    let third = get(&h2).await.expect("the third stream");
    assert_eq!(third, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.await.expect("first"), StatusCode::OK);
    assert_eq!(second.await.expect("second"), StatusCode::OK);
    gw.shutdown().await;
}

/// Requests whose clients have not finished sending their bodies do no work, so they hold no
/// slot (as many of them as the limit: see `limit::wait`): with `concurrency = 2`, two uploads
/// stalled after their first byte (one to a composed route, one through a proxy route) leave
/// room for other requests, and each upload is still served once its body comes.
#[tokio::test]
async fn uploads_waiting_on_their_clients_hold_no_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(vec![
        (
            "GET",
            "/fast",
            Reply::json(0, serde_json::json!({"ok": true})),
        ),
        (
            "POST",
            "/take",
            Reply::json(0, serde_json::json!({"took": true})),
        ),
    ])
    .await;
    let toml = format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.fast]
path = "/fast"
proxy = "u"
[routes.up]
method = "POST"
path = "/take"
proxy = "u"
[routes.compose]
method = "POST"
path = "/compose"
  [[routes.compose.calls]]
  name = "take"
  upstream = "u"
  method = "POST"
  path = "/take"
  body = {{ n = "{{request.body.n}}" }}
"#,
        up.url()
    );
    let gw = TestGateway::start_with_server("concurrency = 2", &toml).await;
    let mut stalled = Vec::new();
    for path in ["/compose", "/take"] {
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.expect("head");
        stalled.push(s);
    }
    // Let the gateway admit them all and start waiting on their bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let (status, _, body) = support::send("GET", &gw.url("/fast"), None).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    for mut s in stalled {
        s.write_all(br#""n": 1}"#).await.expect("rest of the body");
        let mut answer = Vec::new();
        let read = async {
            let mut buf = [0u8; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before an answer");
                answer.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    assert_eq!(gw.stats.shed_requests(), 0);
    gw.shutdown().await;
}
