//! Arbitrary bytes as a config file: parsing, validation and compilation (`manifold check` and
//! `serve` both go through `manifold_config::compile`) must answer with errors, never panic.
//! A config that compiles is also described, as `manifold check` prints it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file is read as UTF-8 text (`std::fs::read_to_string`): other bytes never reach
    // the compiler.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = manifold_config::compile(std::path::Path::new("fuzz.toml"), source) {
        let _ = manifold_config::describe(&config);
    }
});
