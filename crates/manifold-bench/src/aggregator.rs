//! The hand-written baseline: the checkout flow coded directly with hyper and `tokio::join!`,
//! the way a careful engineer would write one aggregator by hand. It is the practical floor a
//! general gateway is measured against: same DAG, no config, no templates, no generality.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Where the checkout's services are.
#[derive(Debug, Clone)]
pub struct CheckoutUpstreams {
    /// `POST /orders`, `POST /orders/{id}/confirm`.
    pub order: String,
    /// `POST /payments`.
    pub payment: String,
    /// `POST /inventory/reserve`.
    pub inventory: String,
    /// `POST /shipping/labels`.
    pub shipping: String,
}

struct State {
    up: CheckoutUpstreams,
    client: Client<HttpConnector, Full<Bytes>>,
}

type Failure = String;

/// `rid` is the checkout's `?rid=` (the benchmark's request number), passed on as
/// `X-Request-Id` as the gateway's benchmark config does, so the simulator's call records tie
/// each request's calls together.
async fn post(state: &State, url: String, body: &Value, rid: &str) -> Result<Value, Failure> {
    let mut req = Request::post(url).header("content-type", "application/json");
    if !rid.is_empty() {
        req = req.header("x-request-id", rid);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = state.client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

async fn checkout(state: &State, body: Value, rid: &str) -> Result<Value, Failure> {
    let order = post(state, format!("{}/orders", state.up.order), &body, rid).await?;
    let id = order.get("id").cloned().unwrap_or(Value::Null);
    let pay_body = json!({"order_id": id, "amount": body.get("total")});
    let inv_body = json!({"order_id": id, "items": body.get("items")});
    let ship_body = json!({"order_id": id, "address": body.get("address")});
    let (payment, inventory, shipping) = tokio::join!(
        post(
            state,
            format!("{}/payments", state.up.payment),
            &pay_body,
            rid
        ),
        post(
            state,
            format!("{}/inventory/reserve", state.up.inventory),
            &inv_body,
            rid,
        ),
        post(
            state,
            format!("{}/shipping/labels", state.up.shipping),
            &ship_body,
            rid,
        ),
    );
    let (payment, _inventory, shipping) = (payment?, inventory?, shipping?);
    let id_text = match &id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let confirm = post(
        state,
        format!("{}/orders/{id_text}/confirm", state.up.order),
        &Value::Null,
        rid,
    )
    .await?;
    Ok(json!({"order": confirm, "payment": payment.get("status"), "shipping": shipping}))
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let rid = req
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "rid"))
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let bytes = req.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (status, out) = match checkout(&state, body, &rid).await {
        Ok(v) => (StatusCode::CREATED, v),
        Err(e) => (StatusCode::BAD_GATEWAY, json!({"error": e})),
    };
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    *resp.status_mut() = status;
    Ok(resp)
}

/// Serve the hand-written checkout on `127.0.0.1:0` until `stop`; returns the bound address.
pub async fn start(up: CheckoutUpstreams, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    start_on(SocketAddr::from(([127, 0, 0, 1], 0)), up, stop).await
}

/// Serve the hand-written checkout on `listen` until `stop`; returns the bound address.
pub async fn start_on(
    listen: SocketAddr,
    up: CheckoutUpstreams,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let state = Arc::new(State {
        up,
        client: Client::builder(TokioExecutor::new()).build(connector),
    });
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let state = Arc::clone(&state);
                    let conn = builder
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(move |req| handle(Arc::clone(&state), req)),
                        )
                        .into_owned();
                    tokio::spawn(conn);
                }
                _ = stop.cancelled() => break,
            }
        }
    });
    Ok(addr)
}
