//! The compiled configuration: what the gateway runs. Everything here is validated and resolved
//! (names to indexes, durations to `Duration`s, templates to segments), so the request path does
//! no parsing and no name lookups.

use crate::template::{JsonTemplate, StrTemplate};
use serde::{Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_method<S: Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// A whole, validated config file.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Listener settings and limits.
    pub server: ServerSettings,
    /// Upstream services, indexed by calls.
    pub upstreams: Vec<Upstream>,
    /// Routes, in the order they were declared.
    pub routes: Vec<Route>,
    /// `[cache]`: the cache tiers (defaults when the section is absent).
    pub cache: CacheSettings,
    /// `[queue]`: where `mode = "async"` and `mode = "publish"` calls are written durably
    /// (default: embedded, on disk).
    pub queue: crate::queue::QueueConfig,
    /// `[events]`: the broker `mode = "publish"` calls publish to (required by them; `None`
    /// when the section is absent).
    pub events: Option<crate::events::EventsConfig>,
    /// `[telemetry]`: metrics, trace context, span export and the access log (defaults when
    /// the section is absent).
    pub telemetry: crate::TelemetrySettings,
    /// What is valid but probably not meant (`manifold check` prints them, `serve` logs them).
    #[serde(skip)]
    pub warnings: Vec<crate::ConfigWarning>,
}

impl Config {
    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// `[server]`: where to listen and the limits that protect the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    /// The plaintext client-facing listener; `None` in a TLS-only deployment (`tls` set and
    /// `listen` not written).
    pub listen: Option<SocketAddr>,
    /// `tls = { listen, cert, key }`: the HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls: Option<crate::ServerTls>,
    /// The admin listener (`/healthz`, `/readyz`, `/config`); loopback by default.
    pub admin: SocketAddr,
    /// Largest request body accepted; larger ones get 413 without being read.
    pub max_body_bytes: u64,
    /// Largest upstream response body read for composition.
    pub max_response_bytes: u64,
    /// Memory the parsed JSON request bodies of composed routes may take at once, across
    /// the requests in flight, as estimated from their text before parsing: parsed, a JSON
    /// text can take ~100× its size (a `{...}` is a B-tree node of ~640 bytes), so the body
    /// limit alone does not bound it.
    pub max_parsed_bytes: u64,
    /// How long a client may take to send its request headers.
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body the route reads (composition): a
    /// client trickling its body must not hold a connection and a task forever.
    #[serde(serialize_with = "ser_duration")]
    pub body_read_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// `admin_token` / `admin_token_file`: the bearer token the admin listener requires for
    /// mutating endpoints and dead-letter listings. Required when `admin` is not loopback.
    pub admin_token: Option<crate::Secret>,
    /// Most client connections open at once; beyond it, new ones wait in the listen backlog
    /// until one closes, so a flood cannot exhaust file descriptors or memory.
    pub max_connections: u64,
    /// On shutdown, how long `/readyz` answers 503 while the listener still accepts, so load
    /// balancers deregister the gateway before connections are refused ("0s" closes at once).
    #[serde(serialize_with = "ser_duration")]
    pub drain_delay: Duration,
    /// An HTTP/2 connection with no request in flight this long is closed (GOAWAY): idle
    /// multiplexed connections must not hold connection slots forever.
    #[serde(serialize_with = "ser_duration")]
    pub h2_idle_timeout: Duration,
    /// A client that accepts no byte of an answer for this long (the gateway's write to it
    /// blocked all that time) is disconnected, as nginx's `send_timeout`: a client that stops
    /// reading must not hold its connection slot and the upstream connection streaming to it.
    #[serde(serialize_with = "ser_duration")]
    pub send_timeout: Duration,
    /// Proxy routes' default for an escaped slash or backslash in a path (`%2F`, `%5C`).
    pub escaped_slashes: EscapedSlashes,
    /// Peers whose `X-Forwarded-*` headers are believed (CIDRs); from any other peer they are
    /// replaced, since a client can write whatever it likes there.
    #[serde(serialize_with = "ser_nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How many requests the main listener works on at once; past it, 503 + `Retry-After`.
    pub concurrency: crate::policy::Concurrency,
    /// What a client is told about a failed call: everything the upstream stack did, or only
    /// the call and why.
    pub error_detail: ErrorDetail,
    /// The dependencies whose loss makes `/readyz` answer 503 (default: all, `cache` and
    /// `queue`); the others are still checked and shown.
    pub ready_requires: Vec<crate::ReadyDependency>,
    /// How many times a request may already have passed through Manifold gateways (counted
    /// in its `Via` header, which every request the gateway sends upstream carries): one more
    /// is answered 508. An upstream that leads back to a gateway (a typo'd port, a balancer in
    /// front of the gateway itself) otherwise makes each request a new one, each composed
    /// call as many new ones as the route has calls, until the deadline.
    pub loop_limit: u32,
}

