//! The README and docs/ are what users copy: every command in their code blocks must parse, and
//! every TOML block must pass `manifold check`. Without this, a renamed flag or key leaves the
//! docs teaching an error (docs/load.md said `-d` for the request body, which is `--duration`;
//! the body is `-b`).
//!
//! docs/benchmarks.md is a record of runs made with the flags of their day, not instructions,
//! so it is not read.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and docs/*.md but the benchmark record, as (name shown, text).
fn documents() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| !p.ends_with("benchmarks.md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(repo()).unwrap_or(&p).display().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            (name, text)
        })
        .collect()
}

/// A fenced code block: its language tag, the line of its first content line, its text.
struct Block {
    lang: String,
    line: usize,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match (open.take(), line.trim_start().strip_prefix("```")) {
            (None, Some(tag)) => {
                open = Some(Block {
                    lang: tag.trim().to_owned(),
                    line: i + 2,
                    text: String::new(),
                })
            }
            (Some(b), Some(_)) => out.push(b),
            (Some(mut b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    out
}

/// Split a shell command line into words: single and double quotes, backslash escapes in
/// double quotes; enough for the commands the docs show.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        _ => word.push(q),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The arguments after `manifold` in one shell command, if it runs Manifold: `manifold ARGS`
/// or `cargo run --release -- ARGS`; a trailing comment, redirections and a trailing `&` are cut.
fn manifold_args(command: &str) -> Option<Vec<String>> {
    let command = command.trim().trim_start_matches("$ ");
    let rest = command
        .strip_prefix("manifold ")
        .or_else(|| command.strip_prefix("cargo run --release -- "))?;
    let mut args = Vec::new();
    for w in words(rest) {
        let shell = matches!(w.as_str(), "&" | "&&" | ";" | "||");
        if shell || w.starts_with(['#', '>', '<']) || w.starts_with("2>") {
            break;
        }
        args.push(w);
    }
    Some(args)
}

/// The shell commands in `text`, each with its line (counted from `first_line`): lines ending
/// in `\` joined to the next, comment lines skipped, and a line cut at `|`, `&&`, `&`, `;` and
/// `||` into the commands it runs.
fn commands(text: &str, first_line: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut at = first_line;
    for (i, line) in text.lines().enumerate() {
        if joined.is_empty() {
            at = first_line + i;
            if line.trim_start().starts_with('#') {
                continue;
            }
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let line = std::mem::take(&mut joined);
        let mut parts = vec![line.as_str()];
        for sep in [" | ", " || ", " && ", " & ", "; "] {
            parts = parts.into_iter().flat_map(|p| p.split(sep)).collect();
        }
        out.extend(parts.into_iter().map(|p| (at, p.trim().to_owned())));
    }
    out
}

/// Each Manifold command in `text` (from `first_line`), run with `--help` last: clap checks
/// every argument before it and prints help instead of running the command. A failure is
/// written to `failures` with `name` and the line. Returns how many were checked.
fn check_commands(name: &str, text: &str, first_line: usize, failures: &mut Vec<String>) -> usize {
    let mut checked = 0;
    for (line, command) in commands(text, first_line) {
        let Some(args) = manifold_args(&command) else {
            continue;
        };
        let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        checked += 1;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("").to_owned();
            failures.push(format!("{name}:{line}: {args:?}: {first}"));
        }
    }
    checked
}

#[test]
fn every_documented_command_parses() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, doc) in documents() {
        for b in blocks(&doc) {
            if !matches!(b.lang.as_str(), "toml" | "json" | "yaml" | "text") {
                checked += check_commands(&name, &b.text, b.line, &mut failures);
            }
        }
    }
    assert!(checked >= 30, "only {checked} commands found in the docs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The subcommands a `--help` text lists under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    let Some(list) = help.split("Commands:").nth(1) else {
        return Vec::new();
    };
    let list = list.split("Options:").next().unwrap_or("");
    list.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect()
}

/// `--help` teaches by example (`Examples:` under most subcommands): every example must run as
/// written, on every level of subcommand.
#[test]
fn every_example_in_help_parses() {
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "manifold {path:?} --help failed");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let name = format!("manifold {} --help", path.join(" "));
        checked += check_commands(&name, &help, 1, &mut failures);
        for sub in subcommands(&help) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} help texts read");
    assert!(
        checked >= 30,
        "only {checked} examples found in the help texts"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a documented TOML fragment is checked inside: the upstreams, routes and calls the docs'
/// fragments name (the README's profile route, docs/offload.md's checkout with its order,
/// payment and shipping calls). Where a fragment sets a table, its table wins; its calls replace
/// the base's call of the same name.
const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.users]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.orders]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.payment]
endpoints = ["http://127.0.0.1:7002"]
[upstreams.shipping]
endpoints = ["http://127.0.0.1:7003"]
[upstreams.notify]
endpoints = ["http://127.0.0.1:7004"]

[routes.profile]
method = "GET"
path = "/user-profile/{id}"
  [[routes.profile.calls]]
  name = "user"
  upstream = "users"
  path = "/users/{path.id}"

[routes.checkout]
method = "POST"
path = "/checkout"
  [[routes.checkout.calls]]
  name = "order"
  upstream = "orders"
  method = "POST"
  path = "/orders"
  body = "{request.body}"
  [[routes.checkout.calls]]
  name = "payment"
  upstream = "payment"
  method = "POST"
  path = "/payments"
  body = { order_id = "{order.id}" }
  idempotent = true
  [[routes.checkout.calls]]
  name = "shipping"
  upstream = "shipping"
  method = "POST"
  path = "/shipping/labels"
  body = { order_id = "{order.id}" }
  mode = "async"
