//! Reading a process tree's resident memory (and this process's open-file limit) from `/proc`:
//! the figures every phase of the benchmark compares.

use crate::peers;
use serde::Serialize;

/// Resident memory of a process tree, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resident {
    /// VmRSS summed over the tree.
    pub rss_kib: u64,
    /// Pss summed over the tree (shared pages split between their users).
    pub pss_kib: u64,
}

/// Read `pid`'s tree (the process and its direct children: nginx's workers).
pub fn resident(pid: u32) -> Option<Resident> {
    let mut total = Resident::default();
    for p in peers::proc_tree(pid) {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
        total.rss_kib += kib_field(&status, "VmRSS:")?;
        total.pss_kib += kib_field(&rollup, "Pss:")?;
    }
    Some(total)
}

/// This process's soft limit on open files (`None`: unlimited or unreadable).
pub(super) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `NAME:   1234 kB` → 1234.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