fn ser_nets<S: Serializer>(nets: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

/// `escaped_slashes`: what a proxy route does with `%2F` or `%5C` in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Answer 400 (the default): an upstream that decodes them before normalizing would see a
    /// path the route never exposed.
    #[default]
    Reject,
    /// Forward them as they are, not as separators (for upstreams whose names contain `/`).
    Keep,
}

/// `error_detail`: how much of a failed call a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDetail {
    /// `"full"` (the default): the upstream, the endpoint of each attempt, how each ended and
    /// the cause's text, in the JSON error body and `Manifold-Partial`.
    #[default]
    Full,
    /// `"brief"`: the call, its route and the kind of failure, in words that name nothing
    /// behind the gateway (no upstream name, address, attempt or transport message). What was
    /// left out is logged with the answer's `X-Request-Id`.
    Brief,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            tls: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            max_parsed_bytes: 256 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_connections: 8192,
            drain_delay: Duration::from_secs(5),
            h2_idle_timeout: Duration::from_secs(5 * 60),
            send_timeout: Duration::from_secs(60),
            escaped_slashes: EscapedSlashes::Reject,
            trusted_proxies: Vec::new(),
            admin_token: None,
            concurrency: crate::policy::Concurrency::Adaptive,
            error_detail: ErrorDetail::Full,
            ready_requires: crate::ReadyDependency::all(),
            loop_limit: 3,
        }
    }
}

/// One endpoint of an upstream: scheme and authority, plus an optional base path.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// The endpoint as written (shown without a password).
    #[serde(serialize_with = "crate::secret::ser_url")]
    pub url: String,
    /// `http` or `https`.
    pub scheme: String,
    /// `host:port`.
    pub authority: String,
    /// A path prefix every call's path is appended to, without a trailing slash ("" for none).
    pub base_path: String,
}

/// `[upstreams.NAME]`: a service Manifold calls.
#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    /// The name calls refer to.
    pub name: String,
    /// One or more endpoints; `policies.balance` picks each attempt's.
    pub endpoints: Vec<Endpoint>,
    /// Upper bound on one call to this upstream (the route's deadline can cut it shorter).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Upper bound on establishing a connection.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Speak HTTP/2 only: with prior knowledge (h2c) on `http://` endpoints, as the only ALPN
    /// protocol offered on `https://` ones (which otherwise offer `h2` and `http/1.1`).
    pub http2: bool,
    /// `ca`, `client_cert`, `client_key`: how its `https://` endpoints are trusted and what
    /// it presents to them.
    pub tls: crate::UpstreamTls,
    /// Balancing, retries, hedging and circuit breaking (defaults filled in).
    pub policies: crate::policy::UpstreamPolicies,
}

