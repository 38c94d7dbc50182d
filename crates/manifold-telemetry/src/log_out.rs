//! Log lines written off the request path: the access log (stdout) and the gateway's own log
//! (stderr) go through a bounded queue to a thread of their own, and are dropped, counted,
//! when it is full.
//!
//! Why: a write to a pipe blocks once the pipe's 64 KiB are full, until its reader reads. A
//! log reader that stalls (a collector restarting, a `docker logs` driver behind, a terminal
//! paused with Ctrl-S) then stopped every request worker that logged — with the access log on,
//! every request, so the whole gateway — for as long as the reader stalled. A gateway must not
//! hang on its logs; losing lines while nobody reads them is the lesser harm, and the count
//! (`manifold_log_lines_dropped_total`) says how many. `tracing-appender`'s writer is the
//! well-kept form of exactly this (one line per message, a bounded channel, lossy).

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines the access log's queue holds (a line is ~300 bytes: ~5 MB at most).
pub const ACCESS_LINES: usize = 16 * 1024;

/// Lines the gateway's own log queue holds (a line is a few hundred bytes to ~3 KB with a long
/// path: ~25 MB at most).
pub const LOG_LINES: usize = 8 * 1024;

/// The streams whose dropped lines are counted, by their `stream` label.
pub const STREAMS: [&str; 2] = ["access", "log"];

/// Every writer made by [`writer`], with its stream: what [`dropped_lines`] sums. Process-wide,
/// as stdout and stderr are.
static COUNTERS: Mutex<Vec<(&'static str, ErrorCounter)>> = Mutex::new(Vec::new());

/// A bounded, lossy writer to `out` for `stream` (one of [`STREAMS`]), holding `lines` lines,
/// and the guard that flushes it when dropped (for at most a second). Each `write` call is one
/// line: write a whole line at a time.
pub fn writer<W: Write + Send + 'static>(
    stream: &'static str,
    lines: usize,
    out: W,
) -> (NonBlocking, WorkerGuard) {
    let (w, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name(&format!("manifold-{stream}-log"))
        .finish(out);
    COUNTERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((stream, w.error_counter()));
    (w, guard)
}

/// Lines dropped so far for `stream`, every writer of it together.
pub fn dropped_lines(stream: &str) -> u64 {
    COUNTERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, c)| c.dropped_lines() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A writer whose reader has stalled: every write blocks until told to go on.
    struct Stalled(mpsc::Receiver<()>, mpsc::Sender<Vec<u8>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            let _ = self.1.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_costs_lines_not_the_writer_s_time_and_they_are_counted() {
        let (go, stalled) = mpsc::channel();
        let (sent, written) = mpsc::channel();
        let before = dropped_lines("access");
        let (mut w, guard) = writer("access", 4, Stalled(stalled, sent));
        // The worker holds one line in its blocked write, the queue four; the rest are
        // dropped at once instead of waiting.
        for i in 0..100 {
            w.write_all(format!("line {i}\n").as_bytes())
                .expect("never an error");
        }
        let dropped = dropped_lines("access") - before;
        assert!((95..=96).contains(&dropped), "{dropped}");
        // Once the reader reads again, what was queued is written, in order.
        for _ in 0..10 {
            let _ = go.send(());
        }
        let first = written
            .recv_timeout(Duration::from_secs(5))
            .expect("a line");
        assert_eq!(first, b"line 0\n");
        drop(guard);
    }
}
