//! The span model every reader produces and every analysis consumes.
//!
//! It is deliberately small: times in nanoseconds as `i64`, names interned to `u32` symbols, the
//! parent as an index. A million spans fit in well under 100 MB and no analysis allocates per span.

mod children;
mod hash;
mod intern;
mod warnings;

pub use children::Children;
pub use hash::{fingerprint, mix, FxHashMap, FxHasher};
pub use intern::{Interner, Sym};
pub use warnings::{WarningKind, Warnings};

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
/// Text longer than [`MAX_NAME`](crate::limits::MAX_NAME) is cut ([`clip`](crate::limits::clip)):
/// a trace id is copied into every warning, sample and example that names its trace.
pub fn normalize_trace_id(s: &str) -> String {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return crate::limits::clip(s).into_owned();
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
        if s.len() > "consumer".len() {
            return SpanKind::Unspecified; // no kind is longer (and a hostile one is not copied)
        }
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
    /// [`Span::new`] from a reader's timing, either of which a trace may lack: a missing one is
    /// 0 and flagged (`NO_START`, `NO_DURATION`), so analysis knows it was not measured. Every
    /// reader builds its spans here, so the rule is one.
    pub fn timed(
        id: SpanId,
        service: Sym,
        operation: Sym,
        start: Option<i64>,
        duration: Option<i64>,
    ) -> Span {
        let mut span = Span::new(
            id,
            service,
            operation,
            start.unwrap_or(0),
            duration.unwrap_or(0),
        );
        if start.is_none() {
            span.flags |= flags::NO_START;
        }
        if duration.is_none() {
            span.flags |= flags::NO_DURATION;
        }
        span
    }

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