/// `[routes.NAME]`: what a request to a method and path pattern does.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The HTTP method it answers.
    #[serde(serialize_with = "ser_method")]
    pub method: http::Method,
    /// The path pattern, e.g. `/user-profile/{id}`.
    pub path: String,
    /// The names of the pattern's `{…}` parameters, in order.
    pub params: Vec<String>,
    /// End-to-end budget for the whole request; outstanding calls are cancelled when it passes.
    #[serde(serialize_with = "ser_opt_duration")]
    pub deadline: Option<Duration>,
    /// `cache = { … }`: the whole (GET) route's answer is cached.
    pub cache: Option<CachePolicySpec>,
    /// Compose calls, or proxy to one upstream.
    #[serde(flatten)]
    pub kind: RouteKind,
}

/// What a route does.
// One per route, built once per config and never moved on a request's path: a proxy route
// carrying a plan's size costs a few hundred bytes a route, where boxing the plan would add a
// pointer chase to every composed request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Run a plan of calls and compose their results.
    Compose(Plan),
    /// Forward the request as it is to an upstream.
    Proxy {
        /// Index into [`Config::upstreams`].
        upstream: usize,
        /// The upstream's name.
        upstream_name: String,
        /// `%2F` / `%5C` in the path: the route's `escaped_slashes`, else the server's.
        escaped_slashes: EscapedSlashes,
    },
}

/// Whether the client waits for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The response waits for the call.
    Sync,
    /// The call is queued durably and delivered in the background.
    Async,
    /// The call's body is queued durably and published in the background as an event (NATS
    /// subject / RabbitMQ routing key = the call's `subject`) to `[events]`.
    Publish,
}

/// One downstream call of a route, compiled.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// The call's name (how templates refer to its result).
    pub name: String,
    /// Index into [`Config::upstreams`] (`usize::MAX` for a publish call, which has none).
    pub upstream: usize,
    /// The upstream's name ("" for a publish call).
    pub upstream_name: String,
    /// `mode = "publish"`: the subject / routing key the body is published under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// HTTP method.
    #[serde(serialize_with = "ser_method")]
    pub method: http::Method,
    /// Path template (values percent-encoded when rendered).
    pub path: StrTemplate,
    /// Query parameters (name, value template).
    pub query: Vec<(String, StrTemplate)>,
    /// Headers to send (lower-case name, value template). Credential values show as `***`.
    #[serde(serialize_with = "crate::secret::ser_headers")]
    pub headers: Vec<(String, StrTemplate)>,
    /// The names of [`Call::headers`], parsed once here, by index: a name that is not one of
    /// the standard headers is otherwise copied into a buffer of its own on every call.
    #[serde(skip)]
    pub header_names: Vec<http::HeaderName>,
    /// JSON body template, if the call sends a body.
    pub body: Option<JsonTemplate>,
    /// On failure, the result is `null` and the response is marked partial instead of failing.
    pub optional: bool,
    /// Whether the call may be sent more than once (retried past a failed connect, or hedged):
    /// its `idempotent` when written; otherwise true for GET, HEAD, OPTIONS, PUT and DELETE, a
    /// call sending `Idempotency-Key`, and an async call (delivered with one on every attempt).
    pub idempotent: bool,
    /// Sync or async.
    pub mode: Mode,
    /// Expected latency, a hint for `manifold check`'s critical path.
    #[serde(serialize_with = "ser_opt_duration")]
    pub expect: Option<Duration>,
    /// Per-call timeout overriding the upstream's.
    #[serde(serialize_with = "ser_opt_duration")]
    pub timeout: Option<Duration>,
    /// `cache = { … }`: the call's result is cached (only when its method is in the policy's
    /// `methods`, which the compiler checks).
    pub cache: Option<CachePolicySpec>,
    /// The calls whose results its templates read (sorted): the part of its dependencies that
    /// is data; the rest is `after`, ordering only. When one of these failed, the call is not
    /// sent: its input is unavailable.
    pub reads: Vec<usize>,
    /// `on_done` / `on_dead`: the tasks enqueued when the call's task settles.
    #[serde(skip_serializing_if = "crate::CallHooks::is_empty")]
    pub hooks: crate::CallHooks,
}

