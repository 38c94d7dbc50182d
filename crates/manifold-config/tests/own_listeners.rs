//! An upstream endpoint that is one of the gateway's own listeners is a warning with its
//! location: calls to the client listener come back through the gateway (a route reaching
//! itself loops), and a route to the admin listener publishes the admin API.

use manifold_config::compile;

use crate::support::line_of;

fn warnings(server: &str, endpoint: &str) -> Vec<manifold_config::ConfigWarning> {
    let src = format!(
        "[server]\n{server}\n[upstreams.u]\nendpoints = [\"http://127.0.0.1:7001\", \"{endpoint}\"]\n[routes.r]\npath = \"/r/{{*rest}}\"\nproxy = \"u\"\n"
    );
    let cfg = compile("t.toml".as_ref(), &src).unwrap_or_else(|e| panic!("{src}\n{e}"));
    for w in &cfg.warnings {
        assert_eq!(w.line, line_of(&src, "endpoints ="), "{w}");
    }
    cfg.warnings
}

#[test]
fn an_endpoint_that_is_the_gateway_itself_is_a_warning() {
    for (server, endpoint, key) in [
        (
            "listen = \"127.0.0.1:8080\"",
            "http://127.0.0.1:8080",
            "server.listen",
        ),
        (
            "listen = \"0.0.0.0:8080\"",
            "http://localhost:8080/api",
            "server.listen",
        ),
        (
            "listen = \"0.0.0.0:8080\"",
            "http://127.0.0.5:8080",
            "server.listen",
        ),
        (
            "listen = \"127.0.0.1:80\"",
            "http://LOCALHOST",
            "server.listen",
        ),
        (
            "listen = \"127.0.0.1:8080\"",
            "http://0.0.0.0:8080",
            "server.listen",
        ),
        (
            "listen = \"10.1.2.3:8080\"",
            "http://10.1.2.3:8080",
            "server.listen",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "http://127.0.0.1:9901",
            "server.admin",
        ),
        (
            "listen = \"[::]:8443\"",
            "https://[::1]:8443",
            "server.listen",
        ),
        // An IPv4-mapped IPv6 address is the IPv4 one.
        (
            "listen = \"127.0.0.1:8080\"",
            "http://[::ffff:127.0.0.1]:8080",
            "server.listen",
        ),
        (
            "listen = \"[::ffff:127.0.0.1]:8080\"",
            "http://localhost:8080",
            "server.listen",
        ),
    ] {
        let w = warnings(server, endpoint);
        assert_eq!(w.len(), 1, "{server} / {endpoint}: {w:?}");
        let m = &w[0].message;
        assert!(
            m.contains("upstream `u`") && m.contains(endpoint) && m.contains(key),
            "{server} / {endpoint}: {m}"
        );
        let why = if key == "server.admin" {
            "admin API"
        } else {
            "loops"
        };
        assert!(m.contains(why), "{m}");
    }
}

#[test]
fn another_port_or_host_is_no_warning() {
    for (server, endpoint) in [
        ("listen = \"127.0.0.1:8080\"", "http://127.0.0.1:8081"),
        ("listen = \"127.0.0.1:8080\"", "https://127.0.0.1"),
        ("listen = \"127.0.0.1:8080\"", "http://localhost"),
        // Another host's port 8080, and a loopback address this listener does not take.
        ("listen = \"0.0.0.0:8080\"", "http://10.1.2.3:8080"),
        ("listen = \"127.0.0.1:8080\"", "http://127.0.0.2:8080"),
        // A name is not looked up.
        ("listen = \"0.0.0.0:8080\"", "http://orders.internal:8080"),
        // A listener on port 0 takes a port of the system's choosing.
        ("listen = \"127.0.0.1:0\"", "http://127.0.0.1:0"),
    ] {
        assert!(
            warnings(server, endpoint).is_empty(),
            "{server} / {endpoint}"
        );
    }
}
