//! The span model every reader produces and every analysis consumes.
//!
//! It is deliberately small: times in nanoseconds as `i64`, names interned to `u32` symbols, the
//! parent as an index. A million spans fit in well under 100 MB and no analysis allocates per span.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-cryptographic hasher for interned names and span ids (inputs are not adversarial
/// enough to matter: the worst case is a slower analysis, never a wrong one).
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ (rest.len() as u64) << 56);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Combine two fingerprints.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.rotate_left(23) ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Hash some bytes to a stable 64-bit fingerprint (used for call keys and sampling).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    // final avalanche so that low bits are usable
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// An interned name (service, operation, host, ...). `0` is always the empty string.
pub type Sym = u32;

/// Interns names so spans carry 4-byte symbols instead of strings.
#[derive(Debug, Clone)]
pub struct Interner {
    map: FxHashMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
    /// Per-symbol memo for facts derived from a name (0 = not computed yet).
    memo: Vec<u8>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// A new interner holding only the empty string (symbol 0).
    pub fn new() -> Self {
        let mut me = Self {
            map: FxHashMap::default(),
            names: Vec::new(),
            memo: Vec::new(),
        };
        me.intern("");
        me
    }

    /// The symbol for `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&s) = self.map.get(name) {
            return s;
        }
        let s = Sym::try_from(self.names.len()).unwrap_or(Sym::MAX);
        self.names.push(name.into());
        self.map.insert(name.into(), s);
        s
    }

    /// A memoized fact about a name: `compute` runs once per symbol.
    pub fn memo(&mut self, sym: Sym, compute: impl FnOnce(&str) -> bool) -> bool {
        let i = sym as usize;
        if self.memo.len() <= i {
            self.memo.resize(self.names.len().max(i + 1), 0);
        }
        match self.memo[i] {
            1 => false,
            2 => true,
            _ => {
                let v = compute(self.name(sym));
                self.memo[i] = if v { 2 } else { 1 };
                v
            }
        }
    }

    /// The symbol for `name` if it was interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.map.get(name).copied()
    }

    /// The name behind a symbol (empty for an unknown symbol).
    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).map_or("", |s| s)
    }

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when only the empty string is interned.
    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

/// A span id: most real ids are 64-bit hex; anything else (test ids like `span-A`) is interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanId {
    /// A hexadecimal id of at most 16 digits.
    Hex(u64),
    /// Any other id, interned.
    Name(Sym),
}

impl SpanId {
    /// Parse an id as written in a trace file: hex (any case, leading zeros optional) or other text.
    pub fn parse(s: &str, interner: &mut Interner) -> SpanId {
        match parse_hex64(s) {
            Some(v) => SpanId::Hex(v),
            None => SpanId::Name(interner.intern(s)),
        }
    }

    /// Render the id as the trace files write it (16 hex digits for hex ids).
    pub fn render(&self, interner: &Interner) -> String {
        match self {
            SpanId::Hex(v) => format!("{v:016x}"),
            SpanId::Name(s) => interner.name(*s).to_string(),
        }
    }
}

/// Parse 1..=16 hex digits.
pub fn parse_hex64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Normalize a trace id: hex ids lower-cased with leading zeros stripped then padded to 16 or 32
/// digits (so `ff`, `00000000000000ff` and a 128-bit id with a zero high half agree); other text kept.
pub fn normalize_trace_id(s: &str) -> String {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return s.to_string();
    }
    // zero-padded to 16 or 32 digits (by hand: `format!` padding cost more than the rest of
    // a trace's id handling)
    let t = s.trim_start_matches('0');
    let width = if t.len() <= 16 { 16 } else { 32 };
    let mut out = String::with_capacity(width);
    out.push_str(&"00000000000000000000000000000000"[..width - t.len()]);
    out.push_str(t);
    out.make_ascii_lowercase();
    out
}

