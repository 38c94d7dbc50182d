//! The next running state, built from a new config and the running one: which settings a reload
//! applies, which it keeps until a restart, and which upstream stacks carry over.

use super::{ReloadError, ReloadReport, RestartRequired, UpstreamChanges};
use crate::handler::Shared;
use crate::upstream::Upstream;
use manifold_config::{Config, Mode, RouteKind};
use std::fmt::Debug;
use std::sync::Arc;

/// Build the state that replaces `running`, or say why `config` cannot replace it.
pub(super) fn build(
    running: &Shared,
    mut config: Config,
) -> Result<(Shared, ReloadReport), ReloadError> {
    let file = config.source.clone();
    let refuse = |reason: String| ReloadError::Refused {
        file: file.clone(),
        reason,
    };
    let restart_required = keep_restart_only(&running.config, &mut config);
    // The admin listener keeps its address: the new token settings must still protect it.
    manifold_config::check_admin_exposure(&config.server).map_err(&refuse)?;
    if running.queue.is_none() {
        if let Some((route, call)) = first_offloading_call(&config) {
            return Err(refuse(format!(
                "route `{route}` call `{call}` is offloaded (mode = async or publish), and this \
                 gateway started without a queue (no route offloaded then): restart to open it"
            )));
        }
    }
    let router = crate::router::Router::new(&config).map_err(|e| refuse(e.to_string()))?;
    let (clients, upstreams) = carry_stacks(&running.clients, &running.config, &config)
        .map_err(|e| refuse(e.to_string()))?;
    let report = ReloadReport {
        file: config.source.clone(),
        routes: config.routes.len(),
        upstreams,
        restart_required,
        warnings: config.warnings.iter().map(ToString::to_string).collect(),
    };
    let shared = Shared {
        telemetry: running.telemetry.reconfigure(&config),
        caching: crate::cache::Caching::with_cache(running.caching.cache.clone(), &config),
        router,
        clients,
        queue: running.queue.clone(),
        stats: Arc::clone(&running.stats),
        limit: Arc::clone(&running.limit),
        parse_budget: Arc::clone(&running.parse_budget),
        // `[queue]` (status_path, limits) only changes with a restart.
        follow: running.follow.clone(),
        config,
    };
    Ok((shared, report))
}

/// Give `next` the running value of every setting only a restart changes, and list those
/// that differ. Values are compared through `Debug`: it covers every field, including ones
/// added later, without asking the config types for `PartialEq`.
fn keep_restart_only(running: &Config, next: &mut Config) -> Vec<RestartRequired> {
    let mut out = Vec::new();
    let (r, n) = (&running.server, &mut next.server);
    // Shown with their values: addresses, limits and durations hold no secret.
    shown(&mut out, "server.listen", &r.listen, &mut n.listen);
    // The HTTPS listener's address and its files' paths (the files themselves are re-read).
    shown(&mut out, "server.tls", &r.tls, &mut n.tls);
    shown(&mut out, "server.admin", &r.admin, &mut n.admin);
    shown(
        &mut out,
        "server.max_connections",
        &r.max_connections,
        &mut n.max_connections,
    );
    shown(
        &mut out,
        "server.max_parsed_bytes",
        &r.max_parsed_bytes,
        &mut n.max_parsed_bytes,
    );
    shown(
        &mut out,
        "server.concurrency",
        &r.concurrency,
        &mut n.concurrency,
    );
    shown(
        &mut out,
        "server.header_read_timeout",
        &r.header_read_timeout,
        &mut n.header_read_timeout,
    );
    shown(
        &mut out,
        "server.h2_idle_timeout",
        &r.h2_idle_timeout,
        &mut n.h2_idle_timeout,
    );
    shown(
        &mut out,
        "server.send_timeout",
        &r.send_timeout,
        &mut n.send_timeout,
    );
    shown(
        &mut out,
        "server.drain_timeout",
        &r.drain_timeout,
        &mut n.drain_timeout,
    );
    // Whole sections, not shown: they hold URLs with passwords.
    section(
        &mut out,
        "cache",
        "the running cache tiers stay",
        &running.cache,
        &mut next.cache,
    );
    section(
        &mut out,
        "queue",
        "the running queue and its dispatcher stay",
        &running.queue,
        &mut next.queue,
    );
    section(
        &mut out,
        "events",
        "the running events publisher stays",
        &running.events,
        &mut next.events,
    );
    section(
        &mut out,
        "telemetry",
        "the running tracer, exporter and access log stay",
        &running.telemetry,
        &mut next.telemetry,
    );
    out
}

fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn shown<T: Debug + Clone>(
    out: &mut Vec<RestartRequired>,
    key: &'static str,
    running: &T,
    next: &mut T,
) {
    if !same(running, next) {
        out.push(RestartRequired {
            key,
            message: format!(
                "`{key}` changed to {next:?}: needs a restart; still {running:?} until then"
            ),
        });
        *next = running.clone();
    }
}

fn section<T: Debug + Clone>(
    out: &mut Vec<RestartRequired>,
    key: &'static str,
    stays: &str,
    running: &T,
    next: &mut T,
) {
    if !same(running, next) {
        out.push(RestartRequired {
            key,
            message: format!("`[{key}]` changed: needs a restart; {stays} until then"),
        });
        *next = running.clone();
    }
}

/// The first call that needs the queue, as (route, call).
fn first_offloading_call(config: &Config) -> Option<(&str, &str)> {
    config.routes.iter().find_map(|r| match &r.kind {
        RouteKind::Compose(plan) => plan
            .calls
            .iter()
            .find(|c| c.mode != Mode::Sync)
            .map(|c| (r.name.as_str(), c.name.as_str())),
        RouteKind::Proxy { .. } => None,
    })
}

/// One stack per upstream of `next`, in its order (calls index them): the running `Arc` where
/// the `[upstreams.NAME]` settings are the same, a new stack where they changed or are new.
///
/// An upstream that names TLS files (`ca`, `client_cert`) always gets a new stack: the settings
/// hold the files' paths, not their contents, and a reload is how a rotated certificate is
/// picked up. A file that cannot be read refuses the whole reload.
pub(super) fn carry_stacks(
    clients: &[Arc<Upstream>],
    running: &Config,
    next: &Config,
) -> Result<(Vec<Arc<Upstream>>, UpstreamChanges), crate::TlsError> {
    let mut changes = UpstreamChanges::default();
    let stacks: Result<Vec<_>, _> = next
        .upstreams
        .iter()
        .map(|u| {
            let old = running
                .upstreams
                .iter()
                .position(|o| o.name == u.name)
                .and_then(|i| Some((&running.upstreams[i], clients.get(i)?)));
            let files = u.tls.ca.is_some() || u.tls.client.is_some();
            match old {
                Some((cfg, stack)) if same(cfg, u) && !files => {
                    changes.kept.push(u.name.clone());
                    Ok(Arc::clone(stack))
                }
                Some(_) => {
                    changes.changed.push(u.name.clone());
                    Upstream::new(u).map(Arc::new)
                }
                None => {
                    changes.added.push(u.name.clone());
                    Upstream::new(u).map(Arc::new)
                }
            }
        })
        .collect();
    let stacks = stacks?;
    changes.removed = running
        .upstreams
        .iter()
        .filter(|o| next.upstream(&o.name).is_none())
        .map(|o| o.name.clone())
        .collect();
    Ok((stacks, changes))
}
