//! Integration tests: golden cases from Jaeger UI, CRISP and Zipkin, and property tests.

mod golden;
mod props;
