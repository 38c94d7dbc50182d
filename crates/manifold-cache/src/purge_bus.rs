//! Purge broadcast between replicas: a purge on one gateway reaches every replica's in-process
//! tier.
//!
//! The Redis tier is shared, so a purge there is seen by everyone; but each replica keeps its own
//! L1, which would go on answering purged entries until they expire. With `[cache] redis` set,
//! [`crate::Cache::purge_prefix`] therefore publishes the purged prefix on the Redis pub/sub
//! channel `{prefix}purge` (under the deployment's key prefix, so deployments sharing a Redis
//! never purge each other), and every replica runs one background subscriber that drops its own
//! L1 entries under that prefix.
//!
//! Pub/sub is fire-and-forget: a replica that is not subscribed when a purge goes out never sees
//! it. So when the subscription is re-established (or established late, after a failed first
//! attempt) the replica empties its L1 — it cannot know what it missed, and an L1 refills from
//! Redis and the upstreams. The subscriber never
//! blocks a request: it runs in its own task, reconnects with capped exponential backoff, and
//! logs each transition (lost, back) once.
//!
//! Messages are untrusted input (anyone who can publish on the Redis can send one): they are
//! bounded in size, must carry the version tag, and anything else is ignored. The worst a
//! well-formed forged message can do is empty L1 entries, which is what a purge does anyway.
//!
//! Wire format (one Redis message): `mfpurge1 {origin:016x} {prefix}`, where `origin` is a random
//! id of the sending process (a replica ignores its own broadcasts, it purged itself already).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;

use crate::cache::L1;
use crate::{CacheError, RedisSettings};

/// The tag every message starts with; a later incompatible format takes another.
const TAG: &str = "mfpurge1 ";
/// Longest prefix sent. A longer one is cut (at a character boundary): a shorter prefix matches
/// more keys, so the other replicas purge at least what was asked. Cache keys are bounded by
/// [`crate::MAX_READABLE_PATH`] plus names and hashes, far below this.
pub(crate) const MAX_PREFIX: usize = 4096;
/// Largest message accepted: tag, origin, space and [`MAX_PREFIX`]. Bigger ones are ignored
/// unread.
pub(crate) const MAX_MESSAGE: usize = TAG.len() + 16 + 1 + MAX_PREFIX;
/// Bound of a publish and of connecting or subscribing.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle subscription is pinged: a connection that died without a FIN (a host gone,
/// a cut cable) is found within this plus [`COMMAND_TIMEOUT`].
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Reconnection backoff: doubles from the first to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The publishing side and the handle on the subscriber task (aborted on drop).
pub(crate) struct PurgeBus {
    publisher: ConnectionManager,
    channel: String,
    origin: u64,
    subscribed: Arc<AtomicBool>,
    subscriber: JoinHandle<()>,
}

impl Drop for PurgeBus {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// What [`crate::Cache::redis_readiness`] found: for a replica's `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReadiness {
    /// `Ok` when Redis answered a PING in time, else why not.
    pub reachable: Result<Duration, String>,
    /// Whether the request path currently considers the Redis tier up (it skips it otherwise).
    pub tier_healthy: bool,
    /// Whether this replica is subscribed to purge broadcasts right now.
    pub purge_subscribed: bool,
}

impl PurgeBus {
    /// Opens the publishing connection lazily and starts the subscriber. Inside a runtime.
    pub(crate) fn start(settings: &RedisSettings, l1: L1) -> Result<Self, CacheError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| CacheError::Config(format!("redis url {:?}: {e}", settings.url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let publisher =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|source| {
                CacheError::Redis {
                    context: "creating the purge broadcast's redis connection".into(),
                    source,
                }
            })?;
        let channel = channel(&settings.prefix);
        let origin = random_origin();
        let subscribed = Arc::new(AtomicBool::new(false));
        let subscriber = tokio::spawn(subscribe_forever(
            client,
            channel.clone(),
            origin,
            l1,
            Arc::clone(&subscribed),
        ));
        Ok(Self {
            publisher,
            channel,
            origin,
            subscribed,
            subscriber,
        })
    }

