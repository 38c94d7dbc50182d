//! Prints hit latencies (L1, L2 and a raw Redis GET, interleaved) as JSON:
//! `cargo run --release -p manifold-cache --example latency [REDIS_URL [SAMPLES]]`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut params = manifold_cache::bench::LatencyParams {
        redis_url: Some(
            args.next()
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
        ),
        ..Default::default()
    };
    if let Some(samples) = args.next() {
        params.samples = samples.parse()?;
    }
    let report = manifold_cache::bench::measure_latency(&params).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
