//! The dead-letter queue, walked on a private channel.

use super::{broker, close_within, RabbitQueue, DEAD_SCAN_LIMIT};
use crate::error::QueueError;
use crate::task::Task;
use lapin::options::{BasicAckOptions, BasicGetOptions};

impl RabbitQueue {
    /// Walks the dead-letter queue on a private channel: `visit` sees each dead letter and
    /// returns what to do with it. Messages left alone go back in order when the channel closes.
    pub(super) async fn scan_dead(
        &self,
        mut visit: impl FnMut(&Task) -> Visit,
    ) -> Result<u64, QueueError> {
        let channel = self.new_channel().await?;
        let result = async {
            let mut acted = 0;
            for _ in 0..DEAD_SCAN_LIMIT {
                let Some(msg) = channel
                    .basic_get(
                        self.dead_queue.as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                    .map_err(|e| broker("read dead letters", e))?
                else {
                    break;
                };
                let delivery = msg.delivery;
                let task = match Task::decode(&delivery.data) {
                    Ok(t) => t,
                    Err(_) => continue,
                };
                match visit(&task) {
                    Visit::Keep => {}
                    Visit::Stop => break,
                    Visit::Remove => {
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| broker("remove dead letter", e))?;
                        acted += 1;
                    }
                    Visit::Replay => {
                        let mut task = task;
                        let now = self.clock.now_ms();
                        task.attempts = 0;
                        task.enqueued_at = now;
                        task.not_before = 0;
                        self.publish_confirmed(&self.opts.queue, &task.encode()?)
                            .await?;
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| broker("remove replayed dead letter", e))?;
                        acted += 1;
                    }
                }
            }
            Ok(acted)
        }
        .await;
        // Closing the channel returns every message we looked at but did not ack.
        close_within(channel.close(200, "scan done".into())).await;
        result
    }
}

/// What [`RabbitQueue::scan_dead`] does with one dead letter.
pub(super) enum Visit {
    Keep,
    Stop,
    Remove,
    Replay,
}
