//! The gateway end to end: real upstream servers and the real gateway on loopback.

mod cache;
mod compose;
mod http;
mod offload;
mod proxy;
mod publish;
mod support;
