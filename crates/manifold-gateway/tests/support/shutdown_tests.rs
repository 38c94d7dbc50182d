//! [`TestGateway::shutdown`] fails the test when the gateway's task panicked or does not end:
//! the two things `let _ = gw.task.await` let pass as a clean stop (or hung on).

use super::*;

/// A gateway with nothing routed: only its listeners and shutdown matter here.
async fn bare() -> TestGateway {
    TestGateway::start("").await
}

/// The text a task's panic carried.
fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn shutdown_fails_the_test_when_the_gateway_s_task_panicked() {
    let mut gw = bare().await;
    // The real task is kept aside (the same stop token ends it) and stands for one that
    // panicked while serving or stopping.
    let real = std::mem::replace(
        &mut gw.task,
        tokio::spawn(async { panic!("a deliberate panic standing for the gateway's") }),
    );
    let stopped = tokio::spawn(gw.shutdown()).await;
    let e = stopped.expect_err("shutdown passed a gateway task that panicked");
    let text = panic_text(e);
    assert!(
        text.contains("the gateway's task panicked")
            && text.contains("a deliberate panic standing for the gateway's"),
        "{text}"
    );
    tokio::time::timeout(STOP_BOUND, real)
        .await
        .expect("the real gateway stops")
        .expect("the real gateway's task");
}

#[tokio::test]
async fn shutdown_fails_the_test_when_the_gateway_does_not_stop() {
    let mut gw = bare().await;
    let real = std::mem::replace(&mut gw.task, tokio::spawn(std::future::pending()));
    let bound = Duration::from_millis(200);
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::spawn(gw.shutdown_within(bound)),
    )
    .await
    .expect("shutdown waited on a gateway that never stops");
    let text = panic_text(stopped.expect_err("shutdown passed a gateway that never stopped"));
    assert!(
        text.contains("the gateway did not stop within 200ms"),
        "{text}"
    );
    tokio::time::timeout(STOP_BOUND, real)
        .await
        .expect("the real gateway stops")
        .expect("the real gateway's task");
}

#[tokio::test]
async fn shutdown_of_a_running_gateway_closes_its_listeners() {
    let gw = bare().await;
    let (addr, admin) = (gw.addr, gw.admin);
    gw.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
