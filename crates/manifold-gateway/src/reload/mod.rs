//! Hot reload: `SIGHUP`, `POST /reload` and `manifold serve --watch` all end here.
//!
//! The running state is one [`Shared`] behind an [`ArcSwap`]. Every request loads an `Arc` of
//! it when it arrives and keeps that `Arc` until its answer is written, so a request runs from
//! start to end on the plans it started with, however many reloads happen meanwhile; the next
//! request sees the new plans. A reload re-reads and compiles the file, builds the next `Shared`
//! from it (see [`next`]) and stores it in one atomic swap: there is no moment when a request
//! can find half a config.
//!
//! What a reload keeps:
//! - the upstream stacks (pool, breaker, EWMA, retry budget) of every `[upstreams.NAME]` whose
//!   settings did not change — the same `Arc`, shared with requests still running on the old
//!   plans; a changed upstream gets a new stack, and the old one is dropped (its idle
//!   connections closed) once the last request using it is done;
//! - the cache (both tiers): keys are what a call sends, so entries of unchanged calls stay
//!   valid;
//! - the queue, its dispatcher (which delivers through the new stacks from then on) and the
//!   `[events]` publisher; the telemetry registry, tracer and exporter; the concurrency limiter
//!   and the counters.
//!
//! What needs a restart (listen addresses, `[cache]`, `[queue]`, `[events]`, `[telemetry]`,
//! `max_connections`, `concurrency`, …) is kept at its running value and reported, key by key,
//! in the answer and the log; the rest of the reload applies. A config the running gateway
//! cannot serve at all (async calls with no queue open, an admin listener that would lose its
//! token) is refused whole, like an invalid one: the running config stays.

mod next;
mod watch;

use crate::handler::Shared;
use arc_swap::ArcSwap;
use manifold_config::{Config, ConfigErrors};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Command-line overrides of the file's values (`manifold serve --listen/--admin`), applied to
/// the file at start and again at every reload, so a reload never reports them as changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// Replaces `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `server.admin`.
    pub admin: Option<SocketAddr>,
}

impl Overrides {
    /// Write the overrides into `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(l) = self.listen {
            config.server.listen = Some(l);
        }
        if let Some(a) = self.admin {
            config.server.admin = a;
        }
    }
}

/// The state every request and admin call loads, and what a reload needs beside it.
#[derive(Debug)]
pub(crate) struct Live {
    /// The running plans: one `load_full` per request.
    pub(crate) current: ArcSwap<Shared>,
    /// One reload at a time: each builds on the state the previous one stored.
    lock: tokio::sync::Mutex<()>,
    overrides: Mutex<Overrides>,
    /// The dispatcher's stacks (none when no queue is open).
    stacks: Option<Arc<crate::offload::Stacks>>,
    /// Re-reads `server.tls`'s certificate and key (nothing to do without `server.tls`).
    tls: crate::TlsReloader,
}

impl Live {
    pub(crate) fn new(
        shared: Shared,
        stacks: Option<Arc<crate::offload::Stacks>>,
        tls: crate::TlsReloader,
    ) -> Live {
        Live {
            current: ArcSwap::from_pointee(shared),
            lock: tokio::sync::Mutex::new(()),
            overrides: Mutex::new(Overrides::default()),
            stacks,
            tls,
        }
    }

    pub(crate) fn set_overrides(&self, overrides: Overrides) {
        *self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = overrides;
    }

    /// Re-read the file the running config came from, and apply it.
    pub(crate) async fn reload_file(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let path = self.current.load().config.source.clone();
        let overrides = *self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Reading and compiling is blocking work: off the runtime's worker threads.
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || manifold_config::load(&path)).await
        };
        let loaded = match read {
            Ok(loaded) => loaded,
            Err(e) => Err(ConfigErrors {
                errors: vec![manifold_config::ConfigError {
                    kind: manifold_config::ErrorKind::Io,
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    message: format!("reading the config failed: {e}"),
                }],
            }),
        };
        let result = match loaded {
            Ok(mut config) => {
                overrides.apply(&mut config);
                self.swap(config)
            }
            Err(errors) => Err(ReloadError::Invalid(errors)),
        };
        log(&path, &result);
        result
    }

    /// Apply an already compiled config (overrides are the caller's business).
    pub(crate) async fn apply(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let path = config.source.clone();
        let result = self.swap(config);
        log(&path, &result);
        result
    }

    /// Build the next state from `config` and swap it in. Called under `lock`.
    fn swap(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        let running = self.current.load_full();
        let (shared, report) = next::build(&running, config)?;
        // The listener's certificate and key are part of what a reload re-reads (a renewed
        // certificate is picked up by SIGHUP, `POST /reload` or `--watch`). Read them after the
        // new plans are built and before anything is swapped: a certificate that cannot be used
        // refuses the whole reload, and the running config and certificate both stay.
        self.tls.reload_tls().map_err(|e| ReloadError::Refused {
            file: shared.config.source.clone(),
            reason: e.to_string(),
        })?;
        let clients = shared.clients.clone();
        let shared = Arc::new(shared);
        self.current.store(Arc::clone(&shared));
        shared.telemetry.publish_live_routes();
        if let Some(stacks) = &self.stacks {
            stacks.update(&clients);
        }
        Ok(report)
    }
}

