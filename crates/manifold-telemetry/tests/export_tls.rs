//! The exporter sends to an `https://` collector, checking its certificate against the system
//! roots (here a CA made in the test, named by `SSL_CERT_FILE`, which `rustls-native-certs`
//! honours).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use manifold_telemetry::otlp::{self, OtlpOptions, ResourceInfo};
use manifold_telemetry::{
    Incoming as TraceIncoming, ServerOutcome, SpanStats, Tracer, TracingOptions,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::spans::root;

/// An https collector on 127.0.0.1 with a certificate for `localhost` from a fresh CA; the CA's
/// PEM is returned with the port and what the collector received (request paths).
async fn tls_collector() -> (u16, String, mpsc::UnboundedReceiver<String>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        let _ = tx.send(path);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca.pem(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_https_collector_trusted_by_the_system_roots() {
    let (port, ca_pem, mut received) = tls_collector().await;
    let ca_file = std::env::temp_dir().join(format!("manifold-otlp-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    // The system's trust store, as rustls-native-certs reads it: this CA only. (No other test
    // in this binary reads the system roots.)
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let stats = Arc::new(SpanStats::default());
    let options = OtlpOptions {
        timeout: Duration::from_secs(2),
        flush_interval: Duration::from_millis(20),
        ..OtlpOptions::new(format!("https://localhost:{port}"))
    };
    let resource = ResourceInfo {
        service_name: "manifold-test".to_owned(),
    };
    let (sink, task) = otlp::spawn(&options, resource, Arc::clone(&stats)).expect("spawn");
    let tracer =
        Tracer::new(&TracingOptions::default(), Some(sink), Arc::clone(&stats)).expect("tracer");
    let trace = tracer.start(TraceIncoming::from_headers(&HeaderMap::new()), root("/tls"));
    trace.end(ServerOutcome {
        status: 200,
        response_bytes: 2,
        partial: Vec::new(),
        error_type: None,
        client_wait: Duration::ZERO,
    });
    task.shutdown(Duration::from_secs(5)).await;
    let path = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("the https collector got the batch in time")
        .expect("a request");
    assert_eq!(path, "/v1/traces");
    let _ = std::fs::remove_file(ca_file);
}
