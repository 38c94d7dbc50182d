//! The bounded sample of traces kept for the HTML waterfalls.

use super::{Analyzer, Snapshot, SnapshotRow};
use crate::critical::CpGraph;
use crate::model::{fingerprint, flags, Trace};

const SAMPLE: usize = 256;

impl Analyzer {
    pub(super) fn snapshot(
        &mut self,
        trace: &Trace,
        g: &CpGraph,
        cp: &crate::critical::CriticalPath,
        on_path: &[bool],
        e2e: i64,
    ) {
        let slowest = self.slowest.as_ref().is_none_or(|s| e2e > s.duration);
        let pos = (fingerprint(trace.trace_id.as_bytes()) % self.traces.max(1)) as usize;
        let keep_sample = self.sample.len() < SAMPLE || pos < SAMPLE;
        if !slowest && !keep_sample {
            return;
        }
        let t0 = g.start[trace.root as usize];
        let mut rows = Vec::new();
        let mut row_of = vec![usize::MAX; trace.spans.len()];
        let mut stack = vec![(trace.root, 0u32)];
        let children = trace.children();
        while let Some((i, d)) = stack.pop() {
            if rows.len() >= 2000 {
                break;
            }
            let s = &trace.spans[i as usize];
            row_of[i as usize] = rows.len();
            rows.push(SnapshotRow {
                depth: d,
                service: s.service,
                operation: s.operation,
                // Saturating: an untrusted file's times can be at opposite ends of i64.
                offset: s.start.saturating_sub(t0),
                duration: s.duration,
                critical: on_path[i as usize],
                error: s.has(flags::ERROR),
            });
            for &c in children[i as usize].iter().rev() {
                stack.push((c, d + 1));
            }
        }
        let sections = cp
            .sections
            .iter()
            .filter(|s| row_of[s.node as usize] != usize::MAX)
            .map(|s| {
                (
                    s.start.saturating_sub(t0),
                    s.end.saturating_sub(t0),
                    row_of[s.node as usize],
                )
            })
            .collect();
        let snap = Snapshot {
            trace_id: trace.trace_id.clone(),
            duration: e2e,
            rows,
            sections,
        };
        // one copy only when it is both the slowest and in the sample
        let (for_sample, for_slowest) = match (keep_sample, slowest) {
            (true, true) => (Some(snap.clone()), Some(snap)),
            (true, false) => (Some(snap), None),
            (false, _) => (None, Some(snap)),
        };
        if let Some(snap) = for_sample {
            if self.sample.len() < SAMPLE {
                self.sample.push(snap);
            } else {
                self.sample[pos] = snap;
            }
        }
        if for_slowest.is_some() {
            self.slowest = for_slowest;
        }
    }

    /// The sampled trace closest to the median latency.
    pub fn median_snapshot(&self) -> Option<&Snapshot> {
        let med = self.latency.quantile(0.5);
        self.sample
            .iter()
            .min_by_key(|s| (s.duration.abs_diff(med), s.trace_id.clone()))
    }
}
