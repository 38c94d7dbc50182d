//! What a reload keeps, replaces, reports and refuses, read from the running state itself.

use super::*;
use crate::Gateway;
use std::path::Path;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.a]
endpoints = ["http://127.0.0.1:1"]

[upstreams.b]
endpoints = ["http://127.0.0.1:2"]

[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "x"
  upstream = "a"
  path = "/x"
  [[routes.r.calls]]
  name = "y"
  upstream = "b"
  path = "/y"
"#;

fn compile(toml: &str) -> Config {
    manifold_config::compile(Path::new("reload-test.toml"), toml)
        .unwrap_or_else(|e| panic!("{e}\n---\n{toml}"))
}

async fn gateway(toml: &str) -> Gateway {
    Gateway::bind(compile(toml)).await.unwrap()
}

fn stack<'a>(shared: &'a Shared, name: &str) -> &'a Arc<crate::upstream::Upstream> {
    let i = shared
        .config
        .upstreams
        .iter()
        .position(|u| u.name == name)
        .unwrap();
    &shared.clients[i]
}

#[tokio::test]
async fn an_unchanged_upstream_keeps_its_stack_and_a_changed_one_gets_a_new_one() {
    let gw = gateway(BASE).await;
    let before = gw.live.current.load_full();
    // `b` gets a new timeout, `c` is new, and the upstreams are declared in another order
    // (calls index them): `a` must still be found by name.
    let next = r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[upstreams.c]
endpoints = ["http://127.0.0.1:3"]

[upstreams.b]
endpoints = ["http://127.0.0.1:2"]
timeout = "1234ms"

[upstreams.a]
endpoints = ["http://127.0.0.1:1"]

[routes.r]
path = "/r"
  [[routes.r.calls]]
  name = "x"
  upstream = "a"
  path = "/x"
  [[routes.r.calls]]
  name = "z"
  upstream = "c"
  path = "/z"
"#;
    let report = gw.reloader().apply(compile(next)).await.unwrap();
    let after = gw.live.current.load_full();
    assert!(Arc::ptr_eq(stack(&before, "a"), stack(&after, "a")));
    assert!(!Arc::ptr_eq(stack(&before, "b"), stack(&after, "b")));
    assert_eq!(stack(&after, "b").timeout, Duration::from_millis(1234));
    assert_eq!(report.upstreams.kept, ["a"]);
    assert_eq!(report.upstreams.changed, ["b"]);
    assert_eq!(report.upstreams.added, ["c"]);
    assert!(report.upstreams.removed.is_empty());
    assert!(report.restart_required.is_empty(), "{report:?}");
    // The old state is untouched: requests holding it finish on it.
    assert_eq!(before.config.upstreams[0].name, "a");
    assert!(matches!(&before.config.routes[0].kind,
        manifold_config::RouteKind::Compose(p) if p.calls[1].name == "y"));
    // Counters and the limiter are the gateway's, not the config's.
    assert!(Arc::ptr_eq(&before.stats, &after.stats));
    assert!(Arc::ptr_eq(&before.limit, &after.limit));

    // A removed upstream is reported; the stack of one that stays is still the first one.
    let report = gw.reloader().apply(compile(BASE)).await.unwrap();
    assert_eq!(report.upstreams.removed, ["c"]);
    assert_eq!(report.upstreams.changed, ["b"]);
    let last = gw.live.current.load_full();
    assert!(Arc::ptr_eq(stack(&before, "a"), stack(&last, "a")));
}