"#;

/// The table at `key` of `t`, made empty when absent.
fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    match t
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(inner) => inner,
        other => panic!("{key} is not a table: {other}"),
    }
}

fn merge(base: &mut toml::Table, fragment: toml::Table) {
    for (key, value) in fragment {
        match (key.as_str(), value) {
            ("routes", toml::Value::Table(routes)) => {
                let all = table(base, "routes");
                for (name, route) in routes {
                    let toml::Value::Table(route) = route else {
                        panic!("routes.{name} is not a table")
                    };
                    merge_route(table(all, &name), route);
                }
            }
            ("upstreams", toml::Value::Table(ups)) => table(base, "upstreams").extend(ups),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn merge_route(into: &mut toml::Table, route: toml::Table) {
    for (key, value) in route {
        let toml::Value::Array(calls) = &value else {
            into.insert(key, value);
            continue;
        };
        if key != "calls" {
            into.insert(key, value);
            continue;
        }
        let mine = into
            .entry("calls")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        let toml::Value::Array(mine) = mine else {
            unreachable!("calls is an array")
        };
        for call in calls {
            let name = call.get("name").cloned();
            match mine.iter_mut().find(|c| c.get("name") == name.as_ref()) {
                Some(slot) => *slot = call.clone(),
                None => mine.push(call.clone()),
            }
        }
    }
}

/// Point every certificate and key path at a real file (`cert`, `key`): the docs show where a
/// deployment keeps them (`/etc/manifold/tls/…`), which this machine has not.
fn real_pem_paths(value: &mut toml::Value, cert: &Path, key: &Path) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let file = match k.as_str() {
                    "cert" | "ca" | "client_cert" => Some(cert),
                    "key" | "client_key" => Some(key),
                    _ => None,
                };
                match (file, v) {
                    (Some(f), toml::Value::String(s)) => *s = f.display().to_string(),
                    (_, v) => real_pem_paths(v, cert, key),
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| real_pem_paths(v, cert, key)),
        _ => {}
    }
}

#[test]
fn every_documented_config_fragment_passes_check() {
    let exe = env!("CARGO_BIN_EXE_manifold");
    let dir = std::env::temp_dir().join(format!("manifold-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();

    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, doc) in documents() {
        // docs/sim.md's blocks configure the simulator (the next test).
        if name.ends_with("sim.md") {
            continue;
        }
        for b in blocks(&doc).into_iter().filter(|b| b.lang == "toml") {
            let fragment: toml::Table = match toml::from_str(&b.text) {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{name}:{}: not TOML: {e}", b.line));
                    continue;
                }
            };
            let mut config: toml::Table = toml::from_str(BASE).unwrap();
            merge(&mut config, fragment);
            let mut config = toml::Value::Table(config);
            real_pem_paths(&mut config, &cert, &key);
            let file = dir.join("manifold.toml");
            std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
            let out = Command::new(exe)
                .args(["check", "-c"])
                .arg(&file)
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{name}:{}: {}",
                    b.line,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        checked >= 15,
        "only {checked} TOML blocks found in the docs"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// docs/sim.md's TOML blocks configure `manifold sim`: each must parse and validate as a
/// simulator config. A fragment that shows only a service's replicas gets one endpoint, which
/// the docs leave out.
#[test]
fn every_documented_simulator_block_validates() {
    let (_, doc) = documents()
        .into_iter()
        .find(|(name, _)| name.ends_with("sim.md"))
        .expect("docs/sim.md");
    let mut checked = 0;
    for b in blocks(&doc).into_iter().filter(|b| b.lang == "toml") {
        let mut sim: toml::Table = toml::from_str(&b.text)
            .unwrap_or_else(|e| panic!("docs/sim.md:{}: not TOML: {e}", b.line));
        if let Some(toml::Value::Table(services)) = sim.get_mut("services") {
            for (_, service) in services.iter_mut() {
                if let toml::Value::Table(service) = service {
                    service.entry("endpoints").or_insert_with(|| {
                        let endpoint: toml::Table = toml::from_str("path = \"/\"").unwrap();
                        toml::Value::Array(vec![toml::Value::Table(endpoint)])
                    });
                }
            }
        }
        let text = toml::to_string(&sim).unwrap();
        if let Err(e) = manifold_sim::SimConfig::from_toml(&text) {
            panic!("docs/sim.md:{}: {e}\n{text}", b.line);
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} TOML blocks in docs/sim.md");
}

#[test]
fn words_split_as_a_shell_would() {
    assert_eq!(
        words(r#"load 'http://x/{key}' -b '{"a":[1]}' -H "X-A: b\"c" plain"#),
        [
            "load",
            "http://x/{key}",
            "-b",
            r#"{"a":[1]}"#,
            "-H",
            "X-A: b\"c",
            "plain"
        ]
    );
    assert_eq!(
        manifold_args("manifold check -c m.toml   # validate"),
        Some(vec![
            "check".to_owned(),
            "-c".to_owned(),
            "m.toml".to_owned()
        ])
    );
    assert_eq!(
        manifold_args("manifold schema > manifold.schema.json"),
        Some(vec!["schema".to_owned()])
    );
    assert_eq!(
        manifold_args("manifold serve -c m.toml & sleep 1"),
        Some(vec![
            "serve".to_owned(),
            "-c".to_owned(),
            "m.toml".to_owned()
        ])
    );
    assert_eq!(manifold_args("curl -s localhost:9901/traces"), None);
}
