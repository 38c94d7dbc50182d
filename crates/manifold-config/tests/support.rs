//! Helpers the config tests share: the errors of a config that must not compile, and where a
//! line is.

use manifold_config::{compile, ErrorKind};

/// Every error of `src`, which must not compile, as (line, column, kind, message); the rendered
/// error names the file.
pub(crate) fn errors(src: &str) -> Vec<(usize, usize, ErrorKind, String)> {
    match compile("t.toml".as_ref(), src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => {
            let rendered = e.to_string();
            assert!(rendered.contains("t.toml:"), "{rendered}");
            e.errors
                .into_iter()
                .map(|e| (e.line, e.column, e.kind, e.message))
                .collect()
        }
    }
}

/// The 1-based line of the first line containing `needle`.
pub(crate) fn line_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in source"))
        + 1
}
