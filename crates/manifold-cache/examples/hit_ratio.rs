//! Prints the hit-ratio simulation (issue 4, point 8) as JSON:
//! `cargo run --release -p manifold-cache --example hit_ratio [KEYS CAPACITY REQUESTS [SEED]]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut params = manifold_cache::sim::HitRatioParams::default();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    if let [keys, capacity, requests, ..] = args[..] {
        params.keys = keys;
        params.capacity = capacity;
        params.requests = requests;
    }
    if let [_, _, _, seed] = args[..] {
        params.seed = seed;
    }
    let report = manifold_cache::sim::simulate_hit_ratios(&params)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
