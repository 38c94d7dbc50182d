//! What `Telemetry::start` puts on a routed request for its calls, by route kind and mode, and
//! the `X-Request-Id` `finish` gives the answer.

use super::*;
use http::HeaderMap;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn config(telemetry: &str) -> Config {
    let src = format!(
        r#"
[telemetry]
{telemetry}

[upstreams.svc]
endpoints = ["http://127.0.0.1:9"]

[routes.pair]
method = "GET"
path = "/pair"
  [[routes.pair.calls]]
  name = "a"
  upstream = "svc"
  path = "/a"

[routes.raw]
method = "GET"
path = "/raw"
proxy = "svc"
"#
    );
    manifold_config::compile(std::path::Path::new("test.toml"), &src).expect("valid config")
}

fn request(id: Option<&str>) -> Request<()> {
    let mut b = Request::builder().uri("/x");
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    b.body(()).expect("request")
}

fn answer() -> Response<Body> {
    Response::new(crate::handler::full(bytes::Bytes::new()))
}

#[tokio::test]
async fn each_route_kind_gets_the_one_context_it_reads() {
    for (tracing, toml) in [(false, "tracing = false"), (true, "tracing = true")] {
        let t = Telemetry::new(&config(toml)).expect("telemetry");
        let pair = config(toml)
            .routes
            .iter()
            .position(|r| r.name == "pair")
            .expect("pair");
        let raw = 1 - pair;

        let mut req = request(None);
        let id = crate::respond::client_request_id(req.headers());
        let mut rec = t
            .start(pair, &mut req, Instant::now(), id, LOOPBACK)
            .expect("recorded");
        assert!(rec.take_call().is_none());
        let ctx = req
            .extensions()
            .get::<TraceCtx>()
            .expect("a composed request's context");
        assert_eq!(ctx.tracing(), tracing);
        assert!(req.extensions().get::<CallTrace>().is_none());
        // Its calls get the request's id, and the answer the same one.
        let mut upstream = HeaderMap::new();
        ctx.apply(None, &mut upstream);
        let mut resp = answer();
        t.finish(rec, &mut resp, None);
        assert_eq!(resp.headers().get(REQUEST_ID), upstream.get(REQUEST_ID));
        assert!(resp.headers().contains_key(REQUEST_ID));

        let mut req = request(Some("client-1"));
        let id = crate::respond::client_request_id(req.headers());
        let mut rec = t
            .start(raw, &mut req, Instant::now(), id, LOOPBACK)
            .expect("recorded");
        // Handed to the handler, not left in the extensions (a map to allocate and drop).
        assert!(rec.take_call().is_some(), "a proxied request's context");
        assert!(rec.take_call().is_none(), "taken once");
        assert!(req.extensions().get::<CallTrace>().is_none());
        assert!(req.extensions().get::<TraceCtx>().is_none());
        assert!(req.extensions().is_empty());
        let mut resp = answer();
        t.finish(rec, &mut resp, None);
        assert_eq!(resp.headers()[REQUEST_ID], "client-1");
    }
}

#[test]
fn an_untraced_context_gives_only_the_request_id_and_keeps_a_calls_own() {
    let ctx = TraceCtx::new(None, HeaderValue::from_static("rid-1"));
    assert!(!ctx.tracing());
    let mut h = HeaderMap::new();
    ctx.apply(None, &mut h);
    assert_eq!(h[REQUEST_ID], "rid-1");
    assert_eq!(h.len(), 1);
    let mut h = HeaderMap::new();
    h.insert(REQUEST_ID, HeaderValue::from_static("configured"));
    ctx.apply(None, &mut h);
    assert_eq!(h[REQUEST_ID], "configured");
}

#[tokio::test]
async fn the_answer_keeps_an_id_it_already_has() {
    let t = Telemetry::new(&config("tracing = false")).expect("telemetry");
    let mut req = request(None);
    let id = crate::respond::client_request_id(req.headers());
    let rec = t
        .start(0, &mut req, Instant::now(), id, LOOPBACK)
        .expect("recorded");
    let mut resp = answer();
    resp.headers_mut()
        .insert(REQUEST_ID, HeaderValue::from_static("set-before"));
    t.finish(rec, &mut resp, None);
    assert_eq!(resp.headers()[REQUEST_ID], "set-before");
}

/// The request's start is the one its caller read (the limiter's admission), and `finish`
/// returns its end as the latency was measured, traced or not: the limiter samples that
/// instead of reading the clock again.
#[tokio::test(start_paused = true)]
async fn finish_returns_the_end_of_the_latency_it_measured() {
    for toml in ["tracing = false", "tracing = true"] {
        let t = Telemetry::new(&config(toml)).expect("telemetry");
        let mut req = request(None);
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(3)).await;
        let rec = t
            .start(0, &mut req, started, None, LOOPBACK)
            .expect("recorded");
        tokio::time::advance(Duration::from_millis(5)).await;
        let mut resp = answer();
        let ended = t.finish(rec, &mut resp, None);
        assert_eq!(ended, started + Duration::from_millis(8), "{toml}");
    }
}

/// `parent_sampled`: whose `-01` / `-00` decides. The caller's trace is joined in every mode.
#[test]
fn parent_sampled_decides_whose_flag_counts() {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
    let trusted = "\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]";
    for (mode, peer, ignored) in [
        ("follow", LOOPBACK, false),
        ("follow", proxy, false),
        ("ignore", proxy, true),
        ("trusted_proxies", LOOPBACK, true),
        ("trusted_proxies", proxy, false),
        ("trusted_proxies", mapped, false),
    ] {
        let t = Telemetry::new(&config(&format!("parent_sampled = \"{mode}\"{trusted}")))
            .expect("telemetry");
        let incoming = t.incoming(&h, peer);
        assert!(
            incoming.parent.is_some(),
            "{mode} {peer}: the trace is joined"
        );
        assert_eq!(incoming.ignore_sampled, ignored, "{mode} {peer}");
    }
    // No parent, nothing to ignore.
    let t = Telemetry::new(&config("parent_sampled = \"ignore\"")).expect("telemetry");
    assert!(!t.incoming(&HeaderMap::new(), LOOPBACK).ignore_sampled);
}
