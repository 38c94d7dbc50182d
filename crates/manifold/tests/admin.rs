//! The admin listener as an operator meets it: `serve` refuses to expose it without a token,
//! and `manifold cache` / `manifold queue` send the token (`--token-file` or
//! `$MANIFOLD_ADMIN_TOKEN`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "cli-admin-token-0123456789";

fn manifold() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_manifold"));
    c.env_remove("MANIFOLD_ADMIN_TOKEN");
    c
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("manifold-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait for `child` to exit, killing it (and failing) if it is still running after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let step = Duration::from_millis(50);
    for _ in 0..limit.as_millis() / step.as_millis() {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(step);
    }
    child.kill().ok();
    child.wait().ok();
    panic!("still running after {limit:?}");
}

/// Fault 7: `--admin 0.0.0.0:…` bound without a word; now the gateway refuses to start.
#[test]
fn serve_refuses_a_non_loopback_admin_without_a_token() {
    let config = format!("{}/../../examples/shop.toml", env!("CARGO_MANIFEST_DIR"));
    let mut child = manifold()
        .args([
            "serve",
            "-c",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(20));
    assert!(!status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("server.admin_token"),
        "{stderr}"
    );
}

/// Fault 7: the CLI clients must carry the token once the gateway requires one.
#[test]
fn cache_purge_sends_the_admin_token() {
    let dir = temp_dir("token");
    let config = dir.join("m.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nadmin_token = \"{TOKEN}\"\n[upstreams.a]\nendpoints = [\"http://127.0.0.1:1\"]\n[routes.r]\npath = \"/r\"\nproxy = \"a\"\n"
        ),
    )
    .unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut child = manifold()
        .args(["serve", "-c", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let admin = line
        .split("(admin ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    let purge = || {
        let mut c = manifold();
        c.args(["cache", "purge", "--prefix", "", "--admin", &admin]);
        c
    };

    let out = purge().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 401"), "{stderr}");

    let out = purge()
        .env("MANIFOLD_ADMIN_TOKEN", "not-the-token-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());

    let out = purge().env("MANIFOLD_ADMIN_TOKEN", TOKEN).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 entries"));

    let out = purge()
        .args(["--token-file", token_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A prefix too long for a request line: the gateway answered 414 with no body, which the
    // CLI printed as "answered 414: " and nothing else (noticed by rev-cli). It is refused
    // before it is sent, without echoing it.
    let long = "k".repeat(100_000);
    let out = manifold()
        .args(["cache", "purge", "--prefix", &long, "--admin", &admin])
        .env("MANIFOLD_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("100000 bytes") && stderr.contains("shorter prefix"),
        "{stderr}"
    );
    assert!(stderr.len() < 500, "{stderr}");

    // `manifold queue` carries it too: past the token check, this gateway has no queue (404).
    let out = manifold()
        .args(["queue", "dead", "--admin", &admin])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 401"));
    let out = manifold()
        .args(["queue", "dead", "--admin", &admin, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 404"), "{stderr}");

    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
}
