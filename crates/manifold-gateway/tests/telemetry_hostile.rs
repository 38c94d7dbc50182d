//! What a hostile client or a hostile proxied upstream can make telemetry record, end to end:
//!
//! - every span and stored trace stays a bounded size whatever the client sends (a path as long
//!   as a URI may be, a method as long as the request head may be), so the export queue, each
//!   OTLP batch and the trace store stay bounded in bytes, not only in count;
//! - a proxied upstream's `Manifold-Partial` and `X-Request-Id` are its own, never recorded or
//!   answered as this request's;
//! - the `X-Request-Id` a request is logged and traced under is the one its proxied upstream
//!   gets, never a client's id the gateway refused.

use crate::support::*;
use crate::telemetry::{attrs, spans, TRACE_ID};
use manifold_telemetry::URL_PATH_MAX;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy_config(up: &Upstream, collector: &Upstream) -> String {
    format!(
        r#"
[telemetry]
otlp = {{ endpoint = "{}", timeout = "2s" }}

[upstreams.files]
endpoints = ["{}"]

[routes.files]
method = "GET"
path = "/files/{{*rest}}"
proxy = "files"
"#,
        collector.url(),
        up.url()
    )
}

/// Wait for the collector to have `n` spans.
async fn spans_at_least(
    collector: &Upstream,
    n: usize,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    for _ in 0..100 {
        let s = spans(collector);
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spans(collector)
}

#[tokio::test]
async fn a_path_as_long_as_a_uri_may_be_is_recorded_cut_in_spans_and_the_store() {
    let up = Upstream::start(vec![("GET", "/files/", Reply::raw(0, 200, "ok"))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&proxy_config(&up, &collector)).await;
    // Just under the 64 KiB an `http::Uri` may be: the gateway takes it and forwards it whole.
    let path = format!("/files/{}", "a".repeat(60_000));
    let (status, _, _) = send_with_traceparent(&gw.url(&path)).await;
    assert_eq!(status, 200);
    assert_eq!(up.requests()[0].path_and_query, path, "forwarded whole");

    let got = spans_at_least(&collector, 2).await;
    assert_eq!(got.len(), 2, "a SERVER and a CLIENT span");
    for s in &got {
        let a = attrs(s);
        let recorded = &a["url.path"];
        assert!(
            recorded.len() <= URL_PATH_MAX,
            "a span's url.path is {} bytes",
            recorded.len()
        );
        assert!(path.starts_with(recorded.as_str()), "cut from the end");
        if let Some(full) = a.get("url.full") {
            assert!(
                full.len() <= URL_PATH_MAX + 64,
                "url.full is {} bytes",
                full.len()
            );
        }
    }

    let detail = stored(&gw).await;
    let stored = detail["path"].as_str().expect("the stored path");
    assert!(
        stored.len() <= URL_PATH_MAX,
        "the store keeps {} bytes of path",
        stored.len()
    );
    gw.shutdown().await;
}

/// A GET carrying a sampled `traceparent` in [`TRACE_ID`].
/// The trace store's record of the request traced as `TRACE_ID`.
async fn stored(gw: &TestGateway) -> Value {
    let (status, _, body) = send(
        "GET",
        &format!("http://{}/traces/{TRACE_ID}", gw.admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("JSON")
}

async fn send_with_traceparent(url: &str) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::{BodyExt, Full};
    let req = http::Request::builder()
        .method("GET")
        .uri(url)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("answer");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_method_as_long_as_the_head_may_be_is_not_recorded_whole() {
    let up = Upstream::start(vec![("GET", "/files/", Reply::raw(0, 200, "ok"))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&proxy_config(&up, &collector)).await;
    let method = "M".repeat(200_000);
    let mut conn = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    conn.write_all(
        format!("{method} /files/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");

    let got = spans_at_least(&collector, 1).await;
    assert_eq!(got.len(), 1, "the rejected request's SERVER span");
    let s = &got[0];
    assert!(
        s.name.len() <= 64,
        "a span named with {} bytes",
        s.name.len()
    );
    assert_eq!(attrs(s)["http.request.method"], "_OTHER");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_proxied_upstream_cannot_name_partial_calls_in_the_trace() {
    // A proxy route has no optional calls: a `Manifold-Partial` on its answer is the upstream's
    // (forwarded to the client as it is), never this gateway's own.
    let forged: Vec<String> = (0..2000)
        .map(|i| format!("forged{i};kind=timeout"))
        .collect();
    let up = Upstream::start(vec![(
        "GET",
        "/files/",
        Reply::raw(0, 200, "ok").header("manifold-partial", &forged.join(", ")),
    )])
    .await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&proxy_config(&up, &collector)).await;
    let (status, headers, _) = send_with_traceparent(&gw.url("/files/x")).await;
    assert_eq!(status, 200);
    assert!(
        headers.contains_key("manifold-partial"),
        "the client still gets the upstream's header"
    );

    let got = spans_at_least(&collector, 2).await;
    assert_eq!(got.len(), 2, "a SERVER and a CLIENT span");
    for s in &got {
        assert!(
            !attrs(s).contains_key("manifold.partial_calls"),
            "the {} span names the upstream's partial calls as its own",
            s.name
        );
    }
    let detail = stored(&gw).await;
    assert_eq!(
        detail["partial"],
        serde_json::json!([]),
        "{}",
        detail["partial"]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_proxied_answer_carries_the_request_s_own_id_not_the_upstream_s() {
    let up = Upstream::start(vec![(
        "GET",
        "/files/",
        Reply::raw(0, 200, "ok").header("x-request-id", "upstream made this"),
    )])
    .await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&proxy_config(&up, &collector)).await;
    for (sent, want) in [
        (Some("mine-1"), "mine-1".to_owned()),
        (None, TRACE_ID.to_owned()),
    ] {
        use http_body_util::{BodyExt, Full};
        let mut req = http::Request::builder()
            .uri(gw.url("/files/x"))
            .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = client()
            .request(req.body(Full::new(bytes::Bytes::new())).expect("request"))
            .await
            .expect("answer");
        let ids: Vec<_> = resp
            .headers()
            .get_all("x-request-id")
            .iter()
            .cloned()
            .collect();
        let _ = resp.into_body().collect().await;
        assert_eq!(
            ids,
            [want.as_str()],
            "the id the request is logged and traced under"
        );
        let upstream_got = up.requests().last().expect("forwarded").headers["x-request-id"].clone();
        assert_eq!(upstream_got, want.as_str());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_client_id_is_not_what_a_proxied_upstream_gets() {
    let up = Upstream::start(vec![("GET", "/files/", Reply::raw(0, 200, "ok"))]).await;
    let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
    let gw = TestGateway::start(&proxy_config(&up, &collector)).await;
    let long = "a".repeat(200);
    for refused in ["forged cause=x", "q\"uote", long.as_str()] {
        use http_body_util::{BodyExt, Full};
        let req = http::Request::builder()
            .uri(gw.url("/files/x"))
            .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
            .header("x-request-id", refused)
            .body(Full::new(bytes::Bytes::new()))
            .expect("request");
        let resp = client().request(req).await.expect("answer");
        assert_eq!(resp.headers()["x-request-id"], TRACE_ID, "{refused}");
        let _ = resp.into_body().collect().await;
        let got: Vec<_> = up
            .requests()
            .last()
            .expect("forwarded")
            .headers
            .get_all("x-request-id")
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            got,
            [TRACE_ID],
            "the upstream gets the id the request is logged under, not {refused:?}"
        );
    }
    gw.shutdown().await;
}

/// With `parent_sampled = "trusted_proxies"`, a client's `-01` is not obeyed unless it comes
/// from a trusted proxy: with `sample_ratio = 0` nothing it sends is exported, and the upstream
/// is told "not sampled". From a trusted peer the flag decides, as W3C's parent-based sampling.
/// Either way the request joins the client's trace.
#[tokio::test]
async fn a_clients_sampled_flag_is_obeyed_only_from_a_trusted_proxy_when_configured() {
    for (trusted, obeyed) in [("10.0.0.0/8", false), ("127.0.0.0/8", true)] {
        let up = Upstream::start(vec![("GET", "/files/", Reply::raw(0, 200, "ok"))]).await;
        let collector = Upstream::start(vec![("POST", "/v1/traces", Reply::raw(0, 200, ""))]).await;
        let config = proxy_config(&up, &collector).replace(
            "[telemetry]\n",
            "[telemetry]\nsample_ratio = 0.0\nparent_sampled = \"trusted_proxies\"\n",
        );
        let server = format!("trusted_proxies = [\"{trusted}\"]");
        let gw = TestGateway::start_with_server(&server, &config).await;
        for _ in 0..5 {
            let (status, _, _) = send_with_traceparent(&gw.url("/files/a")).await;
            assert_eq!(status, 200);
        }
        let sent = up.requests();
        assert_eq!(sent.len(), 5);
        for s in &sent {
            let tp = s.headers["traceparent"].to_str().expect("ascii");
            assert!(tp.contains(TRACE_ID), "{tp}: the client's trace is joined");
            let flag = if obeyed { "-01" } else { "-00" };
            assert!(tp.ends_with(flag), "trusting {trusted}: {tp}");
        }
        if obeyed {
            assert!(!spans_at_least(&collector, 5).await.is_empty());
        } else {
            // Give the exporter its flush interval (1 s) and more.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(
                spans(&collector).is_empty(),
                "exported for an untrusted -01"
            );
        }
        gw.shutdown().await;
    }
}
