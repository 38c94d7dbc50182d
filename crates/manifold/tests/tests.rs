//! End-to-end tests: each module starts real processes on loopback.
mod admin;
mod analyze;
mod bench_policies;
mod cli;
mod demo;
mod deploy;
mod getting_started;
mod load;
mod offload;
mod sim;
mod soak;
