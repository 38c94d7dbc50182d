//! End-to-end tests: each module starts real processes on loopback.
mod admin;
mod analyze;
mod bench_peer;
mod bench_policies;
mod cli;
mod demo;
mod deploy;
mod docs;
mod getting_started;
mod hostile;
mod load;
mod logs;
mod offload;
mod reload;
mod replicas;
mod sim;
mod soak;
mod traces;

/// Tests that load the machine hard (the reload test's 1,000 requests/s) or measure timings
/// (the demo's figures, the soak, the load generator's achieved rate) take this lock, so that
/// one never distorts another when the test binary runs them in parallel.
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
