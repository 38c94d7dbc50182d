//! Publish calls and the `[events]` / `[queue]` sections they need.

use super::*;

/// A route with one sync call `order` and a publish call `shipped`; `extra` is spliced into the
/// publish call's table, `events` after the upstreams.
fn publish_route(events: &str, extra: &str) -> String {
    format!(
        "{UPSTREAMS}{events}[routes.r]\nmethod = \"POST\"\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"order\"\n  upstream = \"a\"\n  [[routes.r.calls]]\n  name = \"shipped\"\n  mode = \"publish\" # mode\n{extra}"
    )
}

const EVENTS: &str = "[events]\nbackend = \"nats\"\n";

#[test]
fn publish_calls_compile_with_their_subject_and_are_described() {
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = { order_id = \"{order.id}\" }\n  headers = { x-tenant = \"{header.x-tenant}\" }\n  [routes.r.response]\n  status = 202\n  body = { order = \"{order}\", event = \"{shipped.task_id}\" }\n",
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap();
    let RouteKind::Compose(plan) = &cfg.routes[0].kind else {
        panic!()
    };
    let call = &plan.calls[1];
    assert_eq!(call.mode, Mode::Publish);
    assert_eq!(call.subject.as_deref(), Some("orders.created"));
    assert_eq!(call.upstream_name, "");
    // It reads `order`, so it runs after it.
    assert_eq!(plan.deps[1], vec![0]);
    let events = cfg.events.as_ref().expect("[events]");
    assert_eq!(events.backend, manifold_config::events::EventsBackend::Nats);
    let text = manifold_config::describe(&cfg);
    assert!(
        text.contains("shipped ⇢ publish orders.created  (after order)"),
        "{text}"
    );

    let src = publish_route(
        "[events]\nbackend = \"rabbitmq\"\nexchange = \"shop.events\"\ntimeout = \"2s\"\n",
        "  subject = \"orders.created\"\n  body = \"{request.body}\"\n",
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap();
    let events = cfg.events.unwrap();
    assert_eq!(events.exchange_or_default(), "shop.events");
    assert_eq!(events.timeout, Duration::from_secs(2));
}

#[test]
fn publish_call_rules_name_the_line() {
    // No [events] section to publish to.
    let src = publish_route("", "  subject = \"orders.created\"\n  body = {}\n");
    one(&src, ErrorKind::Value, "# mode", "no `[events]` section");
    // No subject.
    let src = publish_route(EVENTS, "  body = {}\n");
    one(&src, ErrorKind::Value, "# mode", "needs a `subject`");
    // No body.
    let src = publish_route(EVENTS, "  subject = \"orders.created\"\n");
    one(&src, ErrorKind::Value, "# mode", "needs a `body`");
    // Subjects are literal, dot-separated, without spaces or wildcards.
    for (bad, why) in [
        ("orders.*", "wildcard"),
        ("orders.>", "wildcard"),
        ("orders created", "no spaces"),
        ("", "empty"),
        ("orders..created", "empty token"),
        ("$JS.API.STREAM.DELETE.manifold", "reserves"),
        ("_INBOX.x", "reserves"),
    ] {
        let src = publish_route(
            EVENTS,
            &format!("  subject = \"{bad}\" # subject\n  body = {{}}\n"),
        );
        one(&src, ErrorKind::Value, "# subject", why);
    }
    let long = "a".repeat(256);
    let src = publish_route(
        EVENTS,
        &format!("  subject = \"{long}\" # subject\n  body = {{}}\n"),
    );
    one(&src, ErrorKind::Value, "# subject", "at most 255");
    // Header names become AMQP field names (short strings) on RabbitMQ.
    let src = publish_route(
        EVENTS,
        &format!(
            "  subject = \"orders.created\"\n  body = {{}}\n  headers = {{ x-{long} = \"1\" }} # hdr\n"
        ),
    );
    one(&src, ErrorKind::Value, "# hdr", "at most 255 bytes");
    // An upstream (or any HTTP-only key) would be silently ignored: refused.
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  upstream = \"a\" # up\n",
    );
    one(&src, ErrorKind::Value, "# up", "remove `upstream`");
    for key in [
        "method = \"POST\"",
        "path = \"/x\"",
        "timeout = \"1s\"",
        "query = { a = \"b\" }",
    ] {
        let src = publish_route(
            EVENTS,
            &format!("  subject = \"orders.created\"\n  body = {{}}\n  {key} # key\n"),
        );
        one(
            &src,
            ErrorKind::Value,
            "# key",
            "does not apply to a publish call",
        );
    }
    // `subject` on a call that is not a publish call.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  subject = \"orders.created\" # subject\n");
    one(
        &src,
        ErrorKind::Value,
        "# subject",
        "only applies to mode = \"publish\"",
    );
    // A call that is neither: no upstream.
    let src = format!(
        "{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\" # name\n"
    );
    one(&src, ErrorKind::Value, "# name", "has no `upstream`");
    // An unknown mode lists the three.
    let src = format!("{UPSTREAMS}[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n  mode = \"fire\" # mode\n");
    one(&src, ErrorKind::Value, "# mode", "\"publish\"");
    // Its result is a receipt: another call may order after it, not read it.
    let src = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  [[routes.r.calls]]\n  name = \"reader\" # reader\n  upstream = \"b\"\n  path = \"/{shipped.task_id}\"\n",
    );
    one(
        &src,
        ErrorKind::Value,
        "# reader",
        "which publishes an event",
    );
    let ok = publish_route(
        EVENTS,
        "  subject = \"orders.created\"\n  body = {}\n  [[routes.r.calls]]\n  name = \"later\"\n  upstream = \"b\"\n  after = [\"shipped\"]\n",
    );
    compile("t.toml".as_ref(), &ok).unwrap();
}

