//! Wall-clock milliseconds that follow tokio's clock.
//!
//! Task times (`enqueued_at`, `not_before`) are stored, so they must be Unix time. But retry
//! delays must also be testable on paused time: this clock reads the system time once and then
//! advances with `tokio::time::Instant`, so `tokio::time::advance` moves it too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix-epoch milliseconds anchored once and advanced by tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// System time at `base`, in microseconds (kept finer than the result so that two clocks
    /// anchored at different moments agree to the millisecond).
    base_us: u64,
    base: Instant,
}

impl Clock {
    /// A clock anchored at the current system time.
    pub fn system() -> Self {
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            base_us,
            base: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch, now (rounded down).
    pub fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    /// The Unix millisecond at which `delay` from now has fully elapsed (rounded up, so a task
    /// due then is never handed out early).
    pub fn after_ms(&self, delay: Duration) -> u64 {
        let delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.now_us().saturating_add(delay_us).div_ceil(1000)
    }

    fn now_us(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.base);
        self.base_us
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = Clock::system();
        let t0 = clock.now_ms();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms() - t0, 90_000);
        let due = clock.after_ms(Duration::from_millis(10));
        tokio::time::advance(Duration::from_micros(9_999)).await;
        assert!(clock.now_ms() < due, "due early");
        tokio::time::advance(Duration::from_micros(1_001)).await;
        assert!(clock.now_ms() >= due);
    }
}
