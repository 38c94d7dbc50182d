//! Test support shared by this crate's integration tests and the gateway's (feature
//! `test-support`, never enabled in a shipped build): a TCP relay that takes a broker away from
//! one client without touching the shared broker other tests use, and guards that delete a run's
//! broker objects even when the test panics, so failed runs leave nothing behind.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay to a broker that can be cut (open connections dropped, new ones closed at once)
/// and restored: the broker "goes away" for whoever connects through [`Relay::addr`] only, as
/// when it restarts or the network drops.
pub struct Relay {
    /// Where clients connect instead of the broker.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `target` while up.
    pub async fn start(target: &'static str) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (up, conns) = (Arc::clone(&up), Arc::clone(&conns));
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(relay);
                }
            })
        };
        Ok(Relay {
            addr,
            up,
            conns,
            accept,
        })
    }

    /// Drops every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            c.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Runs `clean` to completion on a runtime of its own in a fresh thread: a guard's `drop` may
/// run inside (or outside) the test's runtime, where it could not block on a future.
#[cfg(any(feature = "nats", feature = "rabbitmq"))]
fn on_own_runtime<F, Fut>(clean: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(clean());
        }
    })
    .join();
}

/// Deletes RabbitMQ queues and exchanges when dropped, even if the test panics.
#[cfg(feature = "rabbitmq")]
pub struct DropRabbit {
    /// The broker, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: &'static str,
    /// Queues to delete.
    pub queues: Vec<String>,
    /// Exchanges to delete.
    pub exchanges: Vec<String>,
}

#[cfg(feature = "rabbitmq")]
impl Drop for DropRabbit {
    fn drop(&mut self) {
        let url = self.url;
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        on_own_runtime(move || async move {
            use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
            let Ok(conn) =
                lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                for queue in &queues {
                    let _ = ch
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for exchange in &exchanges {
                    let _ = ch
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
            }
            let _ = conn.close(200, "cleanup".into()).await;
        });
    }
}

/// Deletes JetStream streams when dropped, even if the test panics.
#[cfg(feature = "nats")]
pub struct DropStreams {
    /// The server, e.g. `nats://127.0.0.1:4222`.
    pub url: &'static str,
    /// Streams to delete.
    pub streams: Vec<String>,
}

#[cfg(feature = "nats")]
impl Drop for DropStreams {
    fn drop(&mut self) {
        let url = self.url;
        let streams = std::mem::take(&mut self.streams);
        on_own_runtime(move || async move {
            if let Ok(client) = async_nats::connect(url).await {
                let js = async_nats::jetstream::new(client);
                for stream in &streams {
                    let _ = js.delete_stream(stream).await;
                }
            }
        });
    }
}