/// A route's calls as a DAG, with the counters the executor schedules by.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The calls, numbered 0..n in declaration order.
    pub calls: Vec<Call>,
    /// For each call, the calls it waits for (sorted, no duplicates).
    pub deps: Vec<Vec<usize>>,
    /// For each call, the calls waiting for it.
    pub dependents: Vec<Vec<usize>>,
    /// Calls with no dependencies: they start when the request arrives.
    pub roots: Vec<usize>,
    /// Calls grouped by depth (for display; the executor never waits for a whole level).
    pub levels: Vec<Vec<usize>>,
    /// The response to compose.
    pub response: ResponsePlan,
    /// Whether any template reads `{request.body…}` (so the body must be parsed as JSON).
    pub reads_request_body: bool,
    /// The query parameters some template reads (`{query.NAME}`: the calls', their hooks' and
    /// cache keys', the response's), sorted: a value the route never reads is never judged.
    pub query_reads: Vec<String>,
    /// The headers some template reads (`{header.NAME}`, lower case), sorted, for the same
    /// rule: a header a template reads must be UTF-8 text.
    pub header_reads: Vec<String>,
    /// The route's `enqueue`: when its async and publish tasks are written to the queue.
    pub enqueue: Enqueue,
}

/// `enqueue`: when a route's async and publish calls are written to the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueue {
    /// Rendered when their inputs are ready, held, and written (all of them) only once every
    /// required call has succeeded, before the answer: a failed request leaves no task behind.
    #[default]
    OnSuccess,
    /// Written as soon as their inputs are ready, while other calls still run: a required call
    /// failing later does not take them back.
    Eager,
}

impl Plan {
    /// The number of dependencies of each call: the executor's starting counters.
    pub fn indegrees(&self) -> Vec<u32> {
        self.deps.iter().map(|d| d.len() as u32).collect()
    }

    /// The longest path through the DAG weighted by the calls' `expect` hints (missing hints
    /// count as zero), with its total. `None` when no call has a hint.
    pub fn critical_path(&self) -> Option<(Vec<usize>, Duration)> {
        if self.calls.iter().all(|c| c.expect.is_none()) {
            return None;
        }
        // Topological order is the level order.
        let n = self.calls.len();
        let mut finish = vec![Duration::ZERO; n];
        let mut via: Vec<Option<usize>> = vec![None; n];
        for level in &self.levels {
            for &i in level {
                let (start, from) = self.deps[i]
                    .iter()
                    .filter(|&&d| self.calls[d].mode == Mode::Sync)
                    .map(|&d| (finish[d], Some(d)))
                    .max_by_key(|(f, _)| *f)
                    .unwrap_or((Duration::ZERO, None));
                let own = match self.calls[i].mode {
                    Mode::Sync => self.calls[i].expect.unwrap_or_default(),
                    // An async or publish call costs the client one durable enqueue, not the call.
                    Mode::Async | Mode::Publish => Duration::ZERO,
                };
                finish[i] = start + own;
                via[i] = from;
            }
        }
        let (mut last, total) = finish
            .iter()
            .enumerate()
            .max_by_key(|(_, f)| **f)
            .map(|(i, f)| (i, *f))?;
        let mut path = vec![last];
        while let Some(prev) = via[last] {
            path.push(prev);
            last = prev;
        }
        path.reverse();
        Some((path, total))
    }
}

/// `[routes.NAME.response]`.
#[derive(Debug, Clone, Serialize)]
pub struct ResponsePlan {
    /// Status code on success.
    pub status: u16,
    /// Extra response headers (lower-case name, value template). Credential values show as
    /// `***`.
    #[serde(serialize_with = "crate::secret::ser_headers")]
    pub headers: Vec<(String, StrTemplate)>,
    /// The JSON body template.
    pub body: JsonTemplate,
}

/// Default bound of the in-process cache tier (64 MiB).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound of one cached answer (4 MiB).
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: u64 = 4 * 1024 * 1024;
/// Default key prefix in the shared tier (Redis or Memcached).
pub const DEFAULT_CACHE_PREFIX: &str = "manifold:";

