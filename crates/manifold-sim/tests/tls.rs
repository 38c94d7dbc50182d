//! `tls = { cert, key }`: the services speak HTTPS, with HTTP/1.1 and HTTP/2 by ALPN, and
//! their URLs say so.

use std::sync::Arc;

use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_sim::{Sim, SimConfig};
use rustls::pki_types::ServerName;

#[tokio::test]
async fn services_answer_over_https_with_h2_by_alpn() {
    let dir = std::env::temp_dir().join(format!("manifold-sim-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    let file = dir.join("sim.toml");
    std::fs::write(
        &file,
        r#"
tls = { cert = "cert.pem", key = "key.pem" }
[services.svc]
endpoints = [{ method = "GET", path = "/x", latency = "1ms", response = { body = { ok = true } } }]
"#,
    )
    .unwrap();
    // Paths are relative to the sim file.
    let config = SimConfig::from_file(&file).unwrap();
    let sim = Sim::start(config).await.unwrap();
    let url = sim.url("svc").unwrap();
    assert!(url.starts_with("https://"), "{url}");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            ServerName::try_from("localhost").unwrap(),
        ))
        .enable_all_versions()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let resp = client
        .get(format!("{url}/x").parse().unwrap())
        .await
        .expect("an answer over TLS");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ok"], true);
    // A missing key file is named at start.
    let mut bad = SimConfig::from_file(&file).unwrap();
    bad.tls.as_mut().unwrap().key = dir.join("missing.pem");
    let err = match Sim::start(bad).await {
        Ok(_) => panic!("a missing key file must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("missing.pem"), "{err}");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
