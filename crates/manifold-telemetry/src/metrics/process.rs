//! The process's own figures, read from `/proc/self` at each scrape, under the names every
//! Prometheus client library's process collector uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`, ...), so the
//! dashboards and alerts written for them (file descriptors near the limit, memory growth) work
//! on Manifold unchanged.
//!
//! Why read at the scrape: nothing on a request's path pays for them, and the kernel's figures
//! are exact. Off Linux, or when `/proc` is not mounted, the series are left out (no zeros that
//! would look like readings).

use std::time::{SystemTime, UNIX_EPOCH};

use super::render::Writer;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times: the kernel's `USER_HZ`, fixed at
/// 100 in the ABI of every architecture Manifold builds for (as Prometheus's own `procfs`
/// library takes it).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says of the process.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl Process {
    /// Read `/proc/self` now; a figure that cannot be read is left out.
    pub(crate) fn read() -> Process {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/self/{f}")).ok();
        let mut p = Process {
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                // The directory handle read_dir holds is one of them.
                .map(|d| d.count().saturating_sub(1) as f64),
            ..Process::default()
        };
        if let Some(stat) = read("stat") {
            p.cpu_seconds = cpu_seconds(&stat);
        }
        if let Some(status) = read("status") {
            p.resident_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024.0);
            p.virtual_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024.0);
        }
        if let Some(limits) = read("limits") {
            p.max_fds = max_open_files(&limits);
        }
        p
    }

    /// Write the figures read, and when the process started (`started`: wall-clock time).
    pub(crate) fn render(&self, w: &mut Writer, started: SystemTime) {
        let rows: [(&str, &str, &str, Option<f64>); 5] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                "gauge",
                self.max_fds,
            ),
        ];
        for (name, help, kind, value) in rows {
            if let Some(v) = value {
                w.single(name, help, kind, v);
            }
        }
        if let Ok(since) = started.duration_since(UNIX_EPOCH) {
            w.single(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                since.as_secs_f64(),
            );
        }
    }
}

/// utime + stime of `/proc/self/stat`, in seconds. The command name (field 2) is in parentheses
/// and may hold spaces or `)`, so fields are counted after its last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// A `kB` line of `/proc/self/status` (`VmRSS:    12345 kB`), in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_ascii_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib as f64)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`unlimited` reads as none).
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?;
    soft.parse::<u64>().ok().map(|v| v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_files_are_read_as_the_kernel_writes_them() {
        // A command name with spaces and a `)` of its own.
        let stat = "4242 (manifold (x) y) S 1 4242 4242 0 -1 4194560 9034 0 0 0 250 130 0 0 20 0 6 0 1000 123 456";
        assert_eq!(cpu_seconds(stat), Some(3.8));
        assert_eq!(cpu_seconds("garbage"), None);
        assert_eq!(cpu_seconds("1 (a) S 1 2"), None);
        let status = "Name:\tmanifold\nVmSize:\t  123456 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(20480.0));
        assert_eq!(status_kib(status, "VmSize:"), Some(123456.0));
        assert_eq!(status_kib("VmRSS: 12 pages\n", "VmRSS:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            65536                1048576              files\n";
        assert_eq!(max_open_files(limits), Some(65536.0));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_itself() {
        let p = Process::read();
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|b| b > 1_000_000.0), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3.0), "{p:?}");
        assert!(p.max_fds >= p.open_fds, "{p:?}");
    }
}