    /// Tells the other replicas to drop their L1 entries under `prefix`. Returns how many
    /// subscribers Redis handed the message to (this replica's own included).
    pub(crate) async fn publish(&self, prefix: &str) -> Result<u64, CacheError> {
        let message = encode(self.origin, prefix);
        let mut conn = self.publisher.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(message);
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<u64>(&mut conn)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(source)) => Err(CacheError::Redis {
                context: format!(
                    "broadcasting the purge to the other replicas (channel {:?})",
                    self.channel
                ),
                source,
            }),
            Err(_) => Err(CacheError::Timeout(format!(
                "broadcasting the purge to the other replicas: no answer within {COMMAND_TIMEOUT:?}"
            ))),
        }
    }

    /// PINGs Redis on the publishing connection, bounded by `timeout`; the round trip on success.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<Duration, String> {
        let mut conn = self.publisher.clone();
        let started = tokio::time::Instant::now();
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(timeout, cmd.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: no answer to PING within {timeout:?}")),
        }
    }

    pub(crate) fn subscribed(&self) -> bool {
        self.subscribed.load(Relaxed)
    }
}

/// The channel of a deployment: `{key prefix}purge`.
pub(crate) fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}purge")
}

fn random_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The message for `prefix`, cut to [`MAX_PREFIX`] bytes at a character boundary.
pub(crate) fn encode(origin: u64, prefix: &str) -> Vec<u8> {
    let mut cut = prefix.len().min(MAX_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TAG}{origin:016x} {}", &prefix[..cut]).into_bytes()
}

/// `(origin, prefix)` of a well-formed message; `None` for anything else.
pub(crate) fn decode(message: &[u8]) -> Option<(u64, &str)> {
    if message.len() > MAX_MESSAGE {
        return None;
    }
    let rest = message.strip_prefix(TAG.as_bytes())?;
    let (origin, rest) = (rest.get(..16)?, rest.get(16..)?);
    let prefix = rest.strip_prefix(b" ")?;
    let origin = std::str::from_utf8(origin).ok()?;
    if !origin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let origin = u64::from_str_radix(origin, 16).ok()?;
    Some((origin, std::str::from_utf8(prefix).ok()?))
}

/// Drops every L1 entry whose key starts with `prefix` (`""`: all). Returns how many.
pub(crate) async fn invalidate_l1_prefix(l1: &L1, prefix: &str) -> u64 {
    let keys: Vec<Arc<String>> = l1
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| k)
        .collect();
    for key in &keys {
        l1.invalidate(key.as_str()).await;
    }
    keys.len() as u64
}

