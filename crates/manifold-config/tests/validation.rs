//! Config validation: the helpers every theme shares; the rules themselves, by theme, in validation/.

use manifold_config::{compile, ErrorKind, Mode, RouteKind};
use std::time::Duration;

use crate::support::{errors, line_of};

const UPSTREAMS: &str = r#"[upstreams.a]
endpoints = ["http://127.0.0.1:7001"]
[upstreams.b]
endpoints = ["http://127.0.0.1:7002", "http://127.0.0.1:7012/base/"]
"#;

fn one(src: &str, kind: ErrorKind, needle_line: &str, message_part: &str) {
    let errs = errors(src);
    assert!(
        errs.iter().any(|(line, col, k, msg)| *k == kind
            && *line == line_of(src, needle_line)
            && *col > 0
            && msg.contains(message_part)),
        "wanted {kind:?} on the line of {needle_line:?} mentioning {message_part:?}, got {errs:#?}"
    );
}

mod cache;
mod events;
mod routes;
mod server;