/// One line per reload, and one per key that needs a restart: an operator reading the log
/// after a SIGHUP (which answers nobody) sees what happened.
fn log(path: &std::path::Path, result: &Result<ReloadReport, ReloadError>) {
    match result {
        Ok(r) => {
            tracing::info!(
                file = %path.display(),
                routes = r.routes,
                upstreams_kept = r.upstreams.kept.len(),
                upstreams_changed = r.upstreams.changed.len(),
                upstreams_added = r.upstreams.added.len(),
                upstreams_removed = r.upstreams.removed.len(),
                "config reloaded"
            );
            for w in &r.warnings {
                tracing::warn!("{w}");
            }
            for k in &r.restart_required {
                tracing::warn!(key = k.key, "reload: {}", k.message);
            }
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "config reload failed; the running config stays:\n{e}")
        }
    }
}

/// A handle that reloads a running gateway (cheap to clone; see [`crate::Gateway::reloader`]).
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) live: Arc<Live>,
}

impl Reloader {
    /// Re-read and compile the config file the gateway runs (its `source`), with the
    /// [`Overrides`] given at start, and swap it in. On error the running config stays.
    /// Outcomes are logged here; the caller may also show them.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.live.reload_file().await
    }

    /// Swap in a config compiled by the caller.
    pub async fn apply(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        self.live.apply(config).await
    }

    /// `manifold serve --watch`: look at the config file every `every` (its modification time,
    /// size and a hash of its bytes) and reload when it changed, until `stop`.
    pub fn watch(&self, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let live = Arc::clone(&self.live);
        tokio::spawn(watch::run(live, every, stop))
    }
}

/// What a successful reload did (also the `POST /reload` answer).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// The file that was read.
    pub file: PathBuf,
    /// Routes now served.
    pub routes: usize,
    /// What happened to each upstream's stack.
    pub upstreams: UpstreamChanges,
    /// Changed settings that only a restart applies; their running values stay.
    pub restart_required: Vec<RestartRequired>,
    /// The new config's warnings (`manifold check` prints the same).
    pub warnings: Vec<String>,
}

/// Upstream names by what the reload did to their stacks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamChanges {
    /// Same settings: the same stack (connections, breaker and balancer state) goes on.
    pub kept: Vec<String>,
    /// New settings: a new stack; the old one ends with the last request using it.
    pub changed: Vec<String>,
    /// New upstreams.
    pub added: Vec<String>,
    /// Gone from the config (the dispatcher keeps their stacks for tasks already queued).
    pub removed: Vec<String>,
}

/// A changed setting a reload does not apply.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRequired {
    /// The key or section (`server.listen`, `queue`, …).
    pub key: &'static str,
    /// What changed and what stays until a restart.
    pub message: String,
}

/// Why a reload did not happen. The running config stays in every case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or does not compile: each error with file:line:col.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The file compiles, but the running gateway cannot serve it without a restart.
    #[error("{file}: reload refused: {reason}", file = file.display())]
    Refused {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ReloadError {
    /// The `POST /reload` answer's body.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ReloadError::Invalid(errors) => {
                let list: Vec<_> = errors
                    .errors
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "at": location(&e.file, e.line, e.column),
                            "file": e.file.display().to_string(),
                            "line": e.line,
                            "column": e.column,
                            "kind": kind_name(e.kind),
                            "message": e.message,
                        })
                    })
                    .collect();
                serde_json::json!({"error": {
                    "kind": "invalid_config",
                    "message": format!("the config does not compile; the running config stays:\n{errors}"),
                    "errors": list,
                }})
            }
            ReloadError::Refused { file, reason } => serde_json::json!({"error": {
                "kind": "reload_refused",
                "file": file.display().to_string(),
                "message": format!("{reason}; the running config stays"),
            }}),
        }
    }
}

fn location(file: &std::path::Path, line: usize, column: usize) -> String {
    if line > 0 {
        format!("{}:{line}:{column}", file.display())
    } else {
        file.display().to_string()
    }
}

/// `UnknownName` → `unknown_name`: from the variant's name, so a kind added to the compiler
/// needs no change here.
fn kind_name(kind: manifold_config::ErrorKind) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{kind:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests;
