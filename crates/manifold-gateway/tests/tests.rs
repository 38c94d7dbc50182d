//! The gateway end to end: real upstream servers and the real gateway on loopback.

mod admin;
mod cache;
mod compose;
mod http;
mod offload;
mod publish;
mod support;
