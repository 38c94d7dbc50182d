//! Test helpers shared by the unit tests.

use std::path::{Path, PathBuf};

/// A directory under the system temp dir, unique to this process and call, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "manifold-queue-{tag}-{}-{:016x}",
            std::process::id(),
            crate::rng::with_rng(rand::Rng::random::<u64>)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
