//! The built-in shop: six services with the seed latencies the demo and benchmarks use, and
//! assigning them ports.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{
    default_host, EndpointConfig, ReplicaConfig, ResponseConfig, ServiceConfig, SimConfig,
    DEFAULT_SEED, SHOP_SERVICES,
};
use crate::latency::Latency;
use crate::SimError;

impl SimConfig {
    /// The seed documents' shop, every listener on an ephemeral loopback port:
    ///
    /// | service | endpoint | latency |
    /// |---|---|---|
    /// | order | `POST /orders`, `POST /orders/{id}/confirm` | 150 ms, 50 ms |
    /// | payment | `POST /payments` | 200 ms |
    /// | inventory | `POST /inventory/reserve` | 100 ms |
    /// | shipping | `POST /shipping/labels`, `GET /shipping/rates/{zip}` | 250 ms, 250 ms |
    /// | users | `GET /users/{id}` | 100 ms |
    /// | orders | `GET /users/{id}/orders` | 200 ms |
    pub fn shop() -> Self {
        let ep = |method: &str, path: &str, ms: u64, status: u16, body: Value| EndpointConfig {
            method: method.into(),
            path: path.into(),
            latency: Latency::fixed_ms(ms),
            faults: Vec::new(),
            response: ResponseConfig {
                status,
                body,
                headers: BTreeMap::new(),
            },
        };
        let svc = |endpoints| ServiceConfig {
            port: None,
            replicas: Vec::new(),
            endpoints,
        };
        let mut services = BTreeMap::new();
        services.insert(
            "order".to_owned(),
            svc(vec![
                ep(
                    "POST",
                    "/orders",
                    150,
                    201,
                    json!({"id": "{uuid}", "status": "created", "items": "{body.items}",
                           "total": "{body.total}"}),
                ),
                ep(
                    "POST",
                    "/orders/{id}/confirm",
                    50,
                    200,
                    json!({"id": "{path.id}", "status": "confirmed"}),
                ),
            ]),
        );
        services.insert(
            "payment".to_owned(),
            svc(vec![ep(
                "POST",
                "/payments",
                200,
                201,
                json!({"id": "{uuid}", "order_id": "{body.order_id}", "amount": "{body.amount}",
                       "status": "approved"}),
            )]),
        );
        services.insert(
            "inventory".to_owned(),
            svc(vec![ep(
                "POST",
                "/inventory/reserve",
                100,
                200,
                json!({"reservation_id": "{uuid}", "order_id": "{body.order_id}",
                       "items": "{body.items}", "status": "reserved"}),
            )]),
        );
        services.insert(
            "shipping".to_owned(),
            svc(vec![
                ep(
                    "POST",
                    "/shipping/labels",
                    250,
                    201,
                    json!({"label_id": "{uuid}", "order_id": "{body.order_id}",
                           "carrier": "usps", "tracking_number": "9400{seq}",
                           "status": "created"}),
                ),
                ep(
                    "GET",
                    "/shipping/rates/{zip}",
                    250,
                    200,
                    json!({"zip": "{path.zip}", "rates": [
                        {"carrier": "usps", "service": "ground", "cents": 795},
                        {"carrier": "ups", "service": "2day", "cents": 1450}]}),
                ),
            ]),
        );
        services.insert(
            "users".to_owned(),
            svc(vec![ep(
                "GET",
                "/users/{id}",
                100,
                200,
                json!({"id": "{path.id}", "name": "User {path.id}",
                       "email": "user{path.id}@example.com"}),
            )]),
        );
        services.insert(
            "orders".to_owned(),
            svc(vec![ep(
                "GET",
                "/users/{id}/orders",
                200,
                200,
                json!({"user_id": "{path.id}", "orders": [
                    {"id": "o-{path.id}-1", "total_cents": 4200, "status": "shipped"},
                    {"id": "o-{path.id}-2", "total_cents": 1999, "status": "processing"}]}),
            )]),
        );
        SimConfig {
            seed: DEFAULT_SEED,
            host: default_host(),
            services,
            tls: None,
            timer: manifold_timer::Timer::default(),
        }
    }

    /// The shop with fixed ports: `base` for `order`, then `base + 1` … in the order of
    /// [`SHOP_SERVICES`] (so with 7001: order 7001, payment 7002, inventory 7003, shipping 7004,
    /// users 7005, orders 7006). `base = 0` keeps every port ephemeral.
    pub fn shop_at(base: u16) -> Result<Self, SimError> {
        let mut cfg = Self::shop();
        if base == 0 {
            return Ok(cfg);
        }
        for (i, name) in SHOP_SERVICES.iter().enumerate() {
            let p = u32::from(base) + i as u32;
            let p = u16::try_from(p).map_err(|_| {
                SimError::Config(format!("base port {base}: port {p} is above 65535"))
            })?;
            if let Some(s) = cfg.services.get_mut(*name) {
                s.port = Some(p);
            }
        }
        Ok(cfg)
    }

    /// Give the services fixed ports: the n-th service (by name order) gets `base + n` for its
    /// first replica and `base + 10·r + n` for replica `r`. `base = 0` keeps every port ephemeral.
    /// Errors if a port would exceed 65535.
    pub fn with_base_port(mut self, base: u16) -> Result<Self, SimError> {
        if base == 0 {
            return Ok(self);
        }
        for (n, svc) in self.services.values_mut().enumerate() {
            let count = svc.replicas.len().max(1);
            let mut replicas = std::mem::take(&mut svc.replicas);
            if replicas.is_empty() {
                replicas.push(ReplicaConfig::default());
            }
            for (r, rep) in replicas.iter_mut().enumerate().take(count) {
                let p = u32::from(base) + 10 * r as u32 + n as u32;
                rep.port = Some(u16::try_from(p).map_err(|_| {
                    SimError::Config(format!("base port {base}: port {p} is above 65535"))
                })?);
            }
            svc.port = None;
            svc.replicas = replicas;
        }
        Ok(self)
    }
}
