//! What a careless user or a hostile peer does to the command-line tools (found by rev-cli):
//! each case must end with a clear error and exit status 1, never a panic, a hang or a run of
//! minutes whose result is then thrown away.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

fn manifold() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_manifold"));
    c.env_remove("RUST_LOG").env_remove("MANIFOLD_ADMIN_TOKEN");
    c
}

/// Wait for `child` at most `bound` (a bound on a hang, not a speed assertion), killing it past
/// that; its exit status, stdout and stderr.
fn finish(mut child: std::process::Child, bound: Duration) -> (Option<i32>, String, String) {
    let tick = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        waited += tick;
        if waited > bound {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(tick);
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.and_then(|s| s.code()), out, err)
}

/// `--report` onto a path that cannot be written used to fail after the whole demo (minutes),
/// its table already printed.
#[test]
fn demo_refuses_an_unwritable_report_path_before_the_run() {
    let child = manifold()
        .args(["demo", "--quick", "--report", "/nonexistent-dir/demo.html"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, out, err) = finish(child, Duration::from_secs(300));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.is_empty(),
        "the demo ran before the path was checked: {out}"
    );
    assert!(
        err.contains("cannot write /nonexistent-dir/demo.html"),
        "{err}"
    );
}

/// `--html` onto a path that cannot be written is refused before the traces are read (here: a
/// standard input that never ends); a new file is not left behind when the analysis fails.
#[test]
fn analyze_refuses_an_unwritable_html_path_before_reading() {
    let mut child = manifold()
        .args(["analyze", "-", "--html", "/nonexistent-dir/a.html"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let (code, out, err) = finish(child, Duration::from_secs(60));
    drop(stdin);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("cannot write /nonexistent-dir/a.html"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("manifold-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("new.html");
    let out = manifold()
        .args(["analyze", "-", "--html"])
        .arg(&html)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!html.exists(), "a failed analysis left {}", html.display());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An admin address where something answers a chunked body cut inside a UTF-8 character:
/// `manifold queue` and `manifold cache purge` panicked on a string slice.
#[test]
fn admin_commands_do_not_panic_on_a_garbled_answer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\u{e9}\r\n0\r\n\r\n"
                    .as_bytes(),
            );
        }
    });
    for args in [
        vec!["queue", "status", "x", "--admin", &addr],
        vec!["cache", "purge", "--prefix", "", "--admin", &addr],
    ] {
        let out = manifold().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(&format!("admin listener at {addr}")), "{err}");
    }
    server.join().unwrap();
}

/// `manifold reload --json` printed nothing at all for a 422 whose body is not JSON (it still
/// exited 1), so a script saw a failure with no reason (noticed by rev-cli).
#[test]
fn reload_json_says_why_when_a_refusal_is_not_json() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 11\r\n\r\nnot json!!\n",
        );
    });
    let out = manifold()
        .args(["reload", "--json", "--admin", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not reload (422)") && err.contains("not json!!"),
        "{err}"
    );
    server.join().unwrap();
}

/// An empty task id was sent as is (`GET /queue/status/`); clap refuses it now, naming the
/// argument, before anything is asked (noticed by rev-cli).
#[test]
fn queue_commands_refuse_an_empty_task_id() {
    for args in [
        vec!["queue", "status", ""],
        vec!["queue", "dead", "--id", ""],
        vec!["queue", "replay", "--id", ""],
        vec!["queue", "purge", "--id", ""],
    ] {
        let out = manifold()
            .args(&args)
            .args(["--admin", "127.0.0.1:9"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("a value is required") || err.contains("empty"),
            "{args:?}: {err}"
        );
    }
}

/// `manifold load --body-file /dev/zero` read until memory ran out.
#[test]
fn load_refuses_a_body_file_that_never_ends() {
    let child = manifold()
        .args(["load", "http://127.0.0.1:9/", "-r", "1", "-n", "1"])
        .args(["--body-file", "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, out, err) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("the body file /dev/zero is larger than 16 MiB"),
        "{err}"
    );
}

/// `manifold init -o DIR` said "already exists; pass --force to replace it", and with --force
/// "Is a directory (os error 21)".
#[test]
fn init_onto_a_directory_says_it_is_one() {
    let dir = std::env::temp_dir();
    for force in [false, true] {
        let mut c = manifold();
        c.arg("init").arg("-o").arg(&dir);
        if force {
            c.arg("--force");
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{} is a directory", dir.display())),
            "--force {force}: {err}"
        );
        assert!(!err.contains("--force to replace"), "{err}");
    }
}

/// `manifold bench compose --rates 1e30` and `--duration 0s` were refused by the load generator
/// only at the first measurement, after the upstreams and gateways had started.
#[test]
fn bench_refuses_absurd_rates_and_durations_before_its_setup() {
    for (flag, value, said) in [
        (
            "--rates",
            "1e30",
            "--rates must be above 0 and at most 1000000",
        ),
        ("--rates", "100,inf", "--rates must be above 0"),
        (
            "--duration",
            "0s",
            "--duration must be above 0 and at most 7days",
        ),
        (
            "--duration",
            "100000000000000s",
            "--duration must be above 0",
        ),
    ] {
        let out = manifold()
            .args(["bench", "compose", "--quick", "--no-peers", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(err.contains(said), "{flag} {value}: {err}");
        assert!(!err.contains("measuring"), "{flag} {value}: {err}");
    }
}
