//! Composed routes against a hostile client (values that would reshape an upstream path) and a
//! hostile upstream (answers that are huge, endless, malformed or slow).

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

/// An upstream on loopback that reads one request head per connection and then does what
/// `script` says for its path (the raw bytes, so that it can break HTTP as a test needs),
/// closing the connection after.
async fn raw_upstream(script: fn(&str) -> Act) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                match script(&path) {
                    Act::Send(bytes) => {
                        let _ = conn.write_all(&bytes).await;
                    }
                    Act::Then(first, each, every) => {
                        if conn.write_all(&first).await.is_err() {
                            return;
                        }
                        loop {
                            tokio::time::sleep(every).await;
                            if conn.write_all(&each).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// What the raw upstream does.
enum Act {
    /// Write these bytes, then close.
    Send(Vec<u8>),
    /// Write the first bytes, then the second ones again and again, this far apart, forever.
    Then(Vec<u8>, Vec<u8>, std::time::Duration),
}

fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The hostile answers, by the path the call asks for.
fn hostile(path: &str) -> Act {
    let ms = std::time::Duration::from_millis;
    match path {
        "/deep" => {
            let mut body = "[".repeat(100_000);
            body.push_str(&"]".repeat(100_000));
            Act::Send(answer("200 OK", "", body.as_bytes()))
        }
        "/status999" => Act::Send(answer("999 Odd", "", b"{}")),
        "/switch" => Act::Send(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n{}"
                .to_vec(),
        ),
        "/headers" => Act::Send(answer("200 OK", &"x-h: v\r\n".repeat(10_000), b"{}")),
        "/bigheader" => Act::Send(answer(
            "200 OK",
            &format!("x-big: {}\r\n", "v".repeat(1 << 20)),
            b"{}",
        )),
        "/short" => Act::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}".to_vec()),
        "/not-utf8" => Act::Send(answer("200 OK", "", b"\"\xff\xfe\"")),
        "/huge" => {
            let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..(2 << 20) / 4096 {
                out.extend_from_slice(b"1000\r\n");
                out.extend_from_slice(&[b' '; 4096]);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            Act::Send(out)
        }
        "/dribble" => Act::Then(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec(),
            b" ".to_vec(),
            ms(20),
        ),
        "/continue" => Act::Then(
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            ms(20),
        ),
        "/gigabyte" => Act::Then(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n".to_vec(),
            b" ".to_vec(),
            ms(20),
        ),
        _ => Act::Send(answer("200 OK", "", b"{}")),
    }
}

/// An upstream answering badly (JSON nested 100,000 deep, bodies past the bound, a head of
/// 10,000 headers or a 1 MB header, a status 999 or 101, a body shorter than its length, bytes
/// that are not UTF-8; or dribbling a byte every 20 ms, sending `100 Continue` forever, promising
/// a gigabyte): the client gets a 502 or 504 naming the call and saying why, in bounded time and
/// memory, never a panic or a hang. The call's timeout bounds the whole exchange, body included.
#[tokio::test]
async fn a_hostile_upstream_answer_is_a_502_or_504_naming_the_call() {
    let up = raw_upstream(hostile).await;
    let gw = TestGateway::start_with_server(
        "max_response_bytes = 1048576",
        &format!(
            r#"
[upstreams.u]
endpoints = ["{up}"]
timeout = "300ms"
[routes.r]
path = "/r/{{case}}"
  [[routes.r.calls]]
  name = "c"
  upstream = "u"
  path = "/{{path.case}}"
"#
        ),
    )
    .await;
    for (case, status, kind, says) in [
        ("deep", 502, "invalid_json", "recursion limit exceeded"),
        ("status999", 502, "upstream_status", "answered 999"),
        ("switch", 502, "upstream_status", "answered 101"),
        ("headers", 502, "io", "too large"),
        ("bigheader", 502, "io", "too large"),
        ("short", 502, "io", "reading the body"),
        ("not-utf8", 502, "invalid_json", "not JSON"),
        ("huge", 502, "too_large", "more than 1048576 bytes"),
        (
            "dribble",
            504,
            "timeout",
            "no complete answer from upstream `u` within 300ms",
        ),
        (
            "continue",
            504,
            "timeout",
            "no complete answer from upstream `u` within 300ms",
        ),
        // Refused at its head, not read until the bound or the timeout.
        (
            "gigabyte",
            502,
            "too_large",
            "its Content-Length is 1000000000",
        ),
    ] {
        let url = gw.url(&format!("/r/{case}"));
        let (got, _, body) =
            tokio::time::timeout(std::time::Duration::from_secs(10), send("GET", &url, None))
                .await
                .unwrap_or_else(|_| panic!("{case}: no answer within 10 s"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{case}: {text}");
        let error = &json(&body)["error"];
        assert_eq!(error["kind"], kind, "{case}: {text}");
        assert_eq!(error["call"], "c", "{case}: {text}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{case}: {text}");
    }
    let (ok, _, _) = send("GET", &gw.url("/r/fine"), None).await;
    assert_eq!(ok, 200, "the gateway still answers");
}

/// POST `body` (any bytes) to `url` as JSON.
pub(crate) async fn post_bytes(url: &str, body: &[u8]) -> (http::StatusCode, bytes::Bytes) {
    use http_body_util::BodyExt;
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .expect("request");
    let resp = client().request(req).await.expect("an answer");
    let status = resp.status();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

/// A client's JSON body against a route that puts its fields in a call's path, header and
/// body: nesting past serde_json's recursion limit, a number past f64, bytes that are not UTF-8
/// are 400 `bad_json`; a CR LF in a field bound for a header is 400 `bad_input` with nothing
/// sent; of duplicate keys the last is the one both the gateway and the upstream see.
#[tokio::test]
async fn a_hostile_client_body_is_refused_or_rendered_as_the_gateway_read_it() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.c]
method = "POST"
path = "/c"
  [[routes.c.calls]]
  name = "user"
  upstream = "u"
  method = "POST"
  path = "/u/{{request.body.id}}"
  headers = {{ x-user = "{{request.body.user}}" }}
  body = "{{request.body}}"
"#,
        up.url()
    ))
    .await;
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    for (body, kind, says) in [
        (deep.as_bytes(), "bad_json", "recursion limit exceeded"),
        (&b"{\"id\": 1e400}"[..], "bad_json", "number out of range"),
        (
            &b"{\"id\": \"\xff\xfe\"}"[..],
            "bad_json",
            "invalid unicode",
        ),
        (
            &b"{\"id\": \"a\", \"user\": \"ann\\r\\nx-injected: 1\"}"[..],
            "bad_input",
            "header `x-user`",
        ),
    ] {
        let (status, answer) = post_bytes(&gw.url("/c"), body).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{text}");
        let error = &json(&answer)["error"];
        assert_eq!(error["kind"], kind, "{text}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(says),
            "{text}"
        );
    }
    assert!(up.requests().is_empty(), "sent: {:?}", up.requests());
    let (status, answer) = post_bytes(
        &gw.url("/c"),
        br#"{"id": "a", "user": "x", "id": "b", "user": "y"}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let seen = up.find("/u/");
    assert_eq!(seen.path_and_query, "/u/b");
    assert_eq!(seen.headers["x-user"], "y");
    assert_eq!(seen.json(), json!({"id": "b", "user": "y"}));
}

/// A value that cannot be sent as rendered and came from another call's answer (an id missing,
/// `""` or `..`, a name with a line break bound for a header) is that upstream's fault, not the
/// client's: 502 `input_unavailable` naming the call and the one whose answer gave it, not 400
/// `bad_input`. A request value in
/// the same place is still the client's 400.
#[tokio::test]
async fn an_unsendable_value_from_an_answer_is_a_502_naming_the_upstream_call() {
    let up = Upstream::start(vec![
        (
            "GET",
            "/order/missing",
            Reply::json(0, json!({"name": "ann"})),
        ),
        (
            "GET",
            "/order/empty",
            Reply::json(0, json!({"id": "", "name": "ann"})),
        ),
        (
            "GET",
            "/order/dots",
            Reply::json(0, json!({"id": "..", "name": "ann"})),
        ),
        (
            "GET",
            "/order/crlf",
            Reply::json(0, json!({"id": 7, "name": "ann\r\nx-injected: 1"})),
        ),
        (
            "GET",
            "/order/",
            Reply::json(0, json!({"id": 7, "name": "ann"})),
        ),
        ("GET", "/items/", Reply::json(0, json!([]))),
    ])
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.r]
path = "/r/{{case}}"
  [[routes.r.calls]]
  name = "order"
  upstream = "u"
  path = "/order/{{path.case}}"
  [[routes.r.calls]]
  name = "items"
  upstream = "u"
  path = "/items/{{order.id}}/{{query.page}}x"
  headers = {{ x-name = "{{order.name}}", x-tag = "{{query.tag}}" }}
"#,
        up.url()
    ))
    .await;
    for case in ["missing", "empty", "dots", "crlf"] {
        let (status, _, body) = send("GET", &gw.url(&format!("/r/{case}")), None).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 502, "{case}: {text}");
        let error = &json(&body)["error"];
        assert_eq!(error["kind"], "input_unavailable", "{case}: {text}");
        assert_eq!(error["call"], "items", "{case}: {text}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("answer of call `order`"), "{case}: {text}");
    }
    // The client's own value in the same call is still the client's fault.
    let (status, _, body) = send("GET", &gw.url("/r/fine?page=.."), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(up.find("/items/").path_and_query, "/items/7/%2E%2Ex");
    let (status, _, body) = send("GET", &gw.url("/r/fine?tag=a%0D%0Ab"), None).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"]["kind"], "bad_input");
    let sent: Vec<String> = up
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .filter(|p| p.starts_with("/items/"))
        .collect();
    assert_eq!(sent, ["/items/7/%2E%2Ex"], "nothing unsendable went out");
}

/// A path value holding `/` (sent as `%2F`) with a `.` or `..` between its slashes:
/// `..%2Fadmin` is `../admin` to an upstream that decodes `%2F` before resolving dot segments
/// (nginx does, and forwards the result), which then serves `/admin`. A proxy route refuses
/// `%2F` by default for that reason; a composed call refuses such a value (400 `bad_input`) and
/// sends nothing. A value with a `/` and no dot segment, or dots beside other text, is sent.
#[tokio::test]
async fn a_value_hiding_a_dot_segment_behind_an_escaped_slash_is_refused_not_sent() {
    let up = Upstream::start(vec![("GET", "/", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.r]
path = "/r/{{id}}"
  [[routes.r.calls]]
  name = "user"
  upstream = "u"
  path = "/users/{{path.id}}/profile"
"#,
        up.url()
    ))
    .await;
    for value in [
        "..%2Fadmin",
        "a%2F..%2F..%2Fetc",
        "%2E%2E%2Fadmin",
        "x%2F.",
        "..%5Cadmin",
        "..%2F",
    ] {
        let (status, _, body) = send("GET", &gw.url(&format!("/r/{value}")), None).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{value}: {text}");
        assert_eq!(json(&body)["error"]["kind"], "bad_input", "{value}: {text}");
    }
    assert!(up.requests().is_empty(), "sent: {:?}", up.requests());
    for value in ["a%2Fb", "..x%2Fy", "a%2F.b"] {
        let (status, _, body) = send("GET", &gw.url(&format!("/r/{value}")), None).await;
        assert_eq!(status, 200, "{value}: {}", String::from_utf8_lossy(&body));
    }
    let seen: Vec<String> = up
        .requests()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(
        seen,
        [
            "/users/a%2Fb/profile",
            "/users/..x%2Fy/profile",
            "/users/a%2F.b/profile"
        ]
    );
}

/// Path parameters and query values are decoded before a composed route renders them; bytes
/// that are not UTF-8 would become U+FFFD, so `%FF` and `%FE` would send the upstream one value
/// the client never sent. Refused as 400 `bad_input` instead; U+FFFD sent encoded as UTF-8 is a
/// character like any other, and a proxy route forwards the bytes as they came.
#[tokio::test]
async fn bytes_that_are_not_utf8_are_refused_by_a_composed_route_not_replaced() {
    let up = Upstream::start(vec![(
        "GET",
        "/users/",
        Reply::json(0, json!({"ok": true})),
    )])
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.byid]
path = "/byid/{{id}}"
  [[routes.byid.calls]]
  name = "user"
  upstream = "u"
  path = "/users/{{path.id}}?q={{query.q}}"
[routes.raw]
path = "/raw/{{*rest}}"
proxy = "u"
"#,
        up.url()
    ))
    .await;
    // Also an overlong `/` (`%C0%AF`, the classic way past a naive decoder) and a lone
    // surrogate (`%ED%A0%80`): neither is UTF-8.
    for (path, part) in [
        ("/byid/%FF", "path"),
        ("/byid/a?q=%FE", "query"),
        ("/byid/%C0%AF", "path"),
        ("/byid/a?q=%ED%A0%80", "query"),
    ] {
        let (status, _, body) = send("GET", &gw.url(path), None).await;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
        let error = &json(&body)["error"];
        assert_eq!(error["kind"], "bad_input", "{path}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(part), "{path}: {message}");
    }
    assert!(
        up.requests().is_empty(),
        "nothing was sent: {:?}",
        up.requests()
    );
    // A query parameter no template reads is not judged: a tracking parameter in Latin-1
    // (`%E9`) refuses nothing, and is not sent (the call renders only `q`).
    let (status, _, body) = send("GET", &gw.url("/byid/a?utm=caf%E9&q=ok&%FF=1"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(up.find("/users/").path_and_query, "/users/a?q=ok");
    // A read one still is, wherever it stands among the others.
    let (status, _, _) = send("GET", &gw.url("/byid/a?utm=caf%E9&q=%FF"), None).await;
    assert_eq!(status, 400);
    let (status, _, body) = send("GET", &gw.url("/byid/%EF%BF%BD?q=%EF%BF%BD"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        up.find("/users/%EF").path_and_query,
        "/users/%EF%BF%BD?q=%EF%BF%BD"
    );
    send("GET", &gw.url("/raw/%FF"), None).await;
    assert!(
        up.requests().iter().any(|s| s.path_and_query == "/raw/%FF"),
        "{:?}",
        up.requests()
    );
}

/// A request header a template reads whose value is UTF-8 text beyond ASCII (`x-user: José`,
/// which HTTP carries as opaque bytes) is that text: the call's body, header and path get
/// `José`, as they would from the same value in the query or the body. It read as missing,
/// so the upstream was sent `null`, an empty header, or a refused empty segment: a value the
/// client never sent.
#[tokio::test]
async fn a_request_header_in_utf8_beyond_ascii_is_rendered_as_its_text() {
    let up = Upstream::start(vec![("*", "/", Reply::json(0, json!({})))]).await;
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.u]
endpoints = ["{}"]
[routes.c]
path = "/c"
  [[routes.c.calls]]
  name = "user"
  upstream = "u"
  method = "POST"
  path = "/u/{{header.x-user}}"
  headers = {{ x-as = "{{header.x-user}}" }}
  body = {{ user = "{{header.x-user}}" }}
"#,
        up.url()
    ))
    .await;
    let req = http::Request::get(gw.url("/c"))
        .header(
            "x-user",
            http::HeaderValue::from_bytes("José".as_bytes()).expect("a header value"),
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("an answer");
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = up.find("/u/");
    assert_eq!(seen.path_and_query, "/u/Jos%C3%A9");
    assert_eq!(seen.headers["x-as"].as_bytes(), "José".as_bytes());
    assert_eq!(seen.json(), json!({"user": "José"}));

    // Bytes that are no UTF-8 (Latin-1 `José`) are refused, naming the header, as a query
    // value is: read as missing, the upstream was sent an empty segment and a `null` the
    // client never sent. A header no template reads is not judged.
    let send = |headers: &[(&'static str, &'static [u8])]| {
        let mut req = http::Request::get(gw.url("/c"));
        for (name, value) in headers {
            req = req.header(
                *name,
                http::HeaderValue::from_bytes(value).expect("a value"),
            );
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        async move {
            let resp = client().request(req).await.expect("an answer");
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let before = up.requests().len();
    let (status, body) = send(&[("x-user", b"Jos\xE9")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("bad_input") && body.contains("`x-user` header"),
        "{body}"
    );
    assert_eq!(up.requests().len(), before, "nothing was sent upstream");
    let (status, body) = send(&[("x-user", b"jo"), ("x-other", b"Jos\xE9")]).await;
    assert_eq!(status, 200, "a header no template reads: {body}");
}