#[test]
fn bad_events_sections_are_located() {
    let route = "  subject = \"orders.created\"\n  body = {}\n";
    // Each at the key its message names, else at the section.
    for (section, at, why) in [
        (
            "[events]\nurl = \"nats://127.0.0.1:4222\"\n",
            "[events]",
            "backend",
        ),
        ("[events]\nbackend = \"kafka\"\n", "[events]", "kafka"),
        (
            "[events]\nbackend = \"nats\"\nexchange = \"x\"\n",
            "exchange = ",
            "exchange only applies",
        ),
        (
            "[events]\nbackend = \"rabbitmq\"\nurl = \"nats://h:4222\"\n",
            "url = ",
            "does not suit",
        ),
        (
            "[events]\nbackend = \"nats\"\ntimeout = \"soon\"\n",
            "[events]",
            "soon",
        ),
        (
            "[events]\nbackend = \"nats\"\nsubjekt = \"x\"\n",
            "subjekt = ",
            "subjekt",
        ),
    ] {
        let src = publish_route(section, route);
        one(&src, ErrorKind::Value, at, why);
    }
}

#[test]
fn bad_queue_sections_are_located() {
    let src = format!("{UPSTREAMS}[queue]\nbackend = \"carrier-pigeon\"\n");
    one(&src, ErrorKind::Value, "[queue]", "[queue]");
    // A bound the section's own check refuses: said once, without an error type's prefix.
    // Placed at the key the message names, not at the section's header (the line to change).
    let src = format!("{UPSTREAMS}[queue]\nbackend = \"embedded\"\nmax_tasks = 0\n");
    one(
        &src,
        ErrorKind::Value,
        "max_tasks = 0",
        "[queue]: max_tasks and max_bytes must be at least 1",
    );
    let src = format!("{UPSTREAMS}[queue]\nbackend = \"embedded\"\nstatus_path = \"/a b\"\n");
    one(
        &src,
        ErrorKind::Value,
        "status_path =",
        "[queue]: status_path",
    );
    let src = format!("{UPSTREAMS}[events]\nbackend = \"nats\"\ntimeout = \"0s\"\n");
    one(
        &src,
        ErrorKind::Value,
        "timeout = ",
        "[events]: timeout must be more than 0",
    );
}
