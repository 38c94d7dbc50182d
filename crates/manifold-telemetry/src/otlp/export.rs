//! The OTLP/HTTP exporter: a bounded queue the request path offers finished traces to without
//! ever waiting, and one background task that batches them and POSTs protobuf to the collector.
//!
//! The task runs on a thread of its own (with a single-threaded runtime), not on the runtime of
//! the requests: encoding a full batch (2,048 spans, about 3,200 instructions each) takes a few
//! milliseconds, and on a request worker it held up every request queued behind it. On its own
//! thread the kernel schedules it beside the workers instead, and its timer, its wake-ups and
//! its connection to the collector stay off them too.
//!
//! Memory is bounded by `queue_capacity` traces of at most `max_spans_per_trace` spans each, plus
//! the one batch in flight. A slow collector holds only that batch (one request at a time, with a
//! timeout), so the queue fills and further traces are dropped and counted; a down collector fails
//! fast (connect refused) or at the timeout, and its batch is dropped and counted. No retries:
//! a retried batch would hold memory while new traces keep coming, and the next batch is fresher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::encode::ResourceInfo;
use super::queue::{ExportQueue, Producers};
use super::wire::RequestEncoder;
use crate::error::TelemetryError;
use crate::span::FinishedTrace;
use crate::stats::{DropReason, SpanStats};

/// `Content-Type` of OTLP/HTTP protobuf.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";

/// Exporter options (`[telemetry] otlp = { … }`).
#[derive(Clone, Debug)]
pub struct OtlpOptions {
    /// `endpoint`: `http://host:port[/base]`; `/v1/traces` is appended.
    pub endpoint: String,
    /// The longest one export may take, connect included.
    pub timeout: Duration,
    /// Finished traces waiting for export, at most; past it they are dropped and counted.
    pub queue_capacity: usize,
    /// Spans per export request, at most (a batch closes at this or at `flush_interval`).
    pub max_batch_spans: usize,
    /// The longest a trace waits in a batch that is not full.
    pub flush_interval: Duration,
}

impl OtlpOptions {
    /// Defaults for the other options, for this endpoint.
    pub fn new(endpoint: impl Into<String>) -> OtlpOptions {
        OtlpOptions {
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(5),
            queue_capacity: 4096,
            max_batch_spans: 2048,
            flush_interval: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<Uri, TelemetryError> {
        let positive = |name, ok: bool, value: String| {
            if ok {
                Ok(())
            } else {
                Err(TelemetryError::Option {
                    name,
                    value,
                    reason: "must be positive and at most a million (or 10 minutes)",
                })
            }
        };
        let ten_min = Duration::from_secs(600);
        positive(
            "otlp.timeout",
            !self.timeout.is_zero() && self.timeout <= ten_min,
            format!("{:?}", self.timeout),
        )?;
        positive(
            "otlp.flush_interval",
            !self.flush_interval.is_zero() && self.flush_interval <= ten_min,
            format!("{:?}", self.flush_interval),
        )?;
        positive(
            "otlp.queue_capacity",
            (1..=1_000_000).contains(&self.queue_capacity),
            self.queue_capacity.to_string(),
        )?;
        positive(
            "otlp.max_batch_spans",
            (1..=1_000_000).contains(&self.max_batch_spans),
            self.max_batch_spans.to_string(),
        )?;
        traces_uri(&self.endpoint)
    }
}

/// `{endpoint}/v1/traces`, for an `http://` or `https://` endpoint without query or fragment.
pub fn traces_uri(endpoint: &str) -> Result<Uri, TelemetryError> {
    let bad = |reason| TelemetryError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or(bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("a query is not allowed"));
    }
    let base = uri.path().trim_end_matches('/');
    Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.as_str())
        .path_and_query(format!("{base}/v1/traces"))
        .build()
        .map_err(|_| bad("not a URL"))
}

/// Where the request path offers finished traces. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ExportHandle {
    producers: Arc<Producers>,
}

impl ExportHandle {
    /// Queue a trace for export; `false` (and nothing queued) when the queue is full or the
    /// exporter has stopped. Never waits (beyond a lock held for a push).
    pub fn offer(&self, trace: Arc<FinishedTrace>) -> bool {
        self.producers.0.offer(trace)
    }
}

/// The background task on its own thread; [`ExporterTask::shutdown`] flushes what is queued and
/// stops it. Dropped without a shutdown, the task goes on until every [`ExportHandle`] is gone,
/// then sends what waits and ends.
#[derive(Debug)]
pub struct ExporterTask {
    stop: watch::Sender<bool>,
    /// Sent to end the task at once (the grace is over); never sent when dropped.
    abort: oneshot::Sender<()>,
    /// Resolves when the task has ended.
    done: oneshot::Receiver<()>,
}

impl ExporterTask {
    /// Ask the exporter to flush what is queued and stop; wait at most `grace` for it.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace, &mut self.done).await.is_err() {
            let _ = self.abort.send(());
        }
    }
}

