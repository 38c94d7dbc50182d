//! `/readyz` for a replica: ready when this process can reach its own dependencies — Redis when
//! `[cache] redis` is set, the queue's broker when a route offloads — so a load balancer takes a
//! replica that lost them out of rotation while the others keep serving.
//!
//! Each check is bounded by [`CHECK_TIMEOUT`] and the result is kept for [`CACHE_FOR`]: a
//! balancer probing every 100 ms from several places costs the broker one round of checks per
//! second, and concurrent probes wait for the one check running rather than start their own.
//! While draining (shutdown), `/readyz` answers 503 before any check runs (see `admin.rs`).
//!
//! The trade-off (docs/replicas.md): Redis and the broker are shared, so when one of them is
//! down for everyone, every replica turns unready together. `[server] ready_requires` lists the
//! dependencies that decide readiness; the others are still checked and shown.

use crate::handler::Shared;
use crate::upstream::Body;
use http::{Response, StatusCode};
use manifold_config::ReadyDependency;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The most one dependency's check may take; past it, that dependency counts as unreachable.
/// The checks run at once, so `/readyz` answers within about this: a probe must wait longer
/// (`deploy/kubernetes` sets its `timeoutSeconds` above it, and a test checks that).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a result answers probes before the dependencies are checked again.
pub(crate) const CACHE_FOR: Duration = Duration::from_secs(1);

/// The last result, and the lock that lets one check run at a time.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    last: Mutex<Option<(Instant, Report)>>,
}

/// One round of checks: the answer's status and body.
#[derive(Debug, Clone)]
struct Report {
    ready: bool,
    body: String,
}

/// One dependency's result.
struct Check {
    dependency: ReadyDependency,
    /// `Ok(detail)` or `Err(why)`.
    result: Result<String, String>,
}

impl Readiness {
    /// The `/readyz` answer: 200 listing the checks, or 503 naming the failing dependency.
    pub(crate) async fn respond(&self, shared: &Shared) -> Response<Body> {
        let report = self.report(shared).await;
        let status = if report.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        crate::admin::text(status, &report.body)
    }

    async fn report(&self, shared: &Shared) -> Report {
        // Held across the checks: probes arriving meanwhile wait for this result.
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return report.clone();
            }
        }
        let checks = check_all(shared).await;
        let report = render(&checks, &shared.config.server.ready_requires);
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

/// Runs every configured dependency's check at once.
async fn check_all(shared: &Shared) -> Vec<Check> {
    let cache = async {
        let r = shared.caching.cache.redis_readiness(CHECK_TIMEOUT).await?;
        let result = r.reachable.map(|rtt| {
            let mut detail = format!("redis reachable ({} µs)", rtt.as_micros());
            detail.push_str(if r.purge_subscribed {
                ", purge broadcast subscribed"
            } else {
                ", purge broadcast not subscribed yet (reconnecting)"
            });
            if !r.tier_healthy {
                detail.push_str(", requests skip it until their next probe");
            }
            detail
        });
        Some(Check {
            dependency: ReadyDependency::Cache,
            result,
        })
    };
    let queue = async {
        let q = shared.queue.as_ref()?;
        let backend = q.0.backend().as_str();
        let result = match tokio::time::timeout(CHECK_TIMEOUT, q.0.stats()).await {
            Ok(Ok(_)) => Ok(format!("{backend} reachable")),
            Ok(Err(e)) => Err(format!("{backend}: {e}")),
            Err(_) => Err(format!("{backend}: no answer within {CHECK_TIMEOUT:?}")),
        };
        Some(Check {
            dependency: ReadyDependency::Queue,
            result,
        })
    };
    let (cache, queue) = tokio::join!(cache, queue);
    cache.into_iter().chain(queue).collect()
}

/// `ready` (or `not ready: cache, queue`) on the first line, then one line per check.
fn render(checks: &[Check], required: &[ReadyDependency]) -> Report {
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.result.is_err() && required.contains(&c.dependency))
        .map(|c| c.dependency.as_str())
        .collect();
    let mut body = if failing.is_empty() {
        "ready\n".to_owned()
    } else {
        format!("not ready: {}\n", failing.join(", "))
    };
    for c in checks {
        let note = if required.contains(&c.dependency) {
            ""
        } else {
            " (not in server.ready_requires)"
        };
        let _ = match &c.result {
            Ok(detail) => writeln!(body, "{}: ok, {detail}{note}", c.dependency.as_str()),
            Err(why) => writeln!(body, "{}: FAILING, {why}{note}", c.dependency.as_str()),
        };
    }
    Report {
        ready: failing.is_empty(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dependency: ReadyDependency, ok: bool) -> Check {
        Check {
            dependency,
            result: if ok {
                Ok("fine".into())
            } else {
                Err("down".into())
            },
        }
    }

    #[test]
    fn a_failing_required_dependency_is_named_and_unready() {
        let both = [ReadyDependency::Cache, ReadyDependency::Queue];
        let r = render(
            &[
                check(ReadyDependency::Cache, true),
                check(ReadyDependency::Queue, false),
            ],
            &both,
        );
        assert!(!r.ready);
        assert_eq!(
            r.body,
            "not ready: queue\ncache: ok, fine\nqueue: FAILING, down\n"
        );
        let r = render(&[check(ReadyDependency::Cache, true)], &both);
        assert!(r.ready);
        assert_eq!(r.body, "ready\ncache: ok, fine\n");
    }

    #[test]
    fn a_failing_dependency_left_out_of_ready_requires_is_shown_not_counted() {
        let r = render(
            &[
                check(ReadyDependency::Cache, false),
                check(ReadyDependency::Queue, true),
            ],
            &[ReadyDependency::Queue],
        );
        assert!(r.ready);
        assert!(
            r.body
                .contains("cache: FAILING, down (not in server.ready_requires)"),
            "{}",
            r.body
        );
    }

    #[test]
    fn nothing_to_check_is_ready() {
        let r = render(&[], &[ReadyDependency::Cache]);
        assert!(r.ready);
        assert_eq!(r.body, "ready\n");
    }
}
