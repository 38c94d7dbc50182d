//! Side-by-side benchmarks, measured the way `BENCHMARKS.md` asks: every figure beside a baseline
//! measured in the same run, on the same machine, interleaved (A B A B …), latency under
//! open-loop load from the scheduled send time, several rounds with medians and spread.
//!
//! A gateway's own cost is small beside the latency it removes, and these 2-core machines are
//! noisy, so absolute numbers from separate runs are not comparable: ratios within one run are.

pub mod aggregator;
pub mod analyze;
pub mod balance;
pub mod cache;
pub mod compose;
pub mod floor;
pub mod hedge;
pub mod memory;
pub mod overload;
pub mod peers;
pub mod proxy;
pub mod proxy_peers;
pub mod retry_storm;
pub mod soak;
mod stats;
pub mod telemetry;
pub mod variants;

pub use stats::{Measured, Spread};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A component (simulator, gateway, aggregator) failed to start.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The benchmark's own spec is out of bounds (the message names the value).
    #[error("invalid spec: {0}")]
    Spec(String),
    /// The load generator refused the spec.
    #[error("load generator: {0}")]
    Load(#[from] manifold_load::LoadError),
}
