//! Integration tests: real NATS JetStream (127.0.0.1:4222) and RabbitMQ (127.0.0.1:5672), a
//! `kill -9` crash test of the embedded queue, and a smoke run of the offload benchmark.

mod bench;
mod common;
mod crash;
mod embedded;
#[cfg(all(feature = "nats", feature = "rabbitmq"))]
mod events;
#[cfg(all(feature = "nats", feature = "rabbitmq"))]
mod foreign;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "rabbitmq")]
mod rabbitmq_hold;
