//! The deployment files in `deploy/` are checked here as far as this machine can: the systemd
//! unit by systemd's own `systemd-analyze` (verify and the hardening score), the Kubernetes
//! manifests parsed as YAML and held to what the gateway does (the config in the ConfigMap passes
//! `manifold check`, the probes hit the admin port's /readyz and /healthz, the Service exposes
//! the client port only, the grace period covers preStop + drain). No container engine or
//! cluster runs here: the Containerfile is only checked for its non-root user.
//!
//! A missing tool (systemd-analyze, python3 with PyYAML) skips with a message on a developer's
//! machine, and fails under CI (`CI` set), where `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("manifold-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether to go on: `false` (skip) where `what` is missing on a developer's machine; a panic
/// under CI, where a skip would be a silent pass.
fn have(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is missing under CI: .ci/run must install it"
    );
    eprintln!("SKIPPED: {what} is not installed on this machine (CI installs it)");
    false
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `[Service]` settings of a unit file, as (key, value) in order.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// The unit as installed, with ExecStart pointing at the binary under test (verify checks that
/// the executable exists).
fn unit_under_test(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("deploy/manifold.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/manifold serve"));
    let unit = dir.join("manifold.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/manifold", env!("CARGO_BIN_EXE_manifold")),
    )
    .unwrap();
    unit
}

fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    if !have("systemd-analyze", runs("systemd-analyze", "--version")) {
        return;
    }
    let dir = temp_dir("unit");
    let unit = unit_under_test(&dir);
    let (ok, stderr) = verify(&unit);
    // verify exits 0 on unknown keys and bad values, and only says so on stderr: any word
    // there fails the test.
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );

    // The check can fail: a misspelt key or a bad value in a copy is reported.
    let text = std::fs::read_to_string(&unit).unwrap();
    let bad = dir.join("bad").join("manifold.service");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(
        &bad,
        text.replace("LimitNOFILE=65536", "LimitNOFILE=lots\nProtectSytem=strict"),
    )
    .unwrap();
    let (_, stderr) = verify(&bad);
    assert!(
        stderr.contains("lots") && stderr.contains("ProtectSytem"),
        "{stderr}"
    );

    // systemd's own hardening score: 1.5 ("OK") when written; above 2.0 fails.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The unit's numbers agree with what `manifold serve` does with its defaults.
#[test]
fn the_systemd_unit_gives_the_drain_its_time_and_enough_file_descriptors() {
    let text = std::fs::read_to_string(repo("deploy/manifold.service")).unwrap();
    let s = unit_settings(&text);
    let server = manifold_config::ServerSettings::default();

    // Seconds, as the unit writes it (systemd also takes "45s", "1min": keep it a number here).
    let stop = Duration::from_secs(setting(&s, "TimeoutStopSec").parse().unwrap());
    assert!(
        stop > server.drain_delay + server.drain_timeout,
        "TimeoutStopSec={stop:?} cuts the drain ({:?} + {:?}) short",
        server.drain_delay,
        server.drain_timeout
    );
    assert_eq!(setting(&s, "KillSignal"), "SIGTERM");
    assert_eq!(setting(&s, "ExecReload"), "/bin/kill -HUP $MAINPID");

    // The same rule `manifold serve` warns by at start.
    let nofile: u64 = setting(&s, "LimitNOFILE").parse().unwrap();
    assert_eq!(
        manifold_gateway::open_files_warning(&server, nofile),
        None,
        "LimitNOFILE={nofile} is too low for the default max_connections"
    );
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "manifold"),
    ] {
        assert_eq!(setting(&s, key), value, "{key}");
    }
}

/// Every YAML document of `file`, as JSON (PyYAML's safe loader: the manifests must be plain
/// YAML that any tool reads). `None` where python3 or PyYAML is missing (see [`have`]).
fn yaml_documents(file: &Path) -> Option<Vec<serde_json::Value>> {
    let python = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have("python3 with PyYAML", python) {
        return None;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not valid YAML:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn kubernetes() -> Option<Vec<serde_json::Value>> {
    let dir = repo("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in &files {
        docs.extend(yaml_documents(f)?);
    }
    // The kustomization lists every manifest, so `kubectl apply -k` applies them all.
    let kustomization = docs.iter().find(|d| d["kind"] == "Kustomization").unwrap();
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "kustomization.yaml" || listed.contains(&name),
            "{name} is not in kustomization.yaml"
        );
    }
    Some(docs)
}

fn kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

