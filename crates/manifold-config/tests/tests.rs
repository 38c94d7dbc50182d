//! Config validation: each rule's error names what is wrong and where; and the template
//! properties that keep values from changing their type or the URL's shape.

mod admin;
mod cache_keys;
mod client_host;
mod concurrency;
mod dataflow;
mod headers;
mod hooks;
mod idempotence;
mod memcached;
mod own_listeners;
mod policy_properties;
mod properties;
mod proxy;
mod schema;
mod support;
mod telemetry;
mod tls;
mod upstream_policies;
mod validation;
