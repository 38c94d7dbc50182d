//! The gateway end to end: real upstream servers and the real gateway on loopback.

mod compose;
mod http;
mod support;
