//! Durable offload: an `async` call is rendered when its inputs are ready, written to the queue
//! (durably: the enqueue returns only once the task is safe) before the response goes out, and
//! delivered later by the dispatcher through the same upstream stacks as sync calls.
//!
//! Each task carries an idempotency key stable per request and call: the client's own
//! `Idempotency-Key` header when it sent one (so a client retry maps to the same key), a fresh
//! random id otherwise, joined with the call's name. The upstream sees it on every attempt, which
//! turns at-least-once delivery into exactly-once processing where the upstream honours it.
//!
//! A `publish` call takes the same road with a different last step: its task carries a subject
//! (`Task::publish`), and the dispatcher hands it to the `[events]` publisher instead of an
//! upstream client, acking it only once the broker confirmed.

use crate::error::{CallError, CallErrorKind};
use crate::upstream::{Body, Budget, Read, Upstream};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use manifold_queue::{
    Deliver, DeliveryError, DispatchMetrics, DispatchPolicy, Dispatcher, EventsConfig, Outcome,
    Publisher, Queue, QueueConfig, QueueError, Task,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A shared handle on the queue (the trait object has no `Debug`).
#[derive(Clone)]
pub(crate) struct QueueRef(pub(crate) Arc<dyn Queue>, pub(crate) Arc<DispatchMetrics>);

impl std::fmt::Debug for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({})", self.0.backend().as_str())
    }
}

impl QueueRef {
    /// Depth, oldest age, in-flight and dead letters, with the dispatcher's counters: what the
    /// admin `/queue` endpoint shows.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let stats = match self.0.stats().await {
            Ok(s) => serde_json::to_value(s).unwrap_or_default(),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        serde_json::json!({"queue": stats, "dispatch": serde_json::to_value(self.1.snapshot()).unwrap_or_default()})
    }
}

/// The queue and its dispatcher, owned by the gateway.
pub(crate) struct Offload {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) metrics: Arc<DispatchMetrics>,
    /// The stacks the dispatcher delivers through, by upstream name: a reload stores the new
    /// ones here (see [`Stacks`]).
    pub(crate) stacks: Arc<Stacks>,
    stop: CancellationToken,
    dispatcher: JoinHandle<manifold_queue::DrainReport>,
    events: Option<Arc<Publisher>>,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("backend", &self.queue.backend())
            .finish_non_exhaustive()
    }
}

impl Offload {
    /// Connect to the `[events]` broker (when there is one), open the queue and start
    /// delivering. The broker is connected first and at start, so a wrong URL fails the start
    /// loudly; once running, an unreachable broker only delays events (they wait in the queue).
    pub(crate) async fn start(
        config: &QueueConfig,
        events: Option<&EventsConfig>,
        clients: &[Arc<Upstream>],
        tracer: Option<manifold_telemetry::Tracer>,
        redis: Option<(&str, &str)>,
    ) -> Result<Offload, crate::GatewayError> {
        let events = match events {
            Some(cfg) => {
                let publisher = Publisher::connect(cfg)
                    .await
                    .map_err(crate::GatewayError::Events)?;
                tracing::info!(backend = publisher.backend().as_str(), "events: connected");
                Some(Arc::new(publisher))
            }
            None => None,
        };
        if config.backend == manifold_queue::Backend::Rabbitmq {
            match redis {
                Some(_) => tracing::info!(
                    "task statuses: in Redis ([cache] redis), shared by every replica"
                ),
                None => tracing::warn!(
                    "task statuses: RabbitMQ without [cache] redis keeps them in a local file; \
                     with several gateway replicas a client may ask one that does not know its \
                     task: set [cache] redis"
                ),
            }
        }
        let queue = manifold_queue::open_with_redis(config, redis)
            .await
            .map_err(|e| open_error(config, e))?;
        let stacks = Arc::new(Stacks(arc_swap::ArcSwap::from_pointee(
            clients
                .iter()
                .map(|c| (c.name.clone(), Arc::clone(c)))
                .collect(),
        )));
        let deliver = Arc::new(UpstreamDeliver {
            clients: Arc::clone(&stacks),
            events: events.clone(),
            tracer,
            max_result_bytes: config.max_result_bytes,
        });
        let dispatcher = Dispatcher::new(
            Arc::clone(&queue),
            deliver,
            DispatchPolicy::from_config(config),
        );
        let metrics = dispatcher.metrics();
        let stop = CancellationToken::new();
        let dispatcher = tokio::spawn(dispatcher.run(stop.clone()));
        Ok(Offload {
            queue,
            metrics,
            stacks,
            stop,
            dispatcher,
            events,
        })
    }

