//! End-to-end tests: each module starts real processes on loopback.
mod analyze;
mod cli;
mod load;
mod sim;
