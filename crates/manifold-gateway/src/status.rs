//! `GET {status_path}/{task_id}` on the main listener: where a client holding a receipt follows
//! its offloaded call — status, attempts, last error and, once done, the upstream's answer —
//! optionally waiting for the end with `?wait=5s` (a long poll that costs nothing while it waits:
//! the queue wakes it when the task's status is written).
//!
//! The task id is the capability (128 random bits). With `status_requires = "authorization"`
//! the request must also carry the `Authorization` header of the request that created the
//! task; a mismatch answers the same 404 as an unknown id, so a status never confirms that an
//! id exists to someone who may not read it.

use crate::handler::json_response;
use crate::upstream::Body;
use http::header::{HeaderMap, HeaderName, HeaderValue, ALLOW, CACHE_CONTROL};
use http::{Method, Request, StatusCode};
use manifold_config::ErrorDetail;
use manifold_queue::status::TaskStatus;
use manifold_queue::{Queue, QueueConfig};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The longest `?wait=` accepted.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// The most long polls that wait at once in one gateway. A waiting poll holds a broker
/// resource on NATS (a watch: an ordered consumer on the server) and on Redis (a pub/sub
/// connection of its own), and a status request takes no concurrency slot, so without a bound
/// one client holding one task id could open `max_connections` × 200 HTTP/2 streams of them and
/// exhaust the broker's consumers or Redis's `maxclients`, which the cache shares. Past it a
/// `?wait=` answers the current status at once, as a wait that ended does: the client asks again.
pub(crate) const MAX_WAITING: usize = 1024;

/// How clients follow offloaded calls: the status path (none when off), whether a status
/// answers only to the creating request's `Authorization`, and the long polls' slots.
#[derive(Debug, Clone)]
pub(crate) struct Follow {
    path: Option<String>,
    requires_auth: bool,
    /// `[queue] idempotency_scope`: the headers whose values say who a client is.
    principal: Arc<[HeaderName]>,
    /// [`MAX_WAITING`] permits, shared by the copies a reload makes.
    waiting: Arc<Semaphore>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            path: None,
            requires_auth: false,
            principal: Arc::new([http::header::AUTHORIZATION]),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
        }
    }
}

impl Follow {
    /// From `[queue]`; `offloads`: whether the gateway has a queue at all (no status route
    /// without one).
    pub(crate) fn new(cfg: &QueueConfig, offloads: bool) -> Self {
        Follow {
            path: (offloads && !cfg.status_path.is_empty()).then(|| cfg.status_path.clone()),
            requires_auth: cfg.status_requires.as_deref() == Some("authorization"),
            // Validated at load: a name that does not parse cannot be here.
            principal: cfg
                .idempotency_scope
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            ..Follow::default()
        }
    }

