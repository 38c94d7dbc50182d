//! Integration tests: spans on paused time, the OTLP exporter against a loopback receiver (and
//! the official Python `opentelemetry-proto` decoding the same bytes), and `promtool` on a scrape.

mod export;
mod export_tls;
mod metrics;
mod promtool;
mod props;
mod spans;
mod store_props;
mod support;