/// The role a span plays in a remote call, from OpenTelemetry / Zipkin / `span.kind` tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// Not stated.
    #[default]
    Unspecified,
    /// In-process work.
    Internal,
    /// The receiving side of a call.
    Server,
    /// The calling side of a call.
    Client,
    /// Sends a message; the consumer does not block it.
    Producer,
    /// Receives a message.
    Consumer,
}

impl SpanKind {
    /// Parse a kind as Jaeger tags, Zipkin and OTLP (names or numbers) write it.
    pub fn parse(s: &str) -> SpanKind {
        let s = s.trim();
        let s = s.strip_prefix("SPAN_KIND_").unwrap_or(s);
        match s.to_ascii_lowercase().as_str() {
            "server" | "2" => SpanKind::Server,
            "client" | "3" => SpanKind::Client,
            "producer" | "4" => SpanKind::Producer,
            "consumer" | "5" => SpanKind::Consumer,
            "internal" | "1" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        }
    }

    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// How a span refers to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// The parent waits for it (Jaeger `CHILD_OF`, OTLP/Zipkin parent ids).
    #[default]
    ChildOf,
    /// The parent does not wait for it (Jaeger `FOLLOWS_FROM`).
    FollowsFrom,
}

/// Span flags (bit set).
pub mod flags {
    /// The span reports an error (tag, status or log).
    pub const ERROR: u16 = 1;
    /// The span writes or publishes (HTTP POST/PUT/PATCH/DELETE, SQL INSERT/UPDATE/DELETE,
    /// a producer, an operation named like send/publish/write).
    pub const WRITE: u16 = 2;
    /// The span carries attributes that identify its arguments (URL, statement, ...), so its
    /// `call_key` can tell identical calls apart from merely similar ones.
    pub const HAS_ARGS: u16 = 4;
    /// A Zipkin server span that shared its id with the client span.
    pub const SHARED: u16 = 8;
    /// The start time was missing in the input.
    pub const NO_START: u16 = 16;
    /// The duration was missing in the input.
    pub const NO_DURATION: u16 = 32;
    /// Zipkin: the server side of a call (`shared` or kind SERVER), kept apart when merging
    /// fragments of one id.
    pub const SERVER_SIDE: u16 = 64;
}

/// One span, as all readers normalize it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The span's id within its trace.
    pub id: SpanId,
    /// The parent's id as written (resolved to `parent` by assembly).
    pub parent_id: Option<SpanId>,
    /// The parent's index in [`Trace::spans`], once resolved.
    pub parent: Option<u32>,
    /// How it refers to its parent.
    pub link: Link,
    /// Service name.
    pub service: Sym,
    /// Operation name.
    pub operation: Sym,
    /// Start, nanoseconds since the Unix epoch (or any fixed origin).
    pub start: i64,
    /// Duration in nanoseconds.
    pub duration: i64,
    /// Span kind.
    pub kind: SpanKind,
    /// [`flags`] bits.
    pub flags: u16,
    /// Fingerprint of the call's identifying attributes (operation + URL/statement/...), 0 if none.
    pub call_key: u64,
    /// Host (IP or hostname) the span ran on, 0 if unknown: clock skew is only corrected across hosts.
    pub host: Sym,
    /// HTTP method, 0 if none.
    pub http_method: Sym,
    /// HTTP route or path (or RPC method), 0 if none.
    pub http_path: Sym,
}

impl Span {
    /// A span with the given identity and timing and every other field empty.
    pub fn new(id: SpanId, service: Sym, operation: Sym, start: i64, duration: i64) -> Span {
        Span {
            id,
            parent_id: None,
            parent: None,
            link: Link::ChildOf,
            service,
            operation,
            start,
            duration,
            kind: SpanKind::Unspecified,
            flags: 0,
            call_key: 0,
            host: 0,
            http_method: 0,
            http_path: 0,
        }
    }

    /// End time in nanoseconds.
    pub fn end(&self) -> i64 {
        self.start.saturating_add(self.duration)
    }

