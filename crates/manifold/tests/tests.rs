//! End-to-end tests: each module starts real processes on loopback.
mod admin;
mod analyze;
mod bench_policies;
mod cli;
mod demo;
mod load;
mod offload;
mod sim;
mod soak;
mod traces;