    /// Stop delivering (in-flight deliveries finish up to the queue's drain timeout; the rest
    /// stay queued for the next start) and close the queue.
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        match self.dispatcher.await {
            Ok(report) => tracing::info!(?report, "dispatcher stopped"),
            Err(e) => tracing::warn!(error = %e, "dispatcher task failed"),
        }
        if let Err(e) = self.queue.close().await {
            tracing::warn!(error = %e, "closing the queue");
        }
        if let Some(events) = &self.events {
            events.close().await;
        }
    }
}

/// The error of opening the queue; for the embedded one, naming its path, and saying when
/// another process holds its file (a second `manifold serve` on the same path: the embedded
/// queue is single-node, redb locks the file).
fn open_error(config: &QueueConfig, e: QueueError) -> crate::GatewayError {
    if config.backend != manifold_queue::Backend::Embedded {
        return crate::GatewayError::Queue(e);
    }
    let mut held = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        held |= s.to_string().contains("already open");
        source = s.source();
    }
    crate::GatewayError::EmbeddedQueue {
        path: config.path.display().to_string(),
        hint: if held {
            "; another process has it open (another `manifold serve` with this [queue] path?): \
             the embedded queue is single-node, replicas need [queue] backend = \"nats\" or \
             \"rabbitmq\" (docs/replicas.md)"
        } else {
            ""
        },
        source: e,
    }
}

/// Accept a rendered call: write it durably, then answer its [`receipt`] as the call's result
/// (so the response can carry `{CALL.task_id}`).
pub(crate) async fn enqueue(
    queue: &dyn Queue,
    task: Task,
    follow: &crate::status::Follow,
) -> Result<serde_json::Value, CallError> {
    let receipt = receipt(&task, follow);
    write(queue, task).await.map(|()| receipt)
}

/// An async or publish call's result: `{"task_id", "idempotency_key", "status": "queued",
/// "status_url"}` (`status_url` only while `[queue] status_path` is on: a path on this
/// gateway's main listener, relative so it holds behind any proxy).
/// The id is given when the task is rendered, so a held task's receipt is known before it is
/// written (and the answer carrying it goes out only after it was).
pub(crate) fn receipt(task: &Task, follow: &crate::status::Follow) -> serde_json::Value {
    let mut receipt = serde_json::json!({"task_id": task.id, "idempotency_key": task.idempotency_key, "status": "queued"});
    if let Some(url) = follow.url(&task.id) {
        receipt["status_url"] = serde_json::Value::String(url);
    }
    receipt
}

/// Write `task` durably: `Ok` only once the queue has it.
pub(crate) async fn write(queue: &dyn Queue, task: Task) -> Result<(), CallError> {
    match queue.enqueue(task).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_full() => Err(CallError::new(
            CallErrorKind::QueueFull(e.retry_after().unwrap_or(Duration::from_secs(1))),
            format!("the offload queue is full: {e}"),
        )),
        // The client's values made the task too large: 413, not a 503 that invites the same
        // request again.
        Err(e @ QueueError::TooLarge { .. }) => Err(CallError::new(
            CallErrorKind::TaskTooLarge,
            format!(
                "the call's task is too large for the offload queue ([queue] max_task_bytes): {e}"
            ),
        )),
        Err(e) => Err(CallError::new(
            CallErrorKind::Queue,
            format!("could not queue the call durably: {e}"),
        )),
    }
}

