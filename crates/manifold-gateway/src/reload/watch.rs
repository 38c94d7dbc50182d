//! `manifold serve --watch`: poll the config file, reload when it changed.
//!
//! Polling once a second (tokio's clock) rather than the `notify` crate: one config file needs
//! no kernel watches, and polling sees every way a file gets replaced the same way — an editor
//! writing a new file and renaming it over the old (an inotify watch on the old inode goes
//! quiet), a Kubernetes ConfigMap swapping its `..data` symlink, a network file system that
//! sends no events. A second of delay is nothing for a config change. The file's modification
//! time alone would miss two writes within its granularity, or a copy that kept the old time,
//! so the bytes are hashed too.

use super::Live;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// A config file past this size is not hashed (its time and size still are): the compiler
/// reads it whole either way, and a watcher must not hash an unbounded file every second.
const MAX_HASHED_BYTES: u64 = 16 * 1024 * 1024;

/// What the watcher compares from one look to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

async fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    // Regular files only (symlinks followed), and never more than the bound: the path turned
    // into a FIFO would block the read until a writer came, and the watcher with it (the next
    // real change never applied); a device such as /dev/zero has size 0 and no end. Anything
    // else counts as a file that is gone for now.
    if !meta.is_file() {
        return None;
    }
    let hash = if meta.len() <= MAX_HASHED_BYTES {
        let mut bytes = Vec::new();
        tokio::fs::File::open(path)
            .await
            .ok()?
            .take(MAX_HASHED_BYTES)
            .read_to_end(&mut bytes)
            .await
            .ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    } else {
        0
    };
    Some(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        hash,
    })
}

pub(super) async fn run(live: Arc<Live>, every: Duration, stop: CancellationToken) {
    let path = live.current.load().config.source.clone();
    let mut last = fingerprint(&path).await;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    tracing::info!(file = %path.display(), every = ?every, "watching the config file");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = fingerprint(&path).await;
        // A file that is gone (mid-replace, or deleted) is looked at again next time: the
        // running config stays, and nothing is reloaded from a missing file.
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        tracing::info!(file = %path.display(), "the config file changed: reloading");
        // Logged inside, success or failure; a failed one is retried at the next change.
        let _ = live.reload_file().await;
    }
}
