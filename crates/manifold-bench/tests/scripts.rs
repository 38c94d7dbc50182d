//! The bench scripts that profile the checkout (bench/profile-compose.sh,
//! bench/telemetry-callgrind.sh) print its configs from bench/lib/checkout.sh, a shell copy of
//! `manifold_bench::compose`'s: this test fails when the two disagree.

use std::path::PathBuf;
use std::process::Command;

fn script_output(call: &str) -> toml::Table {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/lib/checkout.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source \"$0\" && {call}"))
        .arg(&lib)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{call}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    text.parse()
        .unwrap_or_else(|e| panic!("{call} printed TOML that does not parse: {e}\n{text}"))
}

#[test]
fn the_scripts_checkout_is_the_benchs() {
    let urls = [
        "http://127.0.0.1:1/",
        "http://127.0.0.1:2/",
        "http://127.0.0.1:3/",
        "http://127.0.0.1:4/",
    ];
    let gateway = script_output(&format!(
        "checkout_gateway_toml 127.0.0.1:5 127.0.0.1:6 {}",
        urls.join(" ")
    ));
    let bench: toml::Table = manifold_bench::compose::gateway_toml_for(
        "127.0.0.1:5",
        "127.0.0.1:6",
        urls.map(str::to_owned),
    )
    .parse()
    .expect("the bench's gateway TOML parses");
    assert_eq!(
        gateway, bench,
        "bench/lib/checkout.sh's gateway config differs"
    );

    let sim = script_output("checkout_sim_toml");
    let mut bench: toml::Table = manifold_bench::compose::sim_toml([0; 5])
        .parse()
        .expect("the bench's simulator TOML parses");
    bench
        .get_mut("services")
        .and_then(toml::Value::as_table_mut)
        .expect("services")
        .remove("hop");
    assert_eq!(
        sim, bench,
        "bench/lib/checkout.sh's simulator config differs"
    );
}