/// Start the exporter on a thread of its own (see the module's doc).
pub fn spawn(
    options: &OtlpOptions,
    resource: ResourceInfo,
    stats: Arc<SpanStats>,
) -> Result<(ExportHandle, ExporterTask), TelemetryError> {
    let uri = options.validate()?;
    let queue = Arc::new(ExportQueue::new(
        options.queue_capacity,
        options.max_batch_spans,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(options.timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = tls_config(&uri, &options.endpoint)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let batcher = Batcher {
        queue: Arc::clone(&queue),
        stop: stop_rx,
        client,
        uri,
        resource,
        stats,
        options: options.clone(),
        encoder: RequestEncoder::default(),
    };
    let thread_error = |e: std::io::Error| TelemetryError::ExporterThread(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(thread_error)?;
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("manifold-otlp".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    () = batcher.run() => {}
                    // Only a sent abort ends it; a dropped `ExporterTask` lets it finish.
                    Ok(()) = abort_rx => {}
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(thread_error)?;
    Ok((
        ExportHandle {
            producers: Arc::new(Producers(queue)),
        },
        ExporterTask {
            stop: stop_tx,
            abort: abort_tx,
            done: done_rx,
        },
    ))
}

/// The collector's TLS: the system's trust store, read when the exporter starts (for an
/// `http://` endpoint the config is built but never used). An `https://` endpoint with no
/// system roots is refused here rather than failing every export.
fn tls_config(uri: &Uri, endpoint: &str) -> Result<rustls::ClientConfig, TelemetryError> {
    let bad = |reason| TelemetryError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    if uri.scheme_str() == Some("https") {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(bad(
                "https needs the system's root certificates and none were found (install \
                 ca-certificates, or set SSL_CERT_FILE)",
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| bad("rustls refused its default protocol versions"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

struct Batcher {
    queue: Arc<ExportQueue>,
    stop: watch::Receiver<bool>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    resource: ResourceInfo,
    stats: Arc<SpanStats>,
    options: OtlpOptions,
    /// Kept from export to export: its cache of the spans' unchanging parts (see
    /// [`RequestEncoder`]).
    encoder: RequestEncoder,
}

/// Resolves when a stop is asked for; never if the sender is gone without asking.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Batcher {
    async fn run(mut self) {
        let mut batch: Vec<Arc<FinishedTrace>> = Vec::new();
        loop {
            if self.queue.orphaned() {
                break;
            }
            // Sleep until a batch starts (the first trace after an empty queue wakes us).
            if self.queue.is_empty() {
                tokio::select! {
                    biased;
                    () = stopped(&mut self.stop) => break,
                    () = self.queue.woken() => continue,
                }
            }
            // A batch has started: it closes when full or at the flush interval.
            let deadline = Instant::now() + self.options.flush_interval;
            let mut stopping = false;
            while !self.queue.batch_ready() && !self.queue.orphaned() {
                tokio::select! {
                    biased;
                    () = stopped(&mut self.stop) => { stopping = true; break; }
                    () = self.queue.woken() => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.queue.take_batch(&mut batch);
            self.export(&mut batch).await;
            if stopping {
                break;
            }
        }
        // Stopping (or every handle gone): what is queued now, in full batches, each export
        // bounded by the timeout (and the whole by the caller's grace).
        self.queue.close();
        while self.queue.take_batch(&mut batch) > 0 {
            self.export(&mut batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<Arc<FinishedTrace>>) {
        if batch.is_empty() {
            return;
        }
        let spans: u64 = batch.iter().map(|t| t.span_count() as u64).sum();
        let body = self.encoder.encode(
            &self.resource,
            batch.iter().map(|t| &**t),
            usize::try_from(spans).unwrap_or(0),
        );
        batch.clear();
        match tokio::time::timeout(self.options.timeout, self.post(body)).await {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(spans);
                self.stats.exported(spans - rejected);
                self.stats.dropped(DropReason::ExportFailed, rejected);
            }
            Ok(Err(())) | Err(_) => self.stats.dropped(DropReason::ExportFailed, spans),
        }
    }

    /// POST one batch; the number of spans the collector said it rejected.
    async fn post(&self, body: Bytes) -> Result<u64, ()> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, CONTENT_TYPE_PROTOBUF)
            .body(Full::new(body))
            .map_err(|_| ())?;
        let response = self.client.request(request).await.map_err(|_| ())?;
        if !response.status().is_success() {
            return Err(());
        }
        // A partial success names the spans it rejected; a body we cannot read means none.
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let rejected = ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_to_the_base() {
        let cases = [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector/otlp", "http://collector/otlp/v1/traces"),
            ("http://[::1]:4318", "http://[::1]:4318/v1/traces"),
            ("https://collector:4318", "https://collector:4318/v1/traces"),
        ];
        for (endpoint, want) in cases {
            let uri = traces_uri(endpoint).expect("valid");
            assert_eq!(uri.to_string(), want);
        }
        for bad in ["", "127.0.0.1:4318", "ftp://x", "http://x/?q=1"] {
            assert!(traces_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absurd_options_are_refused() {
        let mut o = OtlpOptions::new("http://127.0.0.1:4318");
        assert!(o.validate().is_ok());
        o.queue_capacity = 0;
        assert!(o.validate().is_err());
        o.queue_capacity = 10;
        o.timeout = Duration::ZERO;
        assert!(o.validate().is_err());
        o.timeout = Duration::MAX;
        assert!(o.validate().is_err());
    }
}