/// The subscriber: subscribe, apply messages until the connection is lost, back off, again.
async fn subscribe_forever(
    client: redis::Client,
    channel: String,
    origin: u64,
    l1: L1,
    subscribed: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_MIN;
    // Whether the current outage was logged already (each transition is logged once).
    let mut down_logged = false;
    let mut attempt: u64 = 0;
    // Whether the replica has served without listening (a failed first attempt, a lost
    // subscription). The first attempt's own window (the cache is brand new, a few
    // milliseconds at start) is accepted.
    let mut missed = false;
    loop {
        match connect(&client, &channel).await {
            Ok(pubsub) => {
                subscribed.store(true, Relaxed);
                backoff = BACKOFF_MIN;
                // Purges sent while we were not listening are lost to us: start from empty.
                if missed {
                    l1.invalidate_all();
                }
                tracing::info!(target: "manifold_cache", %channel, "purge broadcast: subscribed");
                let why = listen(pubsub, origin, &l1).await;
                subscribed.store(false, Relaxed);
                missed = true;
                tracing::warn!(target: "manifold_cache", %channel, error = %why, "purge broadcast: subscription lost; reconnecting (this replica's memory tier is emptied once back)");
                down_logged = true;
            }
            Err(e) => {
                missed = true;
                if !down_logged {
                    tracing::warn!(target: "manifold_cache", %channel, error = %e, "purge broadcast: cannot subscribe; retrying with backoff (purges on other replicas do not reach this one meanwhile)");
                    down_logged = true;
                }
            }
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(jittered(
            backoff,
            origin ^ attempt.wrapping_mul(0x9E37_79B9),
        ))
        .await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `d` plus up to half of it, drawn from `seed`: replicas that lost Redis together do not
/// reconnect in lockstep.
fn jittered(d: Duration, seed: u64) -> Duration {
    let half = u64::try_from(d.as_millis() / 2).unwrap_or(u64::MAX).max(1);
    let mix = seed.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 17;
    d + Duration::from_millis(mix % half)
}

async fn connect(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, String> {
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, subscribe).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Applies messages until the connection ends or stops answering pings; returns why.
async fn listen(pubsub: redis::aio::PubSub, origin: u64, l1: &L1) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut warned_garbage = false;
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            () = tokio::time::sleep(KEEPALIVE) => {
                match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return format!("no answer to a ping within {COMMAND_TIMEOUT:?}"),
                }
            }
        };
        let Some(message) = message else {
            return "connection closed".into();
        };
        let payload = message.get_payload_bytes();
        match decode(payload) {
            Some((from, _)) if from == origin => {}
            Some((_, prefix)) => {
                let removed = invalidate_l1_prefix(l1, prefix).await;
                tracing::info!(target: "manifold_cache", prefix, l1 = removed, "cache purged by another replica");
            }
            None => {
                // Log the first only: a flood of garbage must not flood the log.
                if !warned_garbage {
                    tracing::warn!(target: "manifold_cache", bytes = payload.len(), "purge broadcast: ignoring a malformed message (further ones are logged at debug)");
                    warned_garbage = true;
                } else {
                    tracing::debug!(target: "manifold_cache", bytes = payload.len(), "purge broadcast: ignoring a malformed message");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = encode(0xdead_beef, "users GET /users/42");
        assert_eq!(decode(&m), Some((0xdead_beef, "users GET /users/42")));
        assert_eq!(decode(&encode(7, "")), Some((7, "")));
        assert_eq!(channel("manifold:"), "manifold:purge");
    }

    #[test]
    fn long_prefixes_are_cut_to_a_broader_one_at_a_char_boundary() {
        let long = "é".repeat(MAX_PREFIX); // 2 bytes each
        let m = encode(1, &long);
        assert!(m.len() <= MAX_MESSAGE);
        let (_, prefix) = decode(&m).expect("a cut message still decodes");
        assert!(long.starts_with(prefix));
        assert_eq!(prefix.len(), MAX_PREFIX);
    }

    #[test]
    fn garbage_is_ignored() {
        for bad in [
            &b""[..],
            b"mfpurge1",
            b"mfpurge1 ",
            b"mfpurge1 0123",
            b"mfpurge1 0123456789abcdef",      // no space
            b"mfpurge1 0123456789abcdefX",     // no space
            b"mfpurge1 +123456789abcdef x",    // sign is not hex
            b"mfpurge1 0123456789abcdeg x",    // not hex
            b"mfpurge2 0123456789abcdef x",    // other version
            b"mfpurge1 0123456789abcdef \xff", // not UTF-8
            b"MFPURGE1 0123456789abcdef x",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut huge = encode(1, "x");
        huge.extend(std::iter::repeat_n(b'x', MAX_MESSAGE));
        assert_eq!(decode(&huge), None, "oversized messages are not read");
        // Multi-byte UTF-8 in the origin field must not panic a slice.
        assert_eq!(decode("mfpurge1 ééééééééé x".as_bytes()), None);
    }

    #[test]
    fn jitter_stays_within_half_the_backoff() {
        for seed in 0..1000u64 {
            let d = jittered(Duration::from_millis(100), seed);
            assert!(
                d >= Duration::from_millis(100) && d < Duration::from_millis(150),
                "{d:?}"
            );
        }
    }
}
