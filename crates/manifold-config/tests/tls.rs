//! TLS keys: `[server] tls`, `https://` endpoints and their `ca` / `client_cert` /
//! `client_key`. Files are read at compile time, relative to the config file, and every bad
//! one is refused at the key that names it.

use manifold_config::{compile, describe, ErrorKind};
use std::path::PathBuf;

/// A directory per test with a config file path in it.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("manifold-config-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.0.join("manifold.toml")
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// A self-signed pair as `NAME.pem` / `NAME.key`.
    fn pair(&self, name: &str) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        self.write(&format!("{name}.pem"), &c.cert.pem());
        self.write(&format!("{name}.key"), &c.signing_key.serialize_pem());
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The errors of `src` (compiled as `dir`'s config file), with the line of `needle` in `src`.
fn errors_at(dir: &Dir, src: &str, needle: &str) -> Vec<String> {
    let errs = match compile(&dir.config(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.errors,
    };
    let line = src
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in source"))
        + 1;
    errs.iter()
        .filter(|e| e.kind == ErrorKind::Value && e.line == line)
        .map(|e| e.message.clone())
        .collect()
}

fn assert_error(dir: &Dir, src: &str, needle: &str, parts: &[&str]) {
    let errs = errors_at(dir, src, needle);
    assert!(
        errs.iter().any(|m| parts.iter().all(|p| m.contains(p))),
        "wanted an error at {needle:?} with {parts:?}, got {errs:#?}"
    );
}

#[test]
fn server_tls_reads_its_files_relative_to_the_config_and_may_stand_alone() {
    let dir = Dir::new("server");
    dir.pair("site");
    let tls = "tls = { listen = \"0.0.0.0:8443\", cert = \"site.pem\", key = \"site.key\" }";
    // Beside the plaintext listener.
    let c = compile(
        &dir.config(),
        &format!("[server]\nlisten = \"127.0.0.1:8080\"\n{tls}\n"),
    )
    .unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:8080".parse().unwrap()));
    let t = c.server.tls.as_ref().expect("tls");
    assert_eq!(t.listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!(t.cert, dir.0.join("site.pem"));
    assert_eq!(t.key, dir.0.join("site.key"));
    // `manifold check` shows it.
    let text = describe(&c);
    assert!(text.contains("tls: listen 0.0.0.0:8443"), "{text}");
    assert!(text.contains(&dir.path("site.pem")), "{text}");
    // `listen` left out: TLS only.
    let c = compile(&dir.config(), &format!("[server]\n{tls}\n")).unwrap();
    assert_eq!(c.server.listen, None);
    assert!(describe(&c).contains("listen off (TLS only)"));
    // No `tls`: the plaintext default, as before.
    let c = compile(&dir.config(), "[server]\n").unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:8080".parse().unwrap()));
}

#[test]
fn bad_server_tls_files_are_refused_naming_the_file() {
    let dir = Dir::new("server-bad");
    dir.pair("a");
    dir.pair("b");
    dir.write(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    );
    dir.write("empty.pem", "");
    let src = |cert: &str, key: &str| {
        format!("[server]\ntls = {{ listen = \"127.0.0.1:8443\",\n  cert = \"{cert}\",\n  key = \"{key}\" }}\n")
    };
    assert_error(
        &dir,
        &src("nope.pem", "a.key"),
        "cert =",
        &["`server.tls.cert`", &dir.path("nope.pem"), "cannot read"],
    );
    assert_error(
        &dir,
        &src("junk.pem", "a.key"),
        "cert =",
        &["`server.tls.cert`", &dir.path("junk.pem"), "not valid PEM"],
    );
    assert_error(
        &dir,
        &src("empty.pem", "a.key"),
        "cert =",
        &["`server.tls.cert`", "holds no PEM CERTIFICATE"],
    );
    // A directory (or a FIFO, a device) is not read: "not a regular file".
    std::fs::create_dir_all(dir.0.join("certs.d")).unwrap();
    assert_error(
        &dir,
        &src("certs.d", "a.key"),
        "cert =",
        &["`server.tls.cert`", "not a regular file"],
    );
    // A certificate where the key should be: no PRIVATE KEY block.
    assert_error(
        &dir,
        &src("a.pem", "a.pem"),
        "key =",
        &[
            "`server.tls.key`",
            &dir.path("a.pem"),
            "holds no PEM PRIVATE KEY",
        ],
    );
    assert_error(
        &dir,
        &src("a.pem", "b.key"),
        "key =",
        &[
            "`server.tls.key`",
            &dir.path("b.key"),
            "is not the key of the certificate in `server.tls.cert`",
        ],
    );
    // The address, and a clash with the plaintext listener.
    let bad_addr = "[server]\ntls = { listen = \"8443\", cert = \"a.pem\", key = \"a.key\" }\n";
    assert_error(
        &dir,
        bad_addr,
        "tls =",
        &["`server.tls.listen`", "is not an address"],
    );
    let clash = "[server]\nlisten = \"127.0.0.1:8443\"\ntls = { listen = \"127.0.0.1:8443\", cert = \"a.pem\", key = \"a.key\" }\n";
    assert_error(&dir, clash, "tls =", &["must differ from `server.listen`"]);
    // An unknown key inside `tls` is a typo, not ignored.
    let typo = "[server]\ntls = { listen = \"127.0.0.1:8443\", cert = \"a.pem\", key = \"a.key\", ca = \"x\" }\n";
    assert!(compile(&dir.config(), typo).is_err());
}

fn upstream(endpoints: &str, keys: &str) -> String {
    format!("[upstreams.pay]\nendpoints = [{endpoints}]\n{keys}\n[routes.p]\npath = \"/p\"\nproxy = \"pay\"\n")
}

#[test]
fn https_endpoints_are_accepted_with_system_roots_or_a_private_ca() {
    let dir = Dir::new("upstream");
    dir.pair("ca");
    dir.pair("me");
    let c = compile(
        &dir.config(),
        &upstream(
            "\"https://payments.internal\", \"http://127.0.0.1:7002\"",
            "",
        ),
    )
    .unwrap();
    let up = &c.upstreams[0];
    assert_eq!(up.endpoints[0].scheme, "https");
    assert_eq!(up.endpoints[0].authority, "payments.internal");
    assert_eq!(up.endpoints[1].scheme, "http");
    assert!(up.tls.ca.is_none() && up.tls.client.is_none());
    assert!(describe(&c).contains("tls: system roots; no client certificate; ALPN h2, http/1.1"));
    let keys = "ca = \"ca.pem\"\nclient_cert = \"me.pem\"\nclient_key = \"me.key\"\nhttp2 = true";
    let c = compile(
        &dir.config(),
        &upstream("\"https://payments.internal:7012\"", keys),
    )
    .unwrap();
    let up = &c.upstreams[0];
    assert_eq!(up.tls.ca, Some(dir.0.join("ca.pem")));
    let id = up.tls.client.as_ref().expect("a client identity");
    assert_eq!(
        (id.cert.clone(), id.key.clone()),
        (dir.0.join("me.pem"), dir.0.join("me.key"))
    );
    let text = describe(&c);
    assert!(
        text.contains(&format!("ca {}", dir.path("ca.pem"))),
        "{text}"
    );
    assert!(text.contains("ALPN h2\n"), "{text}");
}

#[test]
fn bad_upstream_tls_keys_are_refused_where_they_are_written() {
    let dir = Dir::new("upstream-bad");
    dir.pair("me");
    dir.pair("other");
    dir.write("junk.pem", "not pem at all");
    let https = "\"https://payments.internal\"";
    assert_error(
        &dir,
        &upstream(https, "ca = \"junk.pem\""),
        "ca =",
        &[
            "`upstreams.pay.ca`",
            &dir.path("junk.pem"),
            "holds no PEM CERTIFICATE",
        ],
    );
    assert_error(
        &dir,
        &upstream(https, "ca = \"missing.pem\""),
        "ca =",
        &["`upstreams.pay.ca`", "cannot read"],
    );
    assert_error(
        &dir,
        &upstream(https, "client_cert = \"me.pem\""),
        "client_cert",
        &["`upstreams.pay.client_cert` needs `upstreams.pay.client_key`"],
    );
    assert_error(
        &dir,
        &upstream(https, "client_key = \"me.key\""),
        "client_key",
        &["needs `upstreams.pay.client_cert`"],
    );
    let mismatch = "client_cert = \"me.pem\"\nclient_key = \"other.key\"";
    assert_error(
        &dir,
        &upstream(https, mismatch),
        "client_key",
        &[
            "`upstreams.pay.client_key`",
            &dir.path("other.key"),
            "is not the key of the certificate in `upstreams.pay.client_cert`",
        ],
    );
    // On an upstream without https endpoints they would do nothing: refused.
    assert_error(
        &dir,
        &upstream("\"http://127.0.0.1:7002\"", "ca = \"me.pem\""),
        "ca =",
        &["applies to https:// endpoints"],
    );
    // Other schemes are still refused.
    assert_error(
        &dir,
        &upstream("\"ftp://x\"", ""),
        "endpoints",
        &["has scheme `ftp`; write http or https"],
    );
}

/// A self-signed pair as `NAME.pem` / `NAME.key`, valid from `from` to `until` (years).
fn dated_pair(dir: &Dir, name: &str, from: i32, until: i32) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    dir.write(&format!("{name}.pem"), &cert.pem());
    dir.write(&format!("{name}.key"), &key.serialize_pem());
}

/// An expired or not-yet-valid certificate compiles (it is the file the operator has) with a
/// warning at its key, which `manifold check`, `serve` and a reload show.
#[test]
fn a_certificate_outside_its_validity_is_a_warning_at_its_key() {
    let dir = Dir::new("validity");
    dated_pair(&dir, "old", 2020, 2021);
    dated_pair(&dir, "future", 2090, 2091);
    dated_pair(&dir, "now", 2020, 2090);
    let server = |name: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\
             tls = {{ listen = \"0.0.0.0:8443\", cert = \"{name}.pem\", key = \"{name}.key\" }}\n"
        )
    };
    let warnings = |src: &str| -> Vec<(usize, String)> {
        compile(&dir.config(), src)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .warnings
            .into_iter()
            .map(|w| (w.line, w.message))
            .collect()
    };
    let w = warnings(&server("old"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, 3, "at the tls line: {w:?}");
    assert!(
        w[0].1.contains("`server.tls.cert`")
            && w[0].1.contains("old.pem")
            && w[0].1.contains("expired on")
            && w[0].1.contains("2021"),
        "{w:?}"
    );
    let w = warnings(&server("future"));
    assert!(
        w.len() == 1 && w[0].1.contains("not valid before") && w[0].1.contains("2090"),
        "{w:?}"
    );
    assert!(warnings(&server("now")).is_empty());
    // An upstream's client certificate too.
    let src = upstream(
        "\"https://a.example\"",
        "client_cert = \"old.pem\"\nclient_key = \"old.key\"",
    );
    let w = warnings(&src);
    assert!(
        w.len() == 1
            && w[0].1.contains("`upstreams.pay.client_cert`")
            && w[0].1.contains("expired"),
        "{w:?}"
    );
}

/// A certificate block whose DER is not a certificate (truncated, garbage) is refused or
/// warned about at its key, never a panic of the validity check.
#[test]
fn a_certificate_block_of_garbage_is_refused_not_a_panic() {
    let dir = Dir::new("garbage");
    dir.pair("site");
    let good = std::fs::read_to_string(dir.0.join("site.pem")).unwrap();
    let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
    for (i, der) in [&body[..body.len() / 2], "AAAA", "MIIB"].iter().enumerate() {
        dir.write(
            "bad.pem",
            &format!("-----BEGIN CERTIFICATE-----\n{der}\n-----END CERTIFICATE-----\n"),
        );
        let src = "[server]\ntls = { listen = \"0.0.0.0:8443\", cert = \"bad.pem\", key = \"site.key\" }\n";
        match compile(&dir.config(), src) {
            Ok(c) => assert!(!c.warnings.is_empty() || c.server.tls.is_some(), "case {i}"),
            Err(e) => assert!(
                e.errors.iter().any(|e| e.message.contains("server.tls")),
                "case {i}: {e:?}"
            ),
        }
    }
}
