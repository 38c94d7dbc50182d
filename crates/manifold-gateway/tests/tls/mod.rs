//! TLS both ways, with certificates made in the test (rcgen): the HTTPS listener (HTTP/1.1 and
//! HTTP/2 chosen by ALPN, a stalled handshake closed at `header_read_timeout`, the scheme told
//! to upstreams), and `https://` upstreams (a private CA, SNI and `Host` from the configured
//! name, ALPN h2, mutual TLS, and a wrong CA failing the call with the upstream's name).

mod certs;
mod downstream;
mod upstream;