    /// True when a flag bit is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// One assembled trace: spans with resolved parents and a chosen root.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Normalized trace id.
    pub trace_id: String,
    /// All spans; `parent` indexes into this vector.
    pub spans: Vec<Span>,
    /// Index of the root span (the earliest span without a parent).
    pub root: u32,
}

impl Trace {
    /// The root span.
    pub fn root_span(&self) -> &Span {
        &self.spans[self.root as usize]
    }

    /// Children of every span, in order of (start, input order): `children[i]` lists span `i`'s.
    pub fn children(&self) -> Children {
        let n = self.spans.len();
        let mut count = vec![0u32; n + 1];
        for s in &self.spans {
            if let Some(p) = s.parent {
                if let Some(c) = count.get_mut(p as usize + 1) {
                    *c += 1;
                }
            }
        }
        let mut out = Children::with_counts(count);
        for (i, s) in self.spans.iter().enumerate() {
            if let Some(p) = s.parent {
                out.place(p as usize, i as u32);
            }
        }
        out.sort_each(|c| (self.spans[c as usize].start, c));
        out
    }
}

/// The children of every node in one allocation (offsets into one list) rather than a `Vec` per
/// node: building and dropping a list per node was a large share of assembly and critical-path
/// time. `children[i]` is node `i`'s list, as a slice; indexing past the end panics, as a `Vec`
/// of lists would.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Children {
    /// `items[offsets[i]..offsets[i + 1]]` are node `i`'s children; `offsets.len()` is nodes + 1.
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Children {
    /// Nodes without children.
    pub fn empty(nodes: usize) -> Children {
        Children {
            offsets: vec![0; nodes + 1],
            items: Vec::new(),
        }
    }

    /// From one list per node.
    pub fn from_lists(lists: Vec<Vec<u32>>) -> Children {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut items = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        offsets.push(0);
        for l in lists {
            items.extend_from_slice(&l);
            offsets.push(items.len() as u32);
        }
        Children { offsets, items }
    }

    /// Room for `count[i + 1]` children of node `i` (`count[0]` is ignored), to be filled by
    /// [`Self::place`] in the order the lists should have.
    pub(crate) fn with_counts(mut count: Vec<u32>) -> Children {
        if let Some(c) = count.first_mut() {
            *c = 0;
        }
        let mut total = 0u32;
        for c in count.iter_mut() {
            total += *c;
            *c = total;
        }
        // `offsets[i]` is the next free place of node `i` while filling; see `place`
        let mut offsets: Vec<u32> = Vec::with_capacity(count.len());
        offsets.push(0);
        offsets.extend_from_slice(&count[..count.len().saturating_sub(1)]);
        Children {
            offsets,
            items: vec![0; total as usize],
        }
    }

    /// Append `child` to node `p`'s list (counted in [`Self::with_counts`]); once every child is
    /// placed, the offsets are the lists' bounds.
    pub(crate) fn place(&mut self, p: usize, child: u32) {
        if let Some(at) = self.offsets.get_mut(p + 1) {
            if let Some(slot) = self.items.get_mut(*at as usize) {
                *slot = child;
                *at += 1;
            }
        }
    }

    /// Sort every node's list by `key`.
    pub(crate) fn sort_each<K: Ord>(&mut self, mut key: impl FnMut(u32) -> K) {
        for w in 0..self.offsets.len().saturating_sub(1) {
            let (a, b) = (self.offsets[w] as usize, self.offsets[w + 1] as usize);
            if b - a > 1 {
                self.items[a..b].sort_by_key(|&c| key(c));
            }
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node `i`'s children, `None` past the last node.
    pub fn get(&self, i: usize) -> Option<&[u32]> {
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.items.get(a as usize..b as usize)
    }

    /// Every node's list, in node order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.offsets
            .windows(2)
            .map(|w| &self.items[w[0] as usize..w[1] as usize])
    }
}

impl std::ops::Index<usize> for Children {
    type Output = [u32];
    fn index(&self, i: usize) -> &[u32] {
        match self.get(i) {
            Some(l) => l,
            None => panic!("node {i} out of range ({} nodes)", self.len()),
        }
    }
}

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
}