#[tokio::test]
async fn restart_only_settings_keep_their_running_values_and_are_reported() {
    let gw = gateway(BASE).await;
    let listen = gw.local_addr();
    let running = gw.live.current.load().config.server.listen;
    let next = BASE.replace(
        "admin = \"127.0.0.1:0\"",
        "admin = \"127.0.0.1:0\"\nmax_connections = 77\nmax_body_bytes = 5555\n\
         drain_timeout = \"3s\"\n[cache]\nmax_bytes = 1048576\n[telemetry]\naccess_log = \"json\"",
    );
    let mut next = compile(&next);
    next.server.listen = Some("127.0.0.1:9".parse().unwrap());
    let report = gw.reloader().apply(next).await.unwrap();
    let keys: Vec<_> = report.restart_required.iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "server.max_connections",
            "server.drain_timeout",
            "cache",
            "telemetry"
        ]
    );
    let listen_msg = &report.restart_required[0].message;
    assert!(
        listen_msg.contains("127.0.0.1:9") && listen_msg.contains(&format!("{running:?}")),
        "{listen_msg}"
    );
    // A section's message names no value (it may hold a password).
    assert_eq!(
        report.restart_required[3].message,
        "`[cache]` changed: needs a restart; the running cache tiers stay until then"
    );
    let now = gw.live.current.load_full();
    assert_eq!(now.config.server.listen, running, "/config shows what runs");
    assert_eq!(now.config.server.max_connections, 8192);
    assert_eq!(now.config.cache.max_bytes, 64 * 1024 * 1024);
    // What a reload can apply, it applies.
    assert_eq!(now.config.server.max_body_bytes, 5555);
    assert_eq!(gw.local_addr(), listen);
}

#[tokio::test]
async fn overrides_are_applied_again_and_not_reported_as_changes() {
    let dir = temp_dir("overrides");
    let file = dir.join("m.toml");
    let toml = BASE.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:8080\"");
    std::fs::write(&file, &toml).unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin: None,
    };
    let mut config = manifold_config::load(&file).unwrap();
    overrides.apply(&mut config);
    let gw = Gateway::bind(config).await.unwrap();
    gw.set_overrides(overrides);
    let report = gw.reloader().reload().await.unwrap();
    assert!(report.restart_required.is_empty(), "{report:?}");
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_its_locations_and_the_running_config_stays() {
    let dir = temp_dir("invalid");
    let file = dir.join("m.toml");
    std::fs::write(&file, BASE).unwrap();
    let gw = Gateway::bind(manifold_config::load(&file).unwrap())
        .await
        .unwrap();
    let before = gw.live.current.load_full();
    // Line 20 (BASE opens with a newline): a call to an upstream that does not exist.
    std::fs::write(
        &file,
        BASE.replace("upstream = \"b\"", "upstream = \"nope\""),
    )
    .unwrap();
    let err = gw.reloader().reload().await.unwrap_err();
    let ReloadError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.errors[0].line, 20, "{err}");
    let json = err.to_json();
    let at = json["error"]["errors"][0]["at"].as_str().unwrap();
    assert_eq!(at, format!("{}:20:14", file.display()), "{json}");
    assert_eq!(json["error"]["errors"][0]["kind"], "unknown_name");
    assert_eq!(json["error"]["kind"], "invalid_config");
    assert!(Arc::ptr_eq(&before, &gw.live.current.load_full()));

    // A file that cannot be read: the same, with the file named.
    std::fs::remove_file(&file).unwrap();
    let err = gw.reloader().reload().await.unwrap_err();
    assert!(
        err.to_string().contains("cannot read the config file"),
        "{err}"
    );
    assert!(Arc::ptr_eq(&before, &gw.live.current.load_full()));
}

#[tokio::test]
async fn a_config_the_running_gateway_cannot_serve_is_refused_whole() {
    let gw = gateway(BASE).await;
    let before = gw.live.current.load_full();
    // No route offloaded at start, so no queue is open: an async call cannot be accepted.
    let next = BASE.replace("path = \"/y\"", "path = \"/y\"\n  mode = \"async\"");
    let err = gw.reloader().apply(compile(&next)).await.unwrap_err();
    assert!(
        matches!(&err, ReloadError::Refused { reason, .. } if reason.contains("route `r` call `y`")),
        "{err}"
    );
    assert_eq!(err.to_json()["error"]["kind"], "reload_refused");
    assert!(Arc::ptr_eq(&before, &gw.live.current.load_full()));
}

#[tokio::test]
async fn an_exposed_admin_listener_cannot_lose_its_token_by_reload() {
    let token = "admin_token = \"0123456789abcdef0123\"";
    let exposed = BASE.replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"0.0.0.0:0\"\n{token}"),
    );
    let gw = gateway(&exposed).await;
    let before = gw.live.current.load_full();
    // The new file binds admin to loopback without a token: the address needs a restart, so
    // the running listener (0.0.0.0) would be left open to anyone.
    let err = gw.reloader().apply(compile(BASE)).await.unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    assert!(Arc::ptr_eq(&before, &gw.live.current.load_full()));
    // A new token is fine (rotation).
    let rotated = exposed.replace("0123456789abcdef0123", "abcdefabcdefabcdef99");
    gw.reloader().apply(compile(&rotated)).await.unwrap();
    let now = gw.live.current.load_full();
    let t = now.config.server.admin_token.as_ref().unwrap();
    assert_eq!(t.expose(), "abcdefabcdefabcdef99");
}

