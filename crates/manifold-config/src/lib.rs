//! Manifold's configuration, and the compiler that turns it into execution plans.
//!
//! A route's TOML declares its downstream calls; this crate infers the dependency graph from the
//! templates that read other calls' results (plus explicit `after`), rejects what cannot run
//! (unknown names, cycles, conflicting routes, bad values) with file:line:column, and compiles
//! every template once. The gateway then runs each request through a ready-made [`Plan`]: no
//! parsing, no name lookups on the request path. It lives apart from the gateway so that `manifold
//! check`, the docs' tests and any tool can validate a config without starting a server.

pub mod cache_key;
mod cache_tier;
mod compile;
mod dataflow;
mod describe;
mod error;
pub mod events;
mod hooks;
mod model;
pub mod policy;
mod proxy;
pub mod queue;
mod ready;
pub mod redact;
mod routing;
mod schema;
mod secret;
mod spanned;
mod telemetry;
pub mod template;
pub mod tls;
mod trace_store;
mod upstream;
mod upstream_policy;

pub use cache_tier::{MAX_MEMCACHED_PREFIX, MAX_MEMCACHED_SERVERS, MEMCACHED_ITEM_BYTES};
pub use compile::compile;
pub use describe::describe;
pub use error::{ConfigError, ConfigErrors, ConfigWarning, ErrorKind};
pub use hooks::{CallHooks, HookSpec, HookTarget};
pub use model::*;
pub use ready::ReadyDependency;
pub use routing::{add_status_route, offloads, route_shape, StatusRouteError};
pub use schema::json_schema;
pub use secret::{check_admin_exposure, Secret, MIN_ADMIN_TOKEN_LEN};
pub use telemetry::{AccessLog, OtlpSettings, ParentSampled, TelemetrySettings};
pub use tls::{ClientIdentity, ServerTls, TlsFileError, UpstreamTls};
pub use trace_store::TraceStoreSettings;

use std::path::Path;

/// The commented starter config `manifold init` writes; a test checks that it compiles and
/// passes the schema, so the first file a user sees is a valid one.
pub const STARTER_CONFIG: &str = include_str!("starter.toml");

/// Read and compile the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = read_bounded(path).map_err(|message| ConfigErrors {
        errors: vec![ConfigError {
            kind: ErrorKind::Io,
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }],
    })?;
    compile(path, &source)
}

/// The largest config file read, in bytes. A config is kilobytes; the bound keeps a wrong path
/// (a log, `/dev/zero`) from being read until memory runs out, at start and at every reload.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The file's text, at most [`MAX_CONFIG_BYTES`]. Any readable file, a pipe included
/// (`-c <(generate-config)`).
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the config file: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "the config file is larger than {} MiB: is it the config?",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    Ok(text)
}
