//! End-to-end tests: each module starts real processes on loopback.
mod admin;
mod analyze;
mod bench_policies;
mod cli;
mod demo;
mod load;
mod offload;
mod replicas;
mod sim;
mod soak;
