//! What the analysis keeps across traces: per-operation, per-endpoint, per-path and per-recommendation
//! aggregates, sampled traces and route-plan evidence.

use super::Dist;
use crate::model::{FxHashMap, Sym};

/// (service, operation) symbols.
pub type OpKey = (Sym, Sym);

/// Aggregate for one (service, operation).
#[derive(Debug, Clone, Default)]
pub struct OpAgg {
    /// Summed exclusive critical time (ns).
    pub critical_total: i128,
    /// Per-trace critical contribution, over traces containing the operation.
    pub per_trace: Dist,
    /// Spans seen.
    pub spans: u64,
}

/// Aggregate for one endpoint (root service, root operation).
#[derive(Debug, Clone, Default)]
pub struct EndpointAgg {
    /// End-to-end latency of its traces.
    pub latency: Dist,
    /// Per-operation aggregates within this endpoint.
    pub ops: FxHashMap<OpKey, OpAgg>,
    /// What-if: latency after the change.
    pub what_if_after: Dist,
}

/// Aggregate for one call path (root → … → operation).
///
/// The path is held as its last hop and the hash of the path above it (a trie, rendered by
/// [`crate::analysis::Analyzer::call_path_name`]), not as text: a chain of `n` nested spans
/// has `n` call paths, and spelling each out in full cost O(n²) time and memory (a 200,000-deep
/// chain in an untrusted trace file asked for hundreds of gigabytes).
#[derive(Debug, Clone, Default)]
pub struct CallPathAgg {
    /// The hash of the call path this one extends (`None` at the root).
    pub parent: Option<u64>,
    /// The path's last hop.
    pub op: OpKey,
    /// Summed exclusive critical time (ns).
    pub critical_total: i128,
    /// Times it was on a critical path.
    pub count: u64,
}

/// Recommendation kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecKind {
    /// Calls under one span run one after another.
    Parallelize,
    /// Many sequential calls to one operation (N+1).
    Batch,
    /// Identical calls repeated.
    Cache,
    /// A write at the end that nothing waits for.
    Async,
    /// Calls repeated after errors.
    Retry,
    /// Calls running in waves of k.
    LimitedConcurrency,
    /// One operation dominating.
    SlowDependency,
}

impl RecKind {
    /// The name used in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecKind::Parallelize => "parallelize",
            RecKind::Batch => "batch",
            RecKind::Cache => "cache",
            RecKind::Async => "async",
            RecKind::Retry => "retry",
            RecKind::LimitedConcurrency => "limited-concurrency",
            RecKind::SlowDependency => "slow-dependency",
        }
    }
}

/// Evidence and simulated savings for one candidate recommendation.
#[derive(Debug, Clone, Default)]
pub struct RecAgg {
    /// Traces where the pattern occurred.
    pub traces: u64,
    /// Calls involved.
    pub calls: u64,
    /// Per-trace saving (ns).
    pub saving: Dist,
    /// End-to-end latency of the affected traces before.
    pub before: Dist,
    /// Up to 3 example trace ids.
    pub examples: Vec<String>,
    /// Largest concurrency seen (limited-concurrency), errors seen (retry), repeats (cache).
    pub detail: u64,
}

/// One trace kept for the HTML waterfall.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Trace id.
    pub trace_id: String,
    /// End-to-end duration (ns).
    pub duration: i64,
    /// Rows in depth-first order: (depth, service, operation, start offset ns, duration ns, on critical path, error).
    pub rows: Vec<SnapshotRow>,
    /// Critical sections (start offset ns, end offset ns, row index).
    pub sections: Vec<(i64, i64, usize)>,
}

/// One row of a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    /// Tree depth.
    pub depth: u32,
    /// Service (the analysis' interner's symbol: up to 257 traces of 2,000 rows are kept, and a
    /// copy of the names per row made a name shared by many spans weigh that many times over).
    pub service: Sym,
    /// Operation (a symbol, likewise).
    pub operation: Sym,
    /// Offset from the trace start (ns).
    pub offset: i64,
    /// Duration (ns).
    pub duration: i64,
    /// On the critical path.
    pub critical: bool,
    /// Reported an error.
    pub error: bool,
}

/// Route-plan evidence for one endpoint.
#[derive(Debug, Clone, Default)]
pub struct PlanAgg {
    /// Endpoint (service, operation).
    pub endpoint: Option<OpKey>,
    /// Downstream calls in first-seen order.
    pub calls: Vec<OpKey>,
    /// HTTP method / path seen per call.
    pub call_http: FxHashMap<OpKey, (Sym, Sym)>,
    /// Root HTTP method / path.
    pub root_http: (Sym, Sym),
    /// (a, b) → (traces with both, traces where a ended before b started).
    pub order: FxHashMap<(OpKey, OpKey), (u64, u64)>,
    /// Per trace: (lead, trailing, per-call (key, summed duration, first start, last end)) — kept
    /// for the plan's latency (bounded by the number of traces of one endpoint).
    pub samples: Vec<PlanSample>,
    /// Observed latency.
    pub latency: Dist,
    /// Calls nothing waited for (write at the end).
    pub async_calls: Vec<OpKey>,
    /// Spans under the root left out because [`crate::analysis::MAX_PLAN_CALLS`] calls were
    /// already in the plan.
    pub calls_left_out: u64,
}

/// One trace's view of a route (for plan latency).
#[derive(Debug, Clone)]
pub struct PlanSample {
    /// Root's own time before the first call and after the last.
    pub own: i64,
    /// Calls: key, summed duration.
    pub calls: Vec<(OpKey, i64)>,
}
