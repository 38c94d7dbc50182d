//! `promtool check metrics` (the Prometheus project's own checker) on a scrape: the one runner
//! for manifold-telemetry's tests and the gateway's. Std-only on purpose: the gateway's test
//! crate includes this file by `#[path]`, so the rule lives here once without a test-only module
//! or feature in the shipped library.

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether `promtool` runs here.
pub(crate) fn present() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a check that needs `promtool` can run. Missing: a loud skip on a developer's machine,
/// a failure under `CI=true` (where `.ci/run` installs it).
pub(crate) fn available() -> bool {
    if present() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "promtool is missing under CI=true: .ci/run must install it"
    );
    eprintln!("\n!!! SKIPPED: promtool (Debian package prometheus) is not installed; this check FAILS under CI=true. Install it as .ci/run does.\n");
    false
}

/// What `promtool check metrics` made of an exposition.
pub(crate) struct Checked {
    /// It exited 0.
    pub(crate) exit_ok: bool,
    /// Its stdout and stderr: the problems it found, lint warnings included.
    pub(crate) said: String,
}

/// Run `promtool check metrics` on `text` (fed on stdin).
pub(crate) fn check_metrics(text: &str) -> Checked {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ends");
    Checked {
        exit_ok: out.status.success(),
        said: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Fail the test unless promtool accepts `text` without a word: a lint warning (a counter
/// without `_total`, say) fails it too.
pub(crate) fn assert_passes(text: &str) {
    let checked = check_metrics(text);
    assert!(
        checked.exit_ok && checked.said.trim().is_empty(),
        "promtool: {}\n---\n{text}",
        checked.said
    );
}