/// Turn a rendered origin-form request into a task: its path and query (the dispatcher's
/// stack picks an endpoint at delivery time), the call's headers, the body bytes.
pub(crate) fn task_from_request(
    request: Request<Bytes>,
    upstream: &str,
    call: &str,
    client_key: Option<&manifold_queue::ClientKey<'_>>,
) -> Task {
    let (parts, body) = request.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() != crate::upstream::DEADLINE_HEADER)
        // As UTF-8, not `to_str` (visible ASCII only): a configured header rendered from text
        // (`José` from the client's body) is a valid header value a sync call sends, and was
        // dropped from the task without a word. Rendered values are text, so this keeps them
        // all; only bytes that are no text at all (none a template renders) are left out.
        .filter_map(|(n, v)| {
            let v = std::str::from_utf8(v.as_bytes()).ok()?;
            Some((n.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let task = Task::new(
        "pending",
        upstream,
        parts.method.as_str(),
        pq,
        headers,
        body.to_vec(),
    );
    with_key(task, client_key, call)
}

/// Gives `task` its idempotency key ([`manifold_queue::task_key`]): the client's own key scoped
/// to its route and `Authorization` when it sent one, so a client retry of the same request
/// carries the same key and nothing else does; else the task's fresh id.
pub(crate) fn with_key(
    mut task: Task,
    client_key: Option<&manifold_queue::ClientKey<'_>>,
    call: &str,
) -> Task {
    task.idempotency_key = manifold_queue::task_key(client_key, &task.id, call);
    task
}

/// The upstream stacks deliveries go through, by name. A reload stores a new map: changed
/// upstreams deliver through their new stacks from the next delivery on, unchanged ones keep
/// theirs (the same `Arc`s as the handlers'), and an upstream the new config removed stays here,
/// so tasks accepted for it before the reload are still delivered, not dead-lettered as
/// "not configured" (a restart drops it).
#[derive(Debug)]
pub(crate) struct Stacks(arc_swap::ArcSwap<HashMap<String, Arc<Upstream>>>);

impl Stacks {
    /// Deliver through `clients` from now on, keeping the stacks of upstreams they do not name.
    pub(crate) fn update(&self, clients: &[Arc<Upstream>]) {
        let mut map = HashMap::clone(&self.0.load());
        for c in clients {
            map.insert(c.name.clone(), Arc::clone(c));
        }
        self.0.store(Arc::new(map));
    }

    #[cfg(test)]
    pub(crate) fn for_test(clients: &[Arc<Upstream>]) -> Stacks {
        let map = clients
            .iter()
            .map(|c| (c.name.clone(), Arc::clone(c)))
            .collect();
        Stacks(arc_swap::ArcSwap::from_pointee(map))
    }

    /// The stack deliveries to `upstream` go through now.
    #[cfg(test)]
    pub(crate) fn get(&self, upstream: &str) -> Option<Arc<Upstream>> {
        self.0.load().get(upstream).cloned()
    }
}

/// Delivers tasks through the gateway's upstream stacks, and events through the `[events]`
/// publisher.
struct UpstreamDeliver {
    clients: Arc<Stacks>,
    events: Option<Arc<Publisher>>,
    /// Records each delivery as a CONSUMER span, the child of the PRODUCER span whose
    /// `traceparent` the task carries (none with `tracing = false`).
    tracer: Option<manifold_telemetry::Tracer>,
    /// `[queue] max_result_bytes`: how much of an answer is kept as the task's result.
    max_result_bytes: usize,
}

impl Deliver for UpstreamDeliver {
    async fn deliver(&self, task: &Task) -> Result<(), DeliveryError> {
        self.deliver_outcome(task).await.map(|_| ())
    }

    async fn deliver_outcome(&self, task: &Task) -> Result<Outcome, DeliveryError> {
        if let Some(subject) = &task.publish {
            return match &self.events {
                Some(publisher) => publisher.publish(task).await.map(|()| Outcome {
                    status: 200,
                    body: Some(Vec::new()),
                }),
                // Accepted under a config that had `[events]`: keep it as a dead letter (with
                // this reason) to replay once `[events]` is back, rather than drop it.
                None => Err(DeliveryError::permanent(format!(
                    "event for {subject}: no `[events]` section is configured to publish it to"
                ))),
            };
        }
        // An owned `Arc`: no arc-swap guard is held across the delivery's awaits.
        let client = self.clients.0.load().get(&task.upstream).cloned();
        let Some(client) = client else {
            return Err(DeliveryError::permanent(format!(
                "upstream `{}` is not configured",
                task.upstream
            )));
        };
        let mut request = build(task).map_err(DeliveryError::permanent)?;
        let trace = self.tracer.as_ref().map(|tracer| {
            let trace = tracer.start(
                manifold_telemetry::Incoming::from_headers(request.headers()),
                manifold_telemetry::RootInfo {
                    kind: manifold_telemetry::RootKind::Consumer,
                    method: request.method().clone(),
                    route: Arc::from(task.upstream.as_str()),
                    path: manifold_telemetry::UrlPath::copied(request.uri().path()),
                },
            );
            let call = manifold_queue::call_of(&task.idempotency_key, &task.id)
                .unwrap_or(task.upstream.as_str());
            request
                .extensions_mut()
                .insert(crate::telemetry::CallTrace::new(
                    crate::telemetry::TraceCtx::for_delivery(&trace),
                    Arc::from(call),
                    false,
                ));
            trace
        });
        let result = self.send(&client, request).await;
        if let Some(trace) = trace {
            let status = match &result {
                Ok(o) => o.status,
                Err(_) => 502,
            };
            trace.end(manifold_telemetry::ServerOutcome {
                status,
                ..manifold_telemetry::ServerOutcome::default()
            });
        }
        result
    }
}

impl UpstreamDeliver {
    async fn send(
        &self,
        client: &Upstream,
        request: Request<Bytes>,
    ) -> Result<Outcome, DeliveryError> {
        // No client waits for a delivery: the upstream's timeout alone bounds it, and no
        // `Manifold-Deadline-Ms` is announced. The stack retries a failed connect at once on
        // another endpoint (nothing was sent), and nothing else: the queue retries every other
        // failure on its own, durable schedule, and retrying here too would multiply them.
        let budget = Budget {
            deadline: None,
            timeout: None,
            announce: false,
            idempotent: None,
            connect_only: true,
        };
        let read = Read::Keep {
            max: self.max_result_bytes,
        };
        match client.fetch(request, budget, read).await {
            Err(e) => Err(DeliveryError::retryable(e.to_string())),
            Ok(answer) if answer.status.is_success() => {
                let omitted = answer
                    .headers
                    .contains_key(crate::upstream::RESULT_OMITTED_HEADER);
                Ok(Outcome {
                    status: answer.status.as_u16(),
                    body: (!omitted).then(|| answer.body.to_vec()),
                })
            }
            Ok(answer) => {
                let e = DeliveryError::from_status(answer.status.as_u16());
                let retry_after = answer
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(match retry_after {
                    Some(d) => e.with_retry_after(d),
                    None => e,
                })
            }
        }
    }
}

/// A task as an origin-form request; the stack adds the endpoint.
fn build(task: &Task) -> Result<Request<Bytes>, String> {
    let uri = PathAndQuery::try_from(task.path_and_query.as_str())
        .map(Uri::from)
        .map_err(|e| format!("bad URL in task: {e}"))?;
    let method = http::Method::from_bytes(task.method.as_bytes())
        .map_err(|e| format!("bad method in task: {e}"))?;
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in task.delivery_headers() {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(format!("bad header `{name}` in task"));
        };
        builder = builder.header(n, v);
    }
    builder.body(Bytes::from(task.body.clone())).map_err(|e| {
        format!(
            "cannot build the delivery: {}",
            crate::upstream::error_chain(&e)
        )
    })
}

/// The most dead letters one `GET /queue/dead` lists.
const MAX_DEAD_LISTED: usize = 1000;

/// The admin endpoints of the queue:
/// `GET /queue` (stats), `GET /queue/status/{id}` (a task's status with its history),
/// `GET /queue/dead[?limit=N]`, `GET /queue/dead/{id}`,
/// `POST /queue/replay?id=ID|all=1`, `DELETE /queue/dead?id=ID|all=1`.
pub(crate) async fn admin(
    q: &QueueRef,
    req: &http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    use crate::handler::json_response;
    use http::{Method, StatusCode};
    let param = |name: &str| {
        req.uri().query().and_then(|qs| {
            form_urlencoded::parse(qs.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let selection = || match (param("id"), param("all")) {
        (Some(id), None) if !id.is_empty() => Some(manifold_queue::Selection::Id(id)),
        (None, Some(_)) => Some(manifold_queue::Selection::All),
        _ => None,
    };
    let bad = |m: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": {"kind": "input", "message": m}}),
        )
    };
    let failed = |e: QueueError| {
        json_response(
            StatusCode::BAD_GATEWAY,
            &serde_json::json!({"error": {"kind": "queue", "message": e.to_string()}}),
        )
    };
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/queue") => json_response(StatusCode::OK, &q.status().await),
        (&Method::GET, "/queue/dead") => {
            // At most `MAX_DEAD_LISTED` (as `GET /traces` cuts its `limit`): each listed task
            // holds its payload, and a listing is built whole in memory.
            let limit = match param("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(n)) if n > 0 => n.min(MAX_DEAD_LISTED),
                Some(_) => {
                    return bad("limit must be a whole number from 1 (at most 1000 are listed)")
                }
            };
            match q.0.dead_letters(limit).await {
                Ok(tasks) => {
                    // Listings show what was sent, never the credentials it was sent with.
                    let tasks: Vec<_> = tasks.iter().map(manifold_queue::redact::task).collect();
                    json_response(StatusCode::OK, &serde_json::json!({"dead": tasks}))
                }
                Err(e) => failed(e),
            }
        }
        (&Method::GET, p) if p.starts_with("/queue/status/") => {
            let id = &p["/queue/status/".len()..];
            match q.0.task_status(id).await {
                Ok(Some(mut status)) => {
                    // Operators see the history; the Authorization hash stays inside.
                    status.auth = None;
                    json_response(
                        StatusCode::OK,
                        &serde_json::to_value(&status).unwrap_or_default(),
                    )
                }
                Ok(None) => json_response(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": {"kind": "not_found", "message": "no such task (or its status expired)"}}),
                ),
                Err(e) => failed(e),
            }
        }
        (&Method::GET, p) if p.starts_with("/queue/dead/") => {
            let id = &p["/queue/dead/".len()..];
            match q.0.dead_letter_get(id).await {
                Ok(Some(task)) => json_response(
                    StatusCode::OK,
                    &serde_json::json!(manifold_queue::redact::task(&task)),
                ),
                Ok(None) => json_response(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": {"kind": "not_found", "message": format!("no dead letter {id}")}}),
                ),
                Err(e) => failed(e),
            }
        }
        (&Method::POST, "/queue/replay") => match selection() {
            Some(sel) => match q.0.replay(&sel).await {
                Ok(n) => json_response(StatusCode::OK, &serde_json::json!({"replayed": n})),
                Err(e) => failed(e),
            },
            None => bad("say which dead letters: ?id=TASK_ID or ?all=1"),
        },
        (&Method::DELETE, "/queue/dead") => match selection() {
            Some(sel) => match q.0.purge(&sel).await {
                Ok(n) => json_response(StatusCode::OK, &serde_json::json!({"purged": n})),
                Err(e) => failed(e),
            },
            None => bad("say which dead letters: ?id=TASK_ID or ?all=1"),
        },
        _ => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"kind": "no_route", "message": "queue admin: GET /queue, GET /queue/status/ID, GET /queue/dead[/ID], POST /queue/replay?id=|all=1, DELETE /queue/dead?id=|all=1"}}),
        ),
    }
}
