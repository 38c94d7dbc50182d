//! Closing a broker link: bounded, everywhere.
//!
//! On a dead connection the broker's answer to a close (RabbitMQ's close-ok) or to a flush
//! (NATS's PONG, which async-nats waits for across its reconnects, by default for ever) may
//! never come. An unbounded wait there kept `manifold serve` from exiting after SIGTERM while
//! NATS was unreachable (the gateway's listeners had stopped; the queue's close never returned),
//! and stalled every enqueue queued behind a close under RabbitMQ's link lock. Nothing accepted
//! depends on a close: every task was acknowledged by the broker before its client was answered.

use std::future::Future;
use std::time::Duration;

/// Longest wait for a broker to acknowledge a close or a flush.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `close`'s output, or `None` when it did not finish within [`CLOSE_TIMEOUT`] (the link is
/// being dropped either way).
pub(crate) async fn within<T>(close: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CLOSE_TIMEOUT, close).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_close_that_never_answers_ends_at_the_bound() {
        let start = tokio::time::Instant::now();
        assert_eq!(within(std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), CLOSE_TIMEOUT);
        assert_eq!(within(async { 7 }).await, Some(7));
    }
}
