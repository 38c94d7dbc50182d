//! CPU time from `/proc`: a peer process and its direct children (gunicorn's and nginx's
//! workers), or the threads of one name in this process.

use std::collections::HashMap;
use std::path::Path;

/// `pid` and the processes whose parent it is.
pub(crate) fn proc_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if child != pid && proc_stat(child).map(|s| s.ppid) == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

struct ProcStat {
    ppid: u32,
    ticks: u64,
}

/// `/proc/PID/stat`: the parent and user + system clock ticks of every thread of the process.
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold spaces: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3]; ppid is 4, utime 14, stime 15.
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// Linux reports `/proc` CPU times in USER_HZ, which is 100 on every architecture it runs on.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, every thread) of process `pid` alone, without its children:
/// this benchmark's own process, whose load generator and simulated upstreams share it.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    proc_stat(pid).map(|s| s.ticks as f64 / USER_HZ)
}

/// CPU seconds of `pid` and its direct children.
pub fn proc_tree_cpu_seconds(pid: u32) -> Option<f64> {
    let me = proc_stat(pid)?;
    let children: u64 = proc_tree(pid)
        .into_iter()
        .skip(1)
        .filter_map(proc_stat)
        .map(|s| s.ticks)
        .sum();
    Some((me.ticks + children) as f64 / USER_HZ)
}

/// The on-CPU time of this process's threads of one name, by thread: one component's CPU when
/// it runs on a tokio runtime of its own inside this process (its workers and blocking threads
/// all carry the runtime's thread name).
#[derive(Debug, Clone, Default)]
pub struct ThreadsCpu(HashMap<u32, ThreadTimes>);

/// One thread's times, seconds.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadTimes {
    /// On a CPU.
    on_cpu: f64,
    /// Runnable but waiting for a CPU (`schedstat`'s second field; 0 where the kernel does not
    /// keep it): time the thread had work and the machine gave it no core.
    waiting: f64,
}

impl ThreadsCpu {
    /// Read every thread of this process named `name` now. The kernel keeps 15 bytes of a
    /// thread's name, so `name` is compared at that length. Nanoseconds from
    /// `/proc/self/task/*/schedstat` where the kernel has it, else `stat`'s 10 ms ticks. `None`
    /// when no such thread is running (or `/proc` cannot be read).
    pub fn read(name: &str) -> Option<ThreadsCpu> {
        let want = name.as_bytes().get(..15).unwrap_or(name.as_bytes());
        Self::read_tasks(Path::new("/proc/self/task"), Some(want))
    }

    /// Read every thread of process `pid` (another process: a `manifold serve` child), with
    /// the same nanosecond resolution. `None` when it has no threads left (or no `/proc`).
    pub fn of_process(pid: u32) -> Option<ThreadsCpu> {
        Self::read_tasks(Path::new(&format!("/proc/{pid}/task")), None)
    }

    fn read_tasks(tasks: &Path, want: Option<&[u8]>) -> Option<ThreadsCpu> {
        let mut by_thread = HashMap::new();
        for e in std::fs::read_dir(tasks).ok()?.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = e.path();
            if let Some(want) = want {
                let Ok(comm) = std::fs::read(dir.join("comm")) else {
                    continue;
                };
                if comm.strip_suffix(b"\n").unwrap_or(&comm) != want {
                    continue;
                }
            }
            let from_schedstat = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat(&s));
            let times = from_schedstat.or_else(|| {
                let text = std::fs::read_to_string(dir.join("stat")).ok()?;
                Some(ThreadTimes {
                    on_cpu: parse_stat(&text)?.ticks as f64 / USER_HZ,
                    waiting: 0.0,
                })
            });
            if let Some(t) = times {
                by_thread.insert(tid, t);
            }
        }
        (!by_thread.is_empty()).then_some(ThreadsCpu(by_thread))
    }

    /// CPU seconds spent since `earlier` by the threads running now. A thread that exited in
    /// between takes its share with it (a tokio blocking thread idle for 10 s, say): the figure
    /// can only be short by that, never negative.
    pub fn seconds_since(&self, earlier: &ThreadsCpu) -> f64 {
        self.since(earlier, |t| t.on_cpu)
    }

    /// Seconds the threads running now spent runnable but waiting for a CPU since `earlier`
    /// (0 where the kernel keeps no `schedstat`): on a machine the benchmark shares with its
    /// own load generator, how long the measured process had work and no core to do it on.
    pub fn waiting_since(&self, earlier: &ThreadsCpu) -> f64 {
        self.since(earlier, |t| t.waiting)
    }

    fn since(&self, earlier: &ThreadsCpu, field: impl Fn(&ThreadTimes) -> f64) -> f64 {
        self.0
            .iter()
            .map(|(tid, now)| {
                let before = earlier.0.get(tid).map_or(0.0, &field);
                (field(now) - before).max(0.0)
            })
            .sum()
    }
}