    /// The values of the headers that say who sent `headers` (`[queue] idempotency_scope`), in
    /// the configured order: a header sent on several lines is their values joined (`; ` for
    /// `Cookie`, whose HTTP/2 crumbs are one cookie string; `, ` for any other), so a session
    /// cookie in any crumb is part of the principal, not only the first line's.
    pub(crate) fn principal<'h>(&self, headers: &'h HeaderMap) -> Vec<Option<Cow<'h, [u8]>>> {
        self.principal
            .iter()
            .map(|name| {
                let mut values = headers.get_all(name).iter();
                let first = values.next()?;
                let Some(second) = values.next() else {
                    return Some(Cow::Borrowed(first.as_bytes()));
                };
                let glue: &[u8] = if name == http::header::COOKIE {
                    b"; "
                } else {
                    b", "
                };
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(glue);
                    joined.extend_from_slice(v.as_bytes());
                }
                Some(Cow::Owned(joined))
            })
            .collect()
    }

    /// A receipt's `status_url`.
    pub(crate) fn url(&self, task_id: &str) -> Option<String> {
        self.path.as_ref().map(|p| format!("{p}/{task_id}"))
    }

    /// What a new task stores to restrict its status: the SHA-256 of the creating request's
    /// `Authorization` (none unless `status_requires = "authorization"`). A request without
    /// the header gets a hash no header can match (header values cannot hold NUL), so nobody
    /// reads its status rather than everybody.
    pub(crate) fn auth_hash(&self, authorization: Option<&HeaderValue>) -> Option<String> {
        self.requires_auth.then(|| match authorization {
            Some(v) => manifold_queue::status::auth_hash(v.as_bytes()),
            None => manifold_queue::status::auth_hash(b"\0no authorization"),
        })
    }
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> http::Response<Body> {
    let mut resp = json_response(
        status,
        &serde_json::json!({"error": {"kind": kind, "message": message.into()}}),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `?wait=` as a duration: absent is no wait; anything unparsable, repeated, or above
/// [`MAX_WAIT`] is the client's error.
fn wait_of(query: Option<&str>) -> Result<Duration, String> {
    let mut waits = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "wait")
        .map(|(_, v)| v.into_owned());
    let Some(text) = waits.next() else {
        return Ok(Duration::ZERO);
    };
    if waits.next().is_some() {
        return Err("give `wait` once".into());
    }
    if text.len() > 32 {
        return Err("`wait` is too long; say e.g. wait=5s".into());
    }
    let wait = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`wait={text}` is not a duration such as 5s or 500ms: {e}"))?;
    if wait > MAX_WAIT {
        return Err(format!(
            "`wait={text}` is above the longest wait, {}",
            humantime::format_duration(MAX_WAIT)
        ));
    }
    Ok(wait)
}

/// Answers a request the router sent to the status route; `raw_id` is the path's last segment,
/// still percent-encoded.
/// `detail`: `server.error_detail`, what the client is told of a failed delivery.
pub(crate) async fn answer<B>(
    queue: Option<&dyn Queue>,
    follow: &Follow,
    req: &Request<B>,
    raw_id: &str,
    detail: ErrorDetail,
) -> http::Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on a task status; allowed: GET, HEAD",
                req.method()
            ),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let wait = match wait_of(req.uri().query()) {
        Ok(w) => w,
        Err(m) => return error(StatusCode::BAD_REQUEST, "input", m),
    };
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such task (or it expired)",
        )
    };
    // Ids are [A-Za-z0-9_-]: anything else (encoded slashes, dots, non-ASCII, NUL) names no task.
    let Some(queue) = queue else {
        return not_found();
    };
    let valid = !raw_id.is_empty()
        && raw_id.len() <= manifold_queue::MAX_ID_LEN
        && raw_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return not_found();
    }
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    // The first read decides who may wait: an unknown or forbidden id never holds a connection.
    let found = match queue.task_status(raw_id).await {
        Ok(Some(s)) if follow.requires_auth && !s.allows(authorization) => return not_found(),
        Ok(Some(s)) => s,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(&e),
    };
    // No slot free: the current status now, as if the wait had ended (see `MAX_WAITING`).
    let slot = (!wait.is_zero() && !found.status.is_final())
        .then(|| Arc::clone(&follow.waiting).try_acquire_owned().ok())
        .flatten();
    let status = match slot {
        None => found,
        Some(_slot) => match queue.wait_status(raw_id, wait).await {
            Ok(Some(s)) => s,
            // Expired or evicted while waiting.
            Ok(None) => return not_found(),
            Err(e) => return unavailable(&e),
        },
    };
    let mut resp = json_response(StatusCode::OK, &public(&status, detail));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What a client reads of a task's status. The stored `last_error` is the delivery's own text:
/// for a failed call, its upstream and each attempt's endpoint and how it ended. With
/// `error_detail = "brief"` a client is told only that the last attempt failed; the admin
/// listener's `/queue/status` and the log keep the whole of it.
fn public(status: &TaskStatus, detail: ErrorDetail) -> serde_json::Value {
    let mut v = status.public();
    if detail == ErrorDetail::Brief && status.last_error.is_some() {
        v["last_error"] = "the last delivery attempt failed".into();
    }
    v
}