/// `[cache]`: the tiers every cache policy shares.
#[derive(Debug, Clone, Serialize)]
pub struct CacheSettings {
    /// Bound of the in-process tier in bytes.
    pub max_bytes: u64,
    /// Answers heavier than this pass through uncached.
    pub max_entry_bytes: u64,
    /// `redis://…` of the shared tier, if any. Serialized without its password.
    #[serde(serialize_with = "ser_redacted_url")]
    pub redis: Option<String>,
    /// Prepended to every key in the shared tier (one per deployment sharing a Redis or
    /// memcached servers).
    pub prefix: String,
    /// Bound on each Redis command on the request path.
    #[serde(serialize_with = "ser_duration")]
    pub redis_timeout: Duration,
    /// After a Redis error, requests skip Redis this long.
    #[serde(serialize_with = "ser_duration")]
    pub redis_retry_after: Duration,
    /// `host:port` of each server of a Memcached shared tier (empty: none; never with `redis`).
    pub memcached: Vec<String>,
    /// Bound on each Memcached command on the request path.
    #[serde(serialize_with = "ser_duration")]
    pub memcached_timeout: Duration,
    /// After an error, requests skip that Memcached server this long.
    #[serde(serialize_with = "ser_duration")]
    pub memcached_retry_after: Duration,
    /// The servers' item size limit (`memcached -I`): larger entries are not stored there.
    pub memcached_max_item_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES,
            redis: None,
            prefix: DEFAULT_CACHE_PREFIX.to_owned(),
            redis_timeout: Duration::from_millis(50),
            redis_retry_after: Duration::from_secs(1),
            memcached: Vec::new(),
            memcached_timeout: Duration::from_millis(50),
            memcached_retry_after: Duration::from_secs(1),
            memcached_max_item_bytes: 1024 * 1024,
        }
    }
}

/// `/config` is served on the admin listener: never show a Redis password there.
fn ser_redacted_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&redact_url(u)),
        None => s.serialize_none(),
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`: [`crate::redact::url`], the
/// one rule for every URL shown.
pub fn redact_url(url: &str) -> String {
    crate::redact::url(url)
}

/// A call's or route's `cache = { … }`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct CachePolicySpec {
    /// A 2xx answer is fresh this long.
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Then, this long: answered at once while one refresh runs; also what a failed refresh
    /// falls back to.
    #[serde(serialize_with = "ser_duration")]
    pub stale: Duration,
    /// Negative caching: non-2xx answers are kept this long.
    #[serde(serialize_with = "ser_opt_duration")]
    pub errors: Option<Duration>,
    /// The upstream's `Cache-Control` wins over `ttl`/`stale`.
    pub respect_cache_control: bool,
    /// A key template replacing the default key (upstream, method, path and query, `vary`).
    pub key: Option<StrTemplate>,
    /// Header names (lower case) whose values are part of the default key: for a call, headers
    /// the call sends; for a route, the client's request headers.
    pub vary: Vec<String>,
    /// Methods that may be cached (default `GET` only).
    #[serde(serialize_with = "ser_methods")]
    pub methods: Vec<http::Method>,
    /// XFetch `beta` for probabilistic early refresh.
    pub early_refresh: Option<f64>,
    /// With Redis: the lease of the cross-replica fetch lock.
    #[serde(serialize_with = "ser_opt_duration")]
    pub lock: Option<Duration>,
    /// A proxy route's `shared = true`: requests carrying `Authorization` or `Cookie` are
    /// cached and answered like any other (the operator says the answers are the same for all).
    pub shared: bool,
    /// The request values the key covers, inferred from the templates at load (see
    /// [`crate::cache_key`]); each is hashed with its presence.
    pub key_inputs: Vec<crate::cache_key::KeyInput>,
    /// Calls whose results the call's request reads (covered through the rendered request).
    pub key_calls: Vec<String>,
}

fn ser_methods<S: Serializer>(m: &[http::Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(http::Method::as_str))
}