/// `/proc/.../schedstat`: nanoseconds on a CPU, nanoseconds waiting on a run queue, timeslices.
fn parse_schedstat(text: &str) -> Option<ThreadTimes> {
    let mut fields = text.split_whitespace();
    let on_cpu = fields.next()?.parse::<u64>().ok()?;
    let waiting = fields.next()?.parse::<u64>().ok()?;
    Some(ThreadTimes {
        on_cpu: on_cpu as f64 / 1e9,
        waiting: waiting as f64 / 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn thread_cpu_is_read_by_thread_name_and_grows_with_work() {
        // A name over the kernel's 15 bytes: found by its truncated form.
        let name = "cpu-probe-thread-long-name";
        assert!(ThreadsCpu::read(name).is_none(), "no such thread yet");
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                ready.send(()).unwrap();
                // Burn CPU until told to stop (bounded: at most a few seconds).
                let mut x = 0u64;
                for _ in 0..50_000 {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                    if stopped.try_recv().is_ok() {
                        break;
                    }
                }
            })
            .unwrap();
        started.recv().unwrap();
        let first = ThreadsCpu::read(name).expect("the probe thread is found");
        assert_eq!(first.0.len(), 1, "{first:?}");
        let mut spent = 0.0;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            if let Some(now) = ThreadsCpu::read(name) {
                spent = now.seconds_since(&first);
            }
            if spent > 0.0 {
                break;
            }
        }
        stop.send(()).unwrap();
        t.join().unwrap();
        assert!(spent > 0.0, "{first:?} then {spent}");
        // Once the thread is gone it is not found, and an exited thread never counts negative.
        // `join` returns when the kernel clears the thread's tid, a moment before the task
        // leaves /proc/self/task, so wait (bounded) for it to go.
        let mut gone = false;
        for _ in 0..200 {
            if ThreadsCpu::read(name).is_none() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone, "the exited thread is still listed after 2 s");
        assert_eq!(ThreadsCpu::default().seconds_since(&first), 0.0);
    }

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "4242 (tokio rt (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.ticks, 325);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn schedstat_gives_time_on_a_cpu_and_time_waiting_for_one() {
        let t = parse_schedstat("2435865972 29331802365 50077\n").unwrap();
        assert!((t.on_cpu - 2.435865972).abs() < 1e-9);
        assert!((t.waiting - 29.331802365).abs() < 1e-9);
        assert!(parse_schedstat("12").is_none());
        assert!(parse_schedstat("x y z").is_none());
        let tid = |on_cpu, waiting| ThreadsCpu([(1, ThreadTimes { on_cpu, waiting })].into());
        let (before, after) = (tid(1.0, 0.5), tid(1.25, 2.0));
        assert!((after.seconds_since(&before) - 0.25).abs() < 1e-12);
        assert!((after.waiting_since(&before) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn this_process_has_a_cpu_reading() {
        let cpu = proc_tree_cpu_seconds(std::process::id());
        assert!(cpu.is_some_and(|c| c >= 0.0));
    }
}