impl WarningKind {
    /// Every kind, in report order.
    pub const ALL: [WarningKind; 14] = [
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
        }
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
        self.add(kind);
        if self.examples.len() < Self::MAX_EXAMPLES {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_in_one_list_are_the_lists_per_node() {
        let mut i = Interner::new();
        let (svc, op) = (i.intern("s"), i.intern("o"));
        // parents out of order, equal starts, a parent out of range (ignored), no children
        let parents = [
            None,
            Some(0),
            Some(0),
            Some(1),
            Some(9),
            Some(0),
            Some(3),
            None,
        ];
        let starts = [0, 5, 3, 6, 1, 3, 7, 2];
        let spans: Vec<Span> = parents
            .iter()
            .zip(starts)
            .enumerate()
            .map(|(k, (p, st))| {
                let mut s = Span::new(SpanId::Hex(k as u64), svc, op, st, 1);
                s.parent = *p;
                s
            })
            .collect();
        let t = Trace {
            trace_id: "t".into(),
            spans,
            root: 0,
        };
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); t.spans.len()];
        for (k, s) in t.spans.iter().enumerate() {
            if let Some(l) = s.parent.and_then(|p| lists.get_mut(p as usize)) {
                l.push(k as u32);
            }
        }
        for l in &mut lists {
            l.sort_by_key(|&c| (t.spans[c as usize].start, c));
        }
        let c = t.children();
        assert_eq!(c, Children::from_lists(lists.clone()));
        assert_eq!(c.len(), lists.len());
        assert_eq!(c.iter().map(<[u32]>::to_vec).collect::<Vec<_>>(), lists);
        for (k, l) in lists.iter().enumerate() {
            assert_eq!(&c[k], &l[..]);
        }
        assert_eq!(&c[0], &[2, 5, 1]);
        assert_eq!(c.get(lists.len()), None);
        assert!(Children::empty(3).iter().all(<[u32]>::is_empty));
        assert!(Children::default().is_empty());
    }

    #[test]
    fn ids_normalize() {
        let mut i = Interner::new();
        assert_eq!(SpanId::parse("00FF", &mut i), SpanId::Hex(255));
        assert_eq!(SpanId::parse("ff", &mut i), SpanId::Hex(255));
        let a = SpanId::parse("span-A", &mut i);
        assert_eq!(a.render(&i), "span-A");
        assert_eq!(SpanId::Hex(255).render(&i), "00000000000000ff");
        assert_eq!(
            normalize_trace_id("00000000000000000000000000000001"),
            "0000000000000001"
        );
        assert_eq!(
            normalize_trace_id("5B8EFFF798038103D269B633813FC60C"),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(normalize_trace_id("trace-abc"), "trace-abc");
    }

    #[test]
    fn kinds_parse_names_and_numbers() {
        assert_eq!(SpanKind::parse("SPAN_KIND_SERVER"), SpanKind::Server);
        assert_eq!(SpanKind::parse("3"), SpanKind::Client);
        assert_eq!(SpanKind::parse("PRODUCER"), SpanKind::Producer);
        assert_eq!(SpanKind::parse("bogus"), SpanKind::Unspecified);
    }

    #[test]
    fn warnings_count_and_merge() {
        let mut w = Warnings::default();
        w.add_with(WarningKind::OrphanSpan, || "x".into());
        w.add(WarningKind::OrphanSpan);
        let mut v = Warnings::default();
        v.merge(&w);
        assert_eq!(v.count(WarningKind::OrphanSpan), 2);
        assert_eq!(v.total(), 2);
        assert_eq!(v.examples.len(), 1);
    }
}
