//! The built-in shop: exact service times, useful replies, counted calls.

use std::time::Duration;

use manifold_sim::{Sim, SimConfig, SimStats};
use serde_json::json;

use crate::send;

#[tokio::test(start_paused = true)]
async fn every_shop_endpoint_takes_its_seed_time_and_answers_usefully() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let at = |s: &str| sim.addr(s).unwrap();

    let t = tokio::time::Instant::now();
    let (st, order) = send(
        at("order"),
        "POST",
        "/orders",
        r#"{"items": [{"sku": "A1", "qty": 2}], "total": 25.5}"#,
    )
    .await
    .unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(150));
    assert_eq!(st, 201);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a minted uuid: {order}");
    assert_eq!(order["items"], json!([{"sku": "A1", "qty": 2}]));
    assert_eq!(order["total"], json!(25.5));

    let cases: [(&str, &str, String, &str, u64); 7] = [
        ("order", "POST", format!("/orders/{id}/confirm"), "", 50),
        (
            "payment",
            "POST",
            "/payments".into(),
            r#"{"order_id": "o-1", "amount": 25.5}"#,
            200,
        ),
        (
            "inventory",
            "POST",
            "/inventory/reserve".into(),
            r#"{"order_id": "o-1"}"#,
            100,
        ),
        (
            "shipping",
            "POST",
            "/shipping/labels".into(),
            r#"{"order_id": "o-1"}"#,
            250,
        ),
        ("shipping", "GET", "/shipping/rates/94107".into(), "", 250),
        ("users", "GET", "/users/42".into(), "", 100),
        ("orders", "GET", "/users/42/orders".into(), "", 200),
    ];
    let mut replies = Vec::new();
    for (svc, method, path, body, ms) in &cases {
        let t = tokio::time::Instant::now();
        let (st, v) = send(at(svc), method, path, body).await.unwrap();
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(*ms),
            "{svc} {method} {path}"
        );
        assert!((200..300).contains(&st), "{svc} {path}: {st}");
        replies.push(v);
    }
    assert_eq!(replies[0], json!({"id": id, "status": "confirmed"}));
    assert_eq!(replies[1]["status"], "approved");
    assert_eq!(replies[1]["order_id"], "o-1");
    assert_eq!(replies[1]["amount"], json!(25.5));
    assert_eq!(replies[2]["status"], "reserved");
    assert_eq!(replies[3]["order_id"], "o-1");
    assert!(replies[3]["label_id"].as_str().is_some());
    assert_eq!(replies[3]["tracking_number"], "94001");
    assert_eq!(replies[4]["zip"], "94107");
    assert_eq!(replies[5]["id"], "42");
    assert_eq!(replies[6]["user_id"], "42");

    // Counted, in process and over HTTP (from any listener).
    let stats = sim.stats();
    assert_eq!(stats.calls("order", "POST /orders"), 1);
    assert_eq!(stats.calls("order", "POST /orders/{id}/confirm"), 1);
    assert_eq!(stats.calls("shipping", "GET /shipping/rates/{zip}"), 1);
    assert_eq!(stats.service_calls("order"), 2);
    let total: u64 = stats.services.values().map(|s| s.calls).sum();
    assert_eq!(total, 8);
    let (st, v) = send(at("users"), "GET", "/__stats", "").await.unwrap();
    assert_eq!(st, 200);
    let http_stats: SimStats = serde_json::from_value(v).unwrap();
    assert_eq!(http_stats.services, stats.services);
    assert_eq!(
        http_stats.services["payment"].endpoints["POST /payments"].ok,
        1
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_overlap_in_the_call_log() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let users = sim.addr("users").unwrap();
    let orders = sim.addr("orders").unwrap();
    let t = tokio::time::Instant::now();
    let t0 = sim.now_ms();
    let (a, b) = tokio::join!(
        send(users, "GET", "/users/7", ""),
        send(orders, "GET", "/users/7/orders", "")
    );
    assert_eq!(a.unwrap().0, 200);
    assert_eq!(b.unwrap().0, 200);
    assert_eq!(
        t.elapsed(),
        Duration::from_millis(200),
        "the longer of the two"
    );

    let stats = sim.stats_with_calls();
    let rec = |svc: &str, ep: &str| {
        let calls = stats.services[svc].endpoints.get(ep).cloned().unwrap();
        assert!(calls.recent.is_none(), "service totals carry no call log");
        let r = &stats.services[svc].replicas[0].endpoints[ep];
        r.recent.clone().unwrap()
    };
    let u = rec("users", "GET /users/{id}");
    let o = rec("orders", "GET /users/{id}/orders");
    assert_eq!((u.len(), o.len()), (1, 1));
    let (u, o) = (&u[0], &o[0]);
    assert!(
        u.start_ms >= t0 && o.start_ms >= t0,
        "same time base as now_ms()"
    );
    assert!(
        u.start_ms < o.end_ms && o.start_ms < u.end_ms,
        "overlap: {u:?} {o:?}"
    );
    assert!((u.end_ms - u.start_ms - 100.0).abs() < 1e-6, "{u:?}");
    assert!((o.end_ms - o.start_ms - 200.0).abs() < 1e-6, "{o:?}");
    assert_eq!(u.outcome, "ok");
    assert_eq!(u.status, Some(200));

    // Over HTTP too, with ?calls=1; and /__reset clears.
    let (_, v) = send(users, "GET", "/__stats?calls=1", "").await.unwrap();
    assert_eq!(
        v["services"]["users"]["replicas"][0]["endpoints"]["GET /users/{id}"]["recent"][0]
            ["outcome"],
        "ok"
    );
    assert!(v["services"]["users"]["endpoints"]["GET /users/{id}"]
        .get("recent")
        .is_none());
    let (st, _) = send(users, "POST", "/__reset", "").await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sim.stats().service_calls("users"), 0);
    assert_eq!(
        sim.stats_with_calls().services["users"].replicas[0].endpoints["GET /users/{id}"]
            .recent
            .as_ref()
            .map(Vec::len),
        Some(0)
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn distinct_idempotency_keys_count_the_work_done_once() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let shipping = sim.addr("shipping").unwrap();
    // One task delivered twice (at-least-once), another once, and a call with no key.
    for key in [Some("t1:ship"), Some("t1:ship"), Some("t2:ship"), None] {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let (st, _) = crate::send_with(shipping, "POST", "/shipping/labels", "{}", &headers)
            .await
            .unwrap();
        assert_eq!(st, 201);
    }
    let ep = "POST /shipping/labels";
    let s = sim.stats();
    let e = &s.services["shipping"].endpoints[ep];
    assert_eq!((e.calls, e.ok, e.idempotency_keys), (4, 4, 2), "{e:?}");
    assert!(!e.idempotency_keys_capped);
    sim.reset_stats();
    assert_eq!(
        sim.stats().services["shipping"].endpoints[ep].idempotency_keys,
        0
    );
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unknown_paths_and_methods() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let users = sim.addr("users").unwrap();
    let (st, v) = send(users, "GET", "/nope", "").await.unwrap();
    assert_eq!(st, 404);
    assert_eq!(v["path"], "/nope");
    let (st, _) = send(users, "DELETE", "/users/1", "").await.unwrap();
    assert_eq!(st, 405);
    let s = sim.stats();
    assert_eq!(s.services["users"].replicas[0].not_found, 2);
    assert_eq!(s.service_calls("users"), 0);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_ids() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(SimConfig::shop()).await.unwrap();
        let mut run = Vec::new();
        for _ in 0..3 {
            let (_, v) = send(sim.addr("order").unwrap(), "POST", "/orders", "{}")
                .await
                .unwrap();
            run.push(v["id"].as_str().unwrap().to_owned());
        }
        ids.push(run);
        sim.shutdown().await;
    }
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0][0], ids[0][1]);
    let mut other = SimConfig::shop();
    other.seed = 2;
    let sim = Sim::start(other).await.unwrap();
    let (_, v) = send(sim.addr("order").unwrap(), "POST", "/orders", "{}")
        .await
        .unwrap();
    assert_ne!(v["id"].as_str().unwrap(), ids[0][0]);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_listeners() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let addr = sim.addr("users").unwrap();
    assert_eq!(sim.addrs("users").len(), 1);
    assert_eq!(sim.url("users").unwrap(), format!("http://{addr}"));
    assert_eq!(sim.services().len(), 6);
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn the_example_config_runs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sim.toml");
    let mut cfg = SimConfig::from_file(std::path::Path::new(path)).unwrap();
    // Its fixed ports may be taken on a shared machine: run it on ephemeral ones.
    for svc in cfg.services.values_mut() {
        svc.port = None;
        for r in &mut svc.replicas {
            r.port = None;
        }
    }
    let sim = Sim::start(cfg).await.unwrap();
    let (st, v) = send(
        sim.addr("users").unwrap(),
        "GET",
        "/users/42?fields=name",
        "",
    )
    .await
    .unwrap();
    assert_eq!(st, 200);
    assert_eq!(v, json!({"id": "42", "name": "User 42", "fields": "name"}));
    let payments = sim.addrs("payment");
    assert_eq!(payments.len(), 2);
    let mut answered = 0;
    for addr in payments {
        // Seeded: the first call on each replica draws no fault (seed 42), on every run.
        if let Ok((st, v)) = send(
            addr,
            "POST",
            "/payments",
            r#"{"order_id": "o-1", "amount": 25}"#,
        )
        .await
        {
            if st == 201 {
                assert_eq!(v["amount"], 25);
                answered += 1;
            }
        }
    }
    assert_eq!(answered, 2);
    let (st, v) = send(sim.addr("search").unwrap(), "GET", "/search?q=shoes", "")
        .await
        .unwrap();
    assert_eq!((st, v["query"].as_str()), (200, Some("shoes")));
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_record_keeps_the_request_id_that_ties_a_callers_calls_together() {
    let sim = Sim::start(SimConfig::shop()).await.unwrap();
    let users = sim.addr("users").unwrap();
    let long = "r".repeat(manifold_sim::REQUEST_ID_CAP + 40);
    for id in [Some("checkout-41"), None, Some(long.as_str())] {
        let headers: Vec<(&str, &str)> = id.map(|i| ("x-request-id", i)).into_iter().collect();
        let (st, _) = crate::send_with(users, "GET", "/users/7", "", &headers)
            .await
            .unwrap();
        assert_eq!(st, 200);
    }
    let recent = sim.stats_with_calls().services["users"].replicas[0].endpoints["GET /users/{id}"]
        .recent
        .clone()
        .unwrap();
    let ids: Vec<Option<&str>> = recent.iter().map(|r| r.request_id.as_deref()).collect();
    let capped = "r".repeat(manifold_sim::REQUEST_ID_CAP);
    assert_eq!(ids, [Some("checkout-41"), None, Some(capped.as_str())]);
    // Over HTTP: present when the call had one, absent otherwise.
    let (_, v) = send(users, "GET", "/__stats?calls=1", "").await.unwrap();
    let rec = &v["services"]["users"]["replicas"][0]["endpoints"]["GET /users/{id}"]["recent"];
    assert_eq!(rec[0]["request_id"], "checkout-41");
    assert!(rec[1].get("request_id").is_none());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_precise_timer_a_service_time_is_waited_out_in_full() {
    let mut config = SimConfig::shop();
    config.timer = manifold_timer::Timer::precise();
    let sim = Sim::start(config).await.unwrap();
    let (st, _) = send(sim.addr("users").unwrap(), "GET", "/users/7", "")
        .await
        .unwrap();
    assert_eq!(st, 200);
    let r = &sim.stats_with_calls().services["users"].replicas[0].endpoints["GET /users/{id}"]
        .recent
        .clone()
        .unwrap()[0];
    // Never shorter than the configured 100 ms (speed is the benchmark's business, not a test's).
    assert!(r.end_ms - r.start_ms >= 100.0, "{r:?}");
    sim.shutdown().await;
}