fn unavailable(e: &manifold_queue::QueueError) -> http::Response<Body> {
    tracing::warn!(error = %e, "task status: the queue did not answer");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue",
        "the task status store did not answer; try again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_accepts_durations_up_to_30s_and_refuses_the_rest() {
        assert_eq!(wait_of(None), Ok(Duration::ZERO));
        assert_eq!(wait_of(Some("x=1")), Ok(Duration::ZERO));
        assert_eq!(wait_of(Some("wait=5s")), Ok(Duration::from_secs(5)));
        assert_eq!(wait_of(Some("wait=250ms")), Ok(Duration::from_millis(250)));
        assert_eq!(wait_of(Some("wait=30s")), Ok(MAX_WAIT));
        for bad in [
            "wait=31s",
            "wait=1h",
            "wait=soon",
            "wait=",
            "wait=-1s",
            "wait=5s&wait=1s",
            "wait=99999999999999999999999s",
            "wait=%00",
        ] {
            assert!(wait_of(Some(bad)).is_err(), "{bad} accepted");
        }
        assert!(wait_of(Some(&format!("wait={}", "9".repeat(5000)))).is_err());
    }

    /// One client holding one id cannot hold more than the bound of waiting polls: past it a
    /// `?wait=` answers the current status in the same poll, without waiting.
    #[tokio::test]
    async fn long_polls_beyond_the_bound_answer_the_current_status_at_once() {
        use futures::FutureExt as _;
        let dir = std::env::temp_dir().join(format!(
            "manifold-status-waiting-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let cfg = QueueConfig {
            path: dir.clone(),
            ..QueueConfig::default()
        };
        let queue =
            manifold_queue::EmbeddedQueue::open(manifold_queue::EmbeddedOptions::from_config(&cfg))
                .await
                .unwrap();
        let task = manifold_queue::Task::new("k:c", "u", "POST", "/", vec![], vec![]);
        let id = task.id.clone();
        queue.enqueue(task).await.unwrap();
        let follow = Follow {
            waiting: Arc::new(Semaphore::new(2)),
            ..Follow::new(&cfg, true)
        };
        let req = Request::get(format!("/tasks/{id}?wait=30s"))
            .body(())
            .unwrap();
        // Two polls wait (the task is never delivered here)...
        let mut waiting: Vec<_> = (0..2)
            .map(|_| {
                Box::pin(answer(
                    Some(&queue as &dyn Queue),
                    &follow,
                    &req,
                    &id,
                    ErrorDetail::Full,
                ))
            })
            .collect();
        for poll in &mut waiting {
            assert!(poll.as_mut().now_or_never().is_none(), "the poll waits");
        }
        // ...the third answers `queued` at once.
        let resp = answer(
            Some(&queue as &dyn Queue),
            &follow,
            &req,
            &id,
            ErrorDetail::Full,
        )
        .now_or_never()
        .expect("a poll past the bound answers at once");
        assert_eq!(resp.status(), StatusCode::OK);
        // A slot freed is a slot for the next wait.
        waiting.pop();
        assert!(answer(
            Some(&queue as &dyn Queue),
            &follow,
            &req,
            &id,
            ErrorDetail::Full
        )
        .now_or_never()
        .is_none());
        drop(waiting);
        queue.close().await.unwrap();
        drop(queue);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn follow_builds_urls_and_hashes_only_when_asked() {
        let mut cfg = QueueConfig::default();
        let f = Follow::new(&cfg, true);
        assert_eq!(f.url("abc").as_deref(), Some("/tasks/abc"));
        assert_eq!(
            f.auth_hash(Some(&HeaderValue::from_static("Bearer x"))),
            None
        );
        assert_eq!(Follow::new(&cfg, false).url("abc"), None);
        cfg.status_path = String::new();
        assert_eq!(Follow::new(&cfg, true).url("abc"), None);
        cfg.status_requires = Some("authorization".into());
        let f = Follow::new(&cfg, true);
        let h = f
            .auth_hash(Some(&HeaderValue::from_static("Bearer x")))
            .unwrap();
        assert_eq!(h.len(), 64);
        assert!(!h.contains("Bearer"));
        assert_ne!(f.auth_hash(None), Some(h));
        assert_ne!(
            f.auth_hash(None),
            f.auth_hash(Some(&HeaderValue::from_static("")))
        );
    }
}
