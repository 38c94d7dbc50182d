//! The telemetry bench's OTLP/HTTP collector stand-in. It runs in the bench process (it is not
//! measured) and decodes what it receives, so the report can check the gateway's own count of
//! exported spans against what a decoder saw.
//!
//! Why it decodes between rounds, not as each export arrives: the sink shares the bench's
//! runtime with the simulated upstreams and the load generator, and decoding one full batch
//! (2,048 spans, ~870 KB) holds a worker for milliseconds. Decoded on arrival, those stalls
//! delayed the simulator's answers and the generator's sends while the full-tracing gateway was
//! measured, and showed up as that gateway's p99 (+2.5 ms in every round). Arrival only counts
//! the export and keeps its body; [`SinkCounts::decode_pending`] decodes them once a round's
//! window has closed. The held bodies are bounded ([`PENDING_MAX_BYTES`]); past the bound a body
//! is decoded on arrival, and counted apart so the report says the round was disturbed.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

/// The largest export body the sink reads (the exporter's batches are at most 2,048 spans).
const SINK_MAX_BODY: usize = 64 << 20;

/// Export bodies held for decoding after the round, at most (bytes).
const PENDING_MAX_BYTES: usize = 256 << 20;

/// What the sink received.
#[derive(Debug, Default)]
pub(super) struct SinkCounts {
    pub(super) requests: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) spans: AtomicU64,
    pub(super) undecodable: AtomicU64,
    /// Bodies decoded on arrival because [`PENDING_MAX_BYTES`] was held already.
    pub(super) decoded_on_arrival: AtomicU64,
    pending: Mutex<Pending>,
}

/// Bodies received and not yet decoded.
#[derive(Debug, Default)]
struct Pending {
    bodies: Vec<Bytes>,
    bytes: usize,
}

impl SinkCounts {
    /// Count one export body and keep it for [`SinkCounts::decode_pending`] (or decode it now,
    /// past the bound).
    fn export(&self, body: Bytes) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.bytes + body.len() <= PENDING_MAX_BYTES {
            pending.bytes += body.len();
            pending.bodies.push(body);
            return;
        }
        drop(pending);
        self.decoded_on_arrival.fetch_add(1, Ordering::Relaxed);
        self.decode(&body);
    }

    /// Decode every body held so far (call it outside the measured windows).
    pub(super) fn decode_pending(&self) {
        let bodies = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.bytes = 0;
            std::mem::take(&mut pending.bodies)
        };
        for body in bodies {
            self.decode(&body);
        }
    }

    /// Count a body's spans when it decodes as OTLP, or count it undecodable.
    fn decode(&self, body: &[u8]) {
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                let spans: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                self.spans.fetch_add(spans as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.undecodable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A local OTLP/HTTP collector stand-in: reads every export whole (up to [`SINK_MAX_BODY`]),
/// decodes it, answers 200 with an empty body (a full success), counts.
pub(super) struct Sink {
    pub(super) addr: SocketAddr,
    pub(super) counts: Arc<SinkCounts>,
}

impl Sink {
    pub(super) async fn start(stop: CancellationToken) -> Result<Sink, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| BenchError::Setup(format!("OTLP sink: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Setup(format!("OTLP sink: {e}")))?;
        let counts = Arc::new(SinkCounts::default());
        let c = Arc::clone(&counts);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = stop.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let c = Arc::clone(&c);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let c = Arc::clone(&c);
                        async move {
                            let body = Limited::new(req.into_body(), SINK_MAX_BODY)
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            c.export(body);
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(Sink { addr, counts })
    }

    /// Decode the held bodies ([`SinkCounts::decode_pending`]) on a blocking thread, not on a
    /// worker of the runtime the simulator and the load generator share.
    pub(super) async fn decode_pending(&self) -> Result<(), BenchError> {
        let counts = Arc::clone(&self.counts);
        tokio::task::spawn_blocking(move || counts.decode_pending())
            .await
            .map_err(|e| BenchError::Setup(format!("OTLP sink decoder: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sink_decodes_otlp_and_counts_spans_and_garbage_apart() {
        let stop = CancellationToken::new();
        let sink = Sink::start(stop.clone()).await.expect("sink");
        let export = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(), Span::default(), Span::default()],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        for body in [export.encode_to_vec(), vec![0xff, 0xff, 0xff]] {
            let req = Request::post(format!("http://{}/v1/traces", sink.addr))
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let resp = client.request(req).await.expect("sink answers");
            assert!(resp.status().is_success());
        }
        let c = &sink.counts;
        assert_eq!(c.requests.load(Ordering::Relaxed), 2);
        // Counted on arrival, decoded only when asked (between rounds).
        assert_eq!(c.spans.load(Ordering::Relaxed), 0);
        c.decode_pending();
        assert_eq!(c.spans.load(Ordering::Relaxed), 3);
        assert_eq!(c.undecodable.load(Ordering::Relaxed), 1);
        assert_eq!(c.decoded_on_arrival.load(Ordering::Relaxed), 0);
        // Decoded once: a second call finds nothing held.
        c.decode_pending();
        assert_eq!(c.spans.load(Ordering::Relaxed), 3);
        stop.cancel();
    }

    #[test]
    fn past_the_bound_a_body_is_decoded_on_arrival_and_counted_apart() {
        let c = SinkCounts::default();
        let big = Bytes::from(vec![0xffu8; PENDING_MAX_BYTES - 1]);
        c.export(big);
        assert_eq!(c.decoded_on_arrival.load(Ordering::Relaxed), 0);
        // Two more bytes would pass the bound: this body is decoded now.
        c.export(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(c.decoded_on_arrival.load(Ordering::Relaxed), 1);
        assert_eq!(c.undecodable.load(Ordering::Relaxed), 1);
        c.decode_pending();
        assert_eq!(c.undecodable.load(Ordering::Relaxed), 2);
        assert_eq!(c.requests.load(Ordering::Relaxed), 2);
    }
}
