//! The damage real exports carry, counted per kind with a few examples; none is fatal.

/// The kinds of damage real exports carry; each is counted, none is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarningKind {
    /// A span without a start time (dropped; its children move to its parent).
    MissingTimestamp,
    /// A span without a duration (taken from its children, else 0).
    MissingDuration,
    /// A negative duration (set to 0).
    NegativeDuration,
    /// A span whose parent is not in the trace.
    OrphanSpan,
    /// Two different spans with one id (the later one is dropped).
    DuplicateSpanId,
    /// Fragments of one span reported separately and merged (Zipkin).
    MergedFragment,
    /// A reference to a span in another trace (ignored).
    ForeignReference,
    /// A child that starts before or ends after its parent (clipped to the parent).
    ChildOutlivesParent,
    /// A child entirely outside its parent (left out of the critical path).
    ChildOutsideParent,
    /// A span without a service name (`unknown`).
    MissingServiceName,
    /// More than one span without a parent (the earliest is the root).
    MultipleRoots,
    /// Spans in a parent cycle (left out).
    ParentCycle,
    /// A span the reader could not use (bad field types, bad ids).
    MalformedSpan,
    /// A server span shifted into its client's time window (clock skew).
    ClockSkewAdjusted,
    /// A name, id or string over the reader's limits, kept cut ([`crate::limits`]).
    LongTextCut,
    /// A unit (trace object, `resourceSpans` element, NDJSON line) over the reader's size
    /// limit, skipped ([`crate::limits::MAX_UNIT`]).
    UnitTooLarge,
    /// A span past the most one trace keeps, dropped ([`crate::limits::MAX_TRACE_SPANS`]).
    TraceTooLarge,
}

impl WarningKind {
    /// Every kind, in report order.
    pub const ALL: [WarningKind; 17] = [
        WarningKind::MissingTimestamp,
        WarningKind::MissingDuration,
        WarningKind::NegativeDuration,
        WarningKind::OrphanSpan,
        WarningKind::DuplicateSpanId,
        WarningKind::MergedFragment,
        WarningKind::ForeignReference,
        WarningKind::ChildOutlivesParent,
        WarningKind::ChildOutsideParent,
        WarningKind::MissingServiceName,
        WarningKind::MultipleRoots,
        WarningKind::ParentCycle,
        WarningKind::MalformedSpan,
        WarningKind::ClockSkewAdjusted,
        WarningKind::LongTextCut,
        WarningKind::UnitTooLarge,
        WarningKind::TraceTooLarge,
    ];

    /// Stable snake_case name (used in `--json`).
    pub fn as_str(&self) -> &'static str {
        match self {
            WarningKind::MissingTimestamp => "missing_timestamp",
            WarningKind::MissingDuration => "missing_duration",
            WarningKind::NegativeDuration => "negative_duration",
            WarningKind::OrphanSpan => "orphan_span",
            WarningKind::DuplicateSpanId => "duplicate_span_id",
            WarningKind::MergedFragment => "merged_fragment",
            WarningKind::ForeignReference => "foreign_reference",
            WarningKind::ChildOutlivesParent => "child_outlives_parent",
            WarningKind::ChildOutsideParent => "child_outside_parent",
            WarningKind::MissingServiceName => "missing_service_name",
            WarningKind::MultipleRoots => "multiple_roots",
            WarningKind::ParentCycle => "parent_cycle",
            WarningKind::MalformedSpan => "malformed_span",
            WarningKind::ClockSkewAdjusted => "clock_skew_adjusted",
            WarningKind::LongTextCut => "long_text_cut",
            WarningKind::UnitTooLarge => "unit_too_large",
            WarningKind::TraceTooLarge => "trace_too_large",
        }
    }

    /// True for the limits the reader applies to hostile input ([`crate::limits`]).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            WarningKind::LongTextCut | WarningKind::UnitTooLarge | WarningKind::TraceTooLarge
        )
    }

    /// True for kinds that describe a repair we made rather than a defect in the data.
    pub fn is_informational(&self) -> bool {
        matches!(
            self,
            WarningKind::MergedFragment | WarningKind::ClockSkewAdjusted
        )
    }
}

/// Warning counters, with the first few examples kept for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Warnings {
    counts: [u64; WarningKind::ALL.len()],
    /// Up to [`Warnings::MAX_EXAMPLES`] human-readable examples.
    pub examples: Vec<String>,
}

impl Warnings {
    /// How many examples are kept.
    pub const MAX_EXAMPLES: usize = 20;

    /// Count one warning.
    pub fn add(&mut self, kind: WarningKind) {
        self.counts[kind as usize] += 1;
    }

    /// Count one warning and keep an example message while there is room.
    pub fn add_with(&mut self, kind: WarningKind, example: impl FnOnce() -> String) {
        self.add_n_with(kind, 1, example);
    }

    /// Count `n` warnings of one kind and keep an example message while there is room. The
    /// first example of a limit the reader applied ([`WarningKind::is_limit`]) is kept even
    /// when the room is taken, so that what was cut or skipped, and where, is always said.
    pub fn add_n_with(&mut self, kind: WarningKind, n: u64, example: impl FnOnce() -> String) {
        let first = self.count(kind) == 0;
        self.counts[kind as usize] += n;
        if self.examples.len() < Self::MAX_EXAMPLES || (first && kind.is_limit()) {
            self.examples
                .push(format!("{}: {}", kind.as_str(), example()));
        }
    }

    /// The count for one kind.
    pub fn count(&self, kind: WarningKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Total of all kinds.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counts in report order.
    pub fn nonzero(&self) -> Vec<(WarningKind, u64)> {
        WarningKind::ALL
            .iter()
            .map(|k| (*k, self.count(*k)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Add another set of counters into this one.
    pub fn merge(&mut self, other: &Warnings) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        for e in &other.examples {
            if self.examples.len() >= Self::MAX_EXAMPLES {
                break;
            }
            self.examples.push(e.clone());
        }
    }
}
