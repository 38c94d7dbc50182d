//! The hand-written checkout aggregator as a process of its own, so it can be profiled the way
//! `manifold serve` is (`bench/profile-compose.sh` runs both under callgrind):
//! `cargo run --release -p manifold-bench --example hand_written -- LISTEN ORDER PAYMENT INVENTORY SHIPPING` (upstream base URLs).

use manifold_bench::aggregator::{self, CheckoutUpstreams};
use tokio_util::sync::CancellationToken;

/// jemalloc with the `manifold` binary's settings (.cargo/config.toml), because `manifold bench
/// compose` runs the hand-written aggregator inside `manifold`: with glibc's malloc this process
/// spent ~48,000 instructions per checkout in the allocator that the benchmark's aggregator does
/// not (callgrind, docs/benchmarks.md), and a comparison against `manifold serve` read ~1.0×
/// where the benchmark's is not.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, order, payment, inventory, shipping] = args.as_slice() else {
        return Err("usage: hand_written LISTEN ORDER PAYMENT INVENTORY SHIPPING".into());
    };
    let listen: std::net::SocketAddr = listen.parse()?;
    let up = CheckoutUpstreams {
        order: order.clone(),
        payment: payment.clone(),
        inventory: inventory.clone(),
        shipping: shipping.clone(),
    };
    // Two workers, as `manifold bench compose` gives each aggregator.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = aggregator::start_on(listen, up, CancellationToken::new()).await?;
        println!("listening on {addr}");
        // Until killed: the profiler's script ends it.
        std::future::pending::<()>().await;
        Ok(())
    })
}
