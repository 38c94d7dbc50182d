//! What a new user runs first: `manifold init`, `manifold completions`, `manifold schema`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn manifold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_manifold"))
}

fn run(args: &[&str]) -> Output {
    manifold().args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("manifold-start-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn init_writes_a_commented_starter_config_that_check_accepts() {
    let dir = temp_dir("init");
    let file = dir.join("manifold.toml");
    let out = run(&["init", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            >= 10
    );

    let out = run(&["check", "-c", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "manifold check refuses what manifold init wrote:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("route profile: GET /user-profile/{id}"));

    // Without -o: the same text on standard output.
    let out = run(&["init"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), written);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn init_never_overwrites_a_file_without_force() {
    let dir = temp_dir("overwrite");
    let file = dir.join("manifold.toml");
    std::fs::write(&file, "# my config\n").unwrap();
    let out = run(&["init", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists; pass --force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# my config\n");

    // A symlink planted at the path is not followed: its target is left alone.
    #[cfg(unix)]
    {
        let target = dir.join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let out = run(&["init", "-o", link.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        // And a dangling one is not created through either.
        let dangling = dir.join("dangling.toml");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        let out = run(&["init", "-o", dangling.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(!dir.join("nowhere").exists());
    }

    let out = run(&["init", "--force", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("[routes.profile]"));

    // --force alone (to standard output) makes no sense and is refused.
    assert_eq!(run(&["init", "--force"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn completions_for_bash_zsh_and_fish_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for sub in ["serve", "check", "init", "schema", "completions"] {
            assert!(
                script.contains(sub),
                "{shell} completions lack `{sub}`:\n{script}"
            );
        }
    }
    let bash = text(&run(&["completions", "bash"]).stdout);
    assert!(bash.contains("complete -F"), "{bash}");
    // An unknown shell is a usage error naming the ones there are.
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bash"), "{}", text(&out.stderr));
}

#[test]
fn schema_prints_the_config_schema() {
    let out = run(&["schema"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, manifold_config::json_schema());
    assert_eq!(printed["title"], "Manifold configuration");
}