/// The ConfigMap's config, written where `manifold check` can read it, with its admin token
/// file (a Secret in the cluster) replaced by a stand-in.
fn configmap_config(docs: &[serde_json::Value], dir: &Path) -> PathBuf {
    let text = kind(docs, "ConfigMap")["data"]["manifold.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_path = "/etc/manifold/secret/admin.token";
    assert!(
        text.contains(token_path),
        "the ConfigMap's admin token moved"
    );
    let token = dir.join("admin.token");
    std::fs::write(&token, "stand-in-token-of-32-characters!").unwrap();
    let file = dir.join("manifold.toml");
    std::fs::write(&file, text.replace(token_path, token.to_str().unwrap())).unwrap();
    file
}

#[test]
fn the_kubernetes_config_map_holds_a_config_manifold_check_accepts() {
    let Some(docs) = kubernetes() else { return };
    let dir = temp_dir("configmap");
    let file = configmap_config(&docs, &dir);
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "manifold check refuses the ConfigMap's config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn port_named(container: &serde_json::Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn the_kubernetes_deployment_probes_the_admin_port_drains_in_time_and_keeps_admin_private() {
    let Some(docs) = kubernetes() else { return };
    let dir = temp_dir("deployment");
    let config = manifold_config::load(&configmap_config(&docs, &dir)).unwrap();
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // The ports the container declares are the ones the config listens on.
    assert_eq!(
        port_named(c, "http"),
        u64::from(
            config
                .server
                .listen
                .expect("the ConfigMap config has a plaintext listener")
                .port()
        )
    );
    assert_eq!(
        port_named(c, "admin"),
        u64::from(config.server.admin.port())
    );
    // The config is read from where the ConfigMap is mounted.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    let config_path = format!("{}/manifold.toml", mount["mountPath"].as_str().unwrap());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["serve", "-c", config_path.as_str()]);

    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");

    // The kubelet's SIGKILL comes terminationGracePeriodSeconds after preStop starts: it must
    // not land before preStop, drain_delay and drain_timeout are over.
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap();
    assert_eq!(pre_stop[0], "sleep");
    let sleep = Duration::from_secs(pre_stop[1].as_str().unwrap().parse().unwrap());
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let needed = sleep + config.server.drain_delay + config.server.drain_timeout;
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds ({grace:?}) <= preStop + drain ({needed:?})"
    );

    // Non-root, read-only, nothing to escalate to.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    // The admin port is reachable through nothing: no Service port, no NetworkPolicy port.
    let admin = config.server.admin.port();
    let service = kind(&docs, "Service");
    for p in service["spec"]["ports"].as_array().unwrap() {
        assert_ne!(
            p["targetPort"], "admin",
            "the Service exposes the admin port"
        );
        assert_ne!(p["targetPort"].as_u64(), Some(u64::from(admin)));
        assert_ne!(p["port"].as_u64(), Some(u64::from(admin)));
    }
    assert!(service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["targetPort"] == "http"));
    let policy = kind(&docs, "NetworkPolicy");
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        for p in rule["ports"].as_array().unwrap() {
            assert_ne!(p["port"].as_u64(), Some(u64::from(admin)));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_container_image_runs_as_a_non_root_user_and_carries_no_secret() {
    let text = std::fs::read_to_string(repo("deploy/Containerfile")).unwrap();
    assert!(
        text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2,
        "not multi-stage"
    );
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("no USER: the image would run as root");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
    for secret in [
        "admin.token",
        ".pem",
        ".key",
        "ARG TOKEN",
        "ENV MANIFOLD_ADMIN_TOKEN",
    ] {
        assert!(
            !text.lines().any(|l| (l.starts_with("COPY")
                || l.starts_with("ADD")
                || l.starts_with("ARG")
                || l.starts_with("ENV"))
                && l.contains(secret)),
            "the image copies or bakes in {secret}"
        );
    }
}

/// Every Secret and ConfigMap the container mounts is readable by the user it runs as, as the
/// kubelet writes such volumes: files owned by root (uid 0), group 0, mode `defaultMode` (0644
/// when unset); with the pod's `fsGroup`, the group becomes `fsGroup` (which the process also
/// holds as a supplementary group) and group read is added. A non-root user reading a 0400
/// Secret without `fsGroup` gets "permission denied": here, the admin token, without which a
/// gateway whose admin listener is off loopback refuses to start.
#[test]
fn the_kubernetes_pod_user_can_read_every_mounted_secret_and_config_map() {
    let Some(docs) = kubernetes() else { return };
    let pod = &kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let id = |key: &str| {
        c["securityContext"][key]
            .as_u64()
            .or_else(|| pod["securityContext"][key].as_u64())
    };
    let uid = id("runAsUser").expect("runAsUser");
    assert_ne!(uid, 0, "runs as root");
    let gid = id("runAsGroup").unwrap_or(0);
    let fs_group = pod["securityContext"]["fsGroup"].as_u64();
    let volumes = pod["volumes"].as_array().unwrap();
    let mut checked = 0;
    for mount in c["volumeMounts"].as_array().unwrap() {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        let Some(source) = ["secret", "configMap"]
            .into_iter()
            .find(|k| volume[*k].is_object())
            .map(|k| &volume[k])
        else {
            continue;
        };
        // PyYAML reads 0400 as octal, as the API server does.
        let mut mode = source["defaultMode"].as_u64().unwrap_or(0o644);
        let group = match fs_group {
            Some(g) => {
                mode |= 0o440;
                g
            }
            None => 0,
        };
        let in_group = gid == group || fs_group == Some(group);
        let readable = mode & 0o004 != 0 || (in_group && mode & 0o040 != 0);
        assert!(
            readable,
            "volume {} (mode {mode:o}, owner 0:{group}) is unreadable to {uid}:{gid}: set the \
             pod's fsGroup",
            mount["name"]
        );
        checked += 1;
    }
    assert!(checked >= 2, "the config and the admin token are mounted");
}

/// A Kubernetes Service sends nothing to an unready pod, and has no fallback when every pod is
/// unready (unlike Envoy's panic threshold). Redis is shared by every replica, so with `cache`
/// in `ready_requires` a Redis outage would take every pod out of the Service at once: a full
/// outage where the cache is designed to degrade (requests skip it and go to the upstreams).
#[test]
fn the_kubernetes_config_does_not_let_a_redis_outage_unready_every_pod() {
    let Some(docs) = kubernetes() else { return };
    let dir = temp_dir("ready");
    let config = manifold_config::load(&configmap_config(&docs, &dir)).unwrap();
    if config.cache.redis.is_some() {
        assert!(
            !config
                .server
                .ready_requires
                .contains(&manifold_config::ReadyDependency::Cache),
            "ready_requires = {:?} with [cache] redis: a Redis outage empties the Service",
            config.server.ready_requires
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `COPY . .` sends the whole build context into the build stage: a TLS key or admin token
/// left in the checkout (docs/tls.md makes `key.pem` in the current directory to try TLS) would
/// sit in that stage's layer, in the builder's cache and in any cache exported from it, though
/// the final image only takes the binary. `.dockerignore` keeps such files out of the context.
#[test]
fn the_container_build_context_leaves_keys_and_tokens_out() {
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // The patterns used here: `*.ext` (any depth, as `**/*.ext`) and exact names.
    let ignored = |name: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_start_matches("**/");
            match p.strip_prefix('*') {
                Some(ext) => name.ends_with(ext),
                None => p == name,
            }
        })
    };
    for secret in [
        "key.pem",
        "cert.pem",
        "tls.key",
        "tls.crt",
        "admin.token",
        "client.p12",
        ".env",
    ] {
        assert!(ignored(secret), "{secret} would be sent to the image build");
    }
    // The sources still go in.
    for source in ["Cargo.toml", "Cargo.lock", "main.rs"] {
        assert!(!ignored(source), "{source} is left out of the build");
    }
}

/// `/readyz` runs every dependency's check, each bounded by the gateway's readiness check
/// timeout, and answers when the slowest is done: a dependency that hangs (a dead node that
/// sends no reset) makes the answer take that whole bound, even for a dependency not in
/// `ready_requires`. A probe that gives up sooner (the kubelet's default `timeoutSeconds` is
/// 1) fails there, and the pod leaves the Service however the config decides readiness.
#[test]
fn the_kubernetes_readiness_probe_waits_longer_than_the_readiness_checks() {
    let Some(docs) = kubernetes() else { return };
    let c = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let probe = &c["readinessProbe"];
    let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
    assert!(
        timeout > manifold_gateway::READY_CHECK_TIMEOUT,
        "readinessProbe.timeoutSeconds ({timeout:?}) <= the readiness checks' bound ({:?})",
        manifold_gateway::READY_CHECK_TIMEOUT
    );
    let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
    assert!(timeout <= period, "probes would overlap");
}