#[tokio::test]
async fn the_watcher_reloads_when_the_file_changes() {
    let dir = temp_dir("watch");
    let file = dir.join("m.toml");
    std::fs::write(&file, BASE).unwrap();
    let gw = Gateway::bind(manifold_config::load(&file).unwrap())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = gw.reloader().watch(Duration::from_millis(20), stop.clone());
    let first = gw.live.current.load_full();
    // Give the watcher its first look, then change the file (same size, same second).
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&file, BASE.replace("\"/x\"", "\"/w\"")).unwrap();
    let mut reloaded = false;
    for _ in 0..500 {
        if !Arc::ptr_eq(&first, &gw.live.current.load_full()) {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "the watcher did not reload within 10 s");
    // An invalid write is logged and leaves the running config.
    let second = gw.live.current.load_full();
    std::fs::write(&file, "[routes.").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Arc::ptr_eq(&second, &gw.live.current.load_full()));
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn the_dispatcher_delivers_through_new_stacks_and_keeps_removed_ones() {
    let config = compile(BASE);
    let old: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| Arc::new(crate::upstream::Upstream::new(u).expect("the stack")))
        .collect();
    let stacks = crate::offload::Stacks::for_test(&old);
    let newer = Arc::new(crate::upstream::Upstream::new(&config.upstreams[1]).expect("the stack"));
    stacks.update(std::slice::from_ref(&newer));
    assert!(Arc::ptr_eq(&stacks.get("b").unwrap(), &newer));
    // `a` was not in the new list (removed): tasks already queued for it still find it.
    assert!(Arc::ptr_eq(&stacks.get("a").unwrap(), &old[0]));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("manifold-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_replaced_stack_is_dropped_once_no_request_holds_it() {
    let base = BASE.replace(
        "admin = \"127.0.0.1:0\"",
        "admin = \"127.0.0.1:0\"\ndrain_delay = \"0s\"",
    );
    let gw = gateway(&base).await;
    let (reloader, admin) = (gw.reloader(), gw.admin_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn(gw.run(stop.clone()));
    // Once the admin listener answers, `run` is past its start (and serving).
    healthz(admin).await;
    let old_b = Arc::downgrade(stack(&reloader.live.current.load_full(), "b"));
    let next = base.replace(
        "endpoints = [\"http://127.0.0.1:2\"]",
        "endpoints = [\"http://127.0.0.1:2\"]\ntimeout = \"3s\"",
    );
    reloader.apply(compile(&next)).await.unwrap();
    // Nothing (not the running listener, not the admin state) keeps the first config alive:
    // its stack, with its pooled connections, is gone.
    assert!(
        old_b.upgrade().is_none(),
        "the replaced stack is still held"
    );
    stop.cancel();
    running.await.unwrap();
}

async fn healthz(admin: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A section that differs only in a URL's password is a change: it needs a restart, and the
/// running value stays (what `/config` shows is what runs). The comparison sees the password;
/// the report does not show it.
#[tokio::test]
async fn a_password_only_change_in_a_section_is_reported_without_the_password() {
    let with = |password: &str| {
        BASE.replace(
            "admin = \"127.0.0.1:0\"",
            &format!(
                "admin = \"127.0.0.1:0\"\n[cache]\nredis = \"redis://app:{password}@127.0.0.1:6379\""
            ),
        )
    };
    let gw = gateway(&with("first-secret")).await;
    let report = gw
        .reloader()
        .apply(compile(&with("second-secret")))
        .await
        .unwrap();
    let keys: Vec<_> = report.restart_required.iter().map(|r| r.key).collect();
    assert_eq!(keys, ["cache"]);
    let shown = format!("{report:?}");
    assert!(
        !shown.contains("first-secret") && !shown.contains("second-secret"),
        "{shown}"
    );
    let now = gw.live.current.load_full();
    assert_eq!(
        now.config.cache.redis.as_deref(),
        Some("redis://app:first-secret@127.0.0.1:6379")
    );
}

/// Waits (bounded) until the running state is no longer `from`.
async fn reloaded_from(gw: &Gateway, from: &Arc<Shared>) -> bool {
    for _ in 0..250 {
        if !Arc::ptr_eq(from, &gw.live.current.load_full()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Kubernetes mounts a ConfigMap as `manifold.toml -> ..data/manifold.toml`, `..data ->
/// ..<timestamp>`, and updates it by renaming a new `..data` symlink over the old one: the
/// watcher follows the links, so it sees the swap.
#[tokio::test]
async fn the_watcher_sees_a_configmap_style_symlink_swap() {
    let dir = temp_dir("configmap");
    let _ = std::fs::remove_dir_all(&dir);
    for (version, body) in [
        ("..v1", BASE.to_owned()),
        ("..v2", BASE.replace("\"/x\"", "\"/w\"")),
    ] {
        std::fs::create_dir_all(dir.join(version)).unwrap();
        std::fs::write(dir.join(version).join("m.toml"), body).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/m.toml", dir.join("m.toml")).unwrap();
    let gw = Gateway::bind(manifold_config::load(&dir.join("m.toml")).unwrap())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = gw.reloader().watch(Duration::from_millis(20), stop.clone());
    let first = gw.live.current.load_full();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(reloaded_from(&gw, &first).await, "the swap was not seen");
    stop.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The watched path turning into a FIFO (a symlink pointed at one, a file replaced by one)
/// must not stop the watcher: reading it would block until a writer came, and the watcher
/// with it, so the next real change would never be applied. (A device such as /dev/zero
/// would have been read until memory ran out.) Only regular files are looked into.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_watcher_is_not_stopped_by_a_fifo_at_the_path() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = temp_dir("fifo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("v1.toml"), BASE).unwrap();
    std::fs::write(dir.join("v2.toml"), BASE.replace("\"/x\"", "\"/w\"")).unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let link = dir.join("m.toml");
    let point = |to: &str| {
        let tmp = dir.join("m.toml.tmp");
        std::os::unix::fs::symlink(to, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    };
    point("v1.toml");
    let gw = Gateway::bind(manifold_config::load(&link).unwrap())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = gw.reloader().watch(Duration::from_millis(20), stop.clone());
    let first = gw.live.current.load_full();
    tokio::time::sleep(Duration::from_millis(100)).await;
    point("fifo");
    tokio::time::sleep(Duration::from_millis(200)).await;
    point("v2.toml");
    let reloaded = reloaded_from(&gw, &first).await;
    // A watcher stuck opening the FIFO is let go (a writer that opens and closes at once), so
    // the test ends either way; O_NONBLOCK (Linux's 0o4000): no waiting when nobody reads.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(0o4000)
        .open(&fifo);
    assert!(reloaded, "the watcher stopped at the FIFO");
    stop.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reloads must not leave tasks behind. The worst case for it: an https upstream with a `ca`
/// (a new stack at every reload, since the file may have been rotated) behind a hostname (each
/// stack runs a task that resolves it again and again). Each replaced stack's task must end
/// with the stack.
#[tokio::test]
async fn repeated_reloads_leave_no_task_behind() {
    let dir = temp_dir("tasks");
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    let toml = BASE.replace(
        "endpoints = [\"http://127.0.0.1:1\"]",
        "endpoints = [\"https://localhost:1\"]\nca = \"ca.pem\"",
    );
    let file = dir.join("m.toml");
    std::fs::write(&file, toml).unwrap();
    let gw = Gateway::bind(manifold_config::load(&file).unwrap())
        .await
        .unwrap();
    let reloader = gw.reloader();
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let report = reloader.reload().await.unwrap();
    assert_eq!(
        report.upstreams.changed,
        ["a"],
        "a new stack at every reload"
    );
    let before = alive();
    for _ in 0..50 {
        reloader.reload().await.unwrap();
    }
    // The replaced stacks' tasks end at their next poll: wait for that, bounded.
    let mut after = alive();
    for _ in 0..250 {
        if after <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = alive();
    }
    assert!(
        after <= before,
        "{before} tasks before 50 reloads, {after} after"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
