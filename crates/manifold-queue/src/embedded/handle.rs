//! The open redb file (`queue.redb`; also the local status store's `status.redb`), and
//! reopening it after a failed write.
//!
//! redb latches an I/O failure: once one write, `set_len` or `fsync` has failed (a full disk,
//! ENOSPC), every later operation of that `Database` fails with "Previous I/O error occurred.
//! Please close and re-open the database", even after space is freed. Without a reopen, one
//! moment of a full disk would leave the queue refusing every enqueue (as a 500, not the 503 a
//! full disk answers), failing every ack (so delivered tasks come back every `lease_timeout`)
//! and still reporting ready, until the process restarts. So the writer thread reopens the file
//! before the next commit after a failed one; a reopen that fails (the disk is still full) is
//! that commit's error, and the next commit tries again.
//!
//! A failed commit left nothing in the file (redb commits atomically), so the in-memory index,
//! which only ever follows commits that succeeded, stays right across the reopen.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::Database;

use crate::error::QueueError;

/// How the file is opened: `Database::create` in production, another backend in tests.
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The live `Database`, shared by readers and the writer thread.
pub(crate) struct Handle {
    /// The file's name, for errors and logs.
    name: &'static str,
    open: Opener,
    /// `None` while a reopen failed: readers get an error, the writer tries again.
    db: RwLock<Option<Arc<Database>>>,
}

/// What opening the file `name` is called in errors: the file's own name, which an operator
/// searches for (a second `manifold serve` on the same path fails on `open queue.redb`).
fn open_what(name: &'static str) -> &'static str {
    match name {
        "queue.redb" => "open queue.redb",
        "status.redb" => "open status.redb",
        _ => "open the redb file",
    }
}

/// Readers hold a clone of the `Arc` for one synchronous read; a reopen waits this many
/// milliseconds at most for them to finish before giving up (and trying again at the next
/// commit).
const READERS_GRACE_MS: u32 = 5000;

impl Handle {
    /// Opens the file (`name`, e.g. `queue.redb`) now.
    pub(crate) fn open(name: &'static str, open: Opener) -> Result<Self, QueueError> {
        let db = open().map_err(|e| QueueError::storage(open_what(name), e))?;
        Ok(Handle {
            name,
            open,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// The database to read or write now. Keep the returned `Arc` alive for as long as any
    /// transaction taken from it (bind it first, so it is dropped last).
    pub(crate) fn get(&self) -> Result<Arc<Database>, QueueError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                QueueError::storage(
                    open_what(self.name),
                    Reopening(format!(
                        "{} is being reopened after an I/O failure",
                        self.name
                    )),
                )
            })
    }

    /// Closes the database (once its readers are done) and opens the file again. New readers
    /// wait on the lock meanwhile; a reader in the middle of a read finishes it first.
    pub(crate) fn reopen(&self) -> Result<Arc<Database>, String> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = slot.take() {
            let mut waited = 0;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if waited < READERS_GRACE_MS => {
                        waited += 1;
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        *slot = Some(shared);
                        return Err(format!("{} not reopened: readers still hold it", self.name));
                    }
                }
            }
        }
        let db = Arc::new((self.open)().map_err(|e| format!("reopen {}: {e}", self.name))?);
        *slot = Some(Arc::clone(&db));
        tracing::warn!(file = self.name, "redb file reopened after an I/O failure");
        Ok(db)
    }
}

/// Why no database is open right now.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reopening(String);

/// A redb backend over shared memory whose writes can be made to fail with ENOSPC, and which
/// survives its `Database` being dropped: a disk that fills up and frees again, for tests.
#[cfg(test)]
pub(crate) mod flaky {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use redb::backends::InMemoryBackend;
    use redb::StorageBackend;

    type BackendIoError = std::io::Error;

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Disk {
        pub(crate) memory: Arc<InMemoryBackend>,
        pub(crate) full: Arc<AtomicBool>,
    }

    impl Disk {
        fn check(&self) -> Result<(), BackendIoError> {
            if self.full.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        }

        /// Opens a database on this disk.
        pub(crate) fn opener(&self) -> super::Opener {
            let disk = self.clone();
            Box::new(move || redb::Builder::new().create_with_backend(disk.clone()))
        }
    }

    impl StorageBackend for Disk {
        fn len(&self) -> Result<u64, BackendIoError> {
            self.memory.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
            self.memory.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
            if len > self.memory.len()? {
                self.check()?;
            }
            self.memory.set_len(len)
        }
        fn sync_data(&self) -> Result<(), BackendIoError> {
            self.check()?;
            self.memory.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
            self.check()?;
            self.memory.write(offset, data)
        }
    }
}
