//! Integration tests: golden cases from Jaeger UI, CRISP and Zipkin, and property tests.

mod golden;
mod hostile;
mod props;
mod reports;
mod sim_reference;
