//! `manifold schema`: the JSON Schema derived from the parser's structs accepts every config we
//! ship (each example, the `manifold init` starter) and refuses what the parser refuses, checked
//! with a real validator on the TOML read as JSON — what taplo does in an editor.

use std::path::{Path, PathBuf};

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&manifold_config::json_schema()).expect("the schema is valid")
}

/// TOML text as the JSON value an editor validates against the schema.
fn as_json(text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(text).expect("TOML");
    serde_json::to_value(value).expect("TOML values are JSON values")
}

fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    v.iter_errors(&as_json(text))
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn compiles(text: &str) -> bool {
    manifold_config::compile(Path::new("test.toml"), text).is_ok()
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        // The simulator's config (`manifold sim -c`), not a gateway config.
        .filter(|p| p.file_name().is_some_and(|n| n != "sim.toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_and_the_starter_config_pass_the_schema_and_the_parser() {
    let v = validator();
    let files = examples();
    assert!(files.len() >= 8, "examples/ went missing: {files:?}");
    // The starter's hardening lines, uncommented, are valid too (they teach by example).
    let hardened: String = manifold_config::STARTER_CONFIG
        .lines()
        .map(|l| {
            let keys = [
                "# error_detail",
                "# trusted_proxies",
                "# [telemetry]",
                "# sample_ratio",
                "# parent_sampled",
            ];
            match keys.iter().find(|k| l.starts_with(*k)) {
                Some(_) => format!("{}\n", &l[2..]),
                None => format!("{l}\n"),
            }
        })
        .collect();
    assert!(hardened.contains("\nparent_sampled = "), "{hardened}");
    let mut checked = vec![
        (
            "manifold init".to_owned(),
            manifold_config::STARTER_CONFIG.to_owned(),
        ),
        (
            "manifold init, hardening lines uncommented".to_owned(),
            hardened,
        ),
    ];
    for f in files {
        checked.push((
            f.display().to_string(),
            std::fs::read_to_string(&f).unwrap(),
        ));
    }
    for (name, text) in &checked {
        let errors = schema_errors(&v, text);
        assert!(errors.is_empty(), "{name} fails the schema: {errors:#?}");
        if let Err(e) = manifold_config::compile(Path::new(name), text) {
            panic!("{name} fails the parser: {e}");
        }
    }
}

#[test]
fn the_schema_describes_every_section_and_refuses_unknown_keys() {
    let schema = manifold_config::json_schema();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{schema:#}"
    );
    assert_eq!(schema["additionalProperties"], false);
    for section in [
        "server",
        "upstreams",
        "routes",
        "cache",
        "queue",
        "events",
        "telemetry",
    ] {
        assert!(
            schema["properties"].get(section).is_some(),
            "no [{section}] in the schema: {schema:#}"
        );
    }
}

/// Each of these the parser refuses, and so must the schema: an editor that stays quiet about
/// them would send the user to `manifold check` for what it could have underlined.
#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let v = validator();
    let base = "[upstreams.a]\nendpoints = [\"http://127.0.0.1:7001\"]\n\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n";
    let hostile = [
        ("a typo at the top", format!("{base}[sever]\nlisten = \"127.0.0.1:1\"\n")),
        ("a typo in [server]", format!("[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n{base}")),
        ("a duration that is no duration", format!("[server]\ndrain_delay = \"soon\"\n{base}")),
        ("a duration as a bare number", format!("[server]\ndrain_timeout = 30\n{base}")),
        ("a number as a string", format!("[server]\nmax_connections = \"many\"\n{base}")),
        ("a negative count", format!("[server]\nmax_connections = -1\n{base}")),
        ("a concurrency that is neither", format!("[server]\nconcurrency = \"lots\"\n{base}")),
        ("a concurrency of zero", format!("[server]\nconcurrency = 0\n{base}")),
        ("a queue key that does not exist", format!("[queue]\nbackend = \"nats\"\nsubject = \"x\"\n{base}")),
        ("a queue backend that does not exist", format!("[queue]\nbackend = \"kafka\"\n{base}")),
        ("a queue duration that is no duration", format!("[queue]\nlease_timeout = \"long\"\n{base}")),
        ("events without a backend", format!("[events]\nurl = \"nats://127.0.0.1:4222\"\n{base}")),
        ("a retry on a 4xx", format!("{base}[upstreams.b]\nendpoints = [\"http://127.0.0.1:1\"]\nretry = {{ on = [\"404\"] }}\n")),
        ("a route without a path", "[routes.r]\nmethod = \"GET\"\n".to_owned()),
        ("a call without a name", format!("{base}  [[routes.r.calls]]\n  upstream = \"a\"\n")),
        ("endpoints as one string", "[upstreams.a]\nendpoints = \"http://127.0.0.1:7001\"\n".to_owned()),
        ("an unknown key in a call", format!("{base}  shell = \"rm -rf /\"\n")),
    ];
    for (what, text) in &hostile {
        assert!(
            !compiles(text),
            "{what}: the parser accepts it, so this case tests nothing:\n{text}"
        );
        assert!(
            !schema_errors(&v, text).is_empty(),
            "{what}: the parser refuses it, the schema accepts it:\n{text}"
        );
    }
}

/// The fields the parser reads loosely (a string or a number) and the duration pattern must not
/// make an editor flag a valid config.
#[test]
fn the_schema_accepts_every_form_the_parser_accepts() {
    let v = validator();
    let base = "[upstreams.a]\nendpoints = [\"http://127.0.0.1:7001\"]\n\n[routes.r]\npath = \"/r\"\n  [[routes.r.calls]]\n  name = \"x\"\n  upstream = \"a\"\n";
    let valid = [
        format!("[server]\nconcurrency = \"adaptive\"\n{base}"),
        format!("[server]\nconcurrency = 64\n{base}"),
        format!("[server]\ndrain_delay = \"0s\"\ndrain_timeout = \"1m 30s\"\nh2_idle_timeout = \"2 minutes\"\n{base}"),
        format!("{base}[upstreams.b]\nendpoints = [\"http://127.0.0.1:1\"]\nretry = {{ on = [\"connect\", \"reset\", \"timeout\", \"503\", 502] }}\n"),
        format!("[queue]\nbackend = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"manifold\"\nlease_timeout = \"45s\"\n{base}"),
        format!("[queue]\nbackend = \"rabbitmq\"\nupstream_concurrency = {{ a = 4 }}\n{base}"),
        format!("[events]\nbackend = \"nats\"\ntimeout = \"2s\"\n{base}"),
        format!("[cache]\nredis = \"redis://127.0.0.1:6379\"\nredis_timeout = \"50ms\"\n{base}"),
        format!("{base}  body = {{ a = [1, 2.5, true, \"{{request.body.x}}\"], b = {{ c = \"d\" }} }}\n"),
    ];
    for text in &valid {
        if let Err(e) = manifold_config::compile(Path::new("test.toml"), text) {
            panic!("the parser refuses it, so this case tests nothing: {e}\n{text}");
        }
        let errors = schema_errors(&v, text);
        assert!(
            errors.is_empty(),
            "the schema refuses a valid config: {errors:#?}\n{text}"
        );
    }
}
