//! The per-file driver: probes what a unit is, walks the document's top level, takes Jaeger trace
//! objects by the fast readers when it can, and groups loose spans by trace id.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::scan::{Scanner, CHUNK};
use super::{FileStats, Format, ReadError};
use crate::format::{self, FormatError, RawTrace};
use crate::limits::Limits;
use crate::model::{FxHashMap, Interner, Span, WarningKind, Warnings};

mod limits;

pub(super) fn read_stream_with(
    r: Box<dyn Read>,
    path: &Path,
    interner: &mut Interner,
    warnings: &mut Warnings,
    on_trace: &mut dyn FnMut(RawTrace, &mut Interner, &mut Warnings),
    fast: FastPaths,
    limits: Limits,
) -> Result<FileStats, ReadError> {
    let mut d = Driver {
        sc: Scanner::new(r, limits),
        limits,
        path,
        interner,
        warnings,
        on_trace,
        stats: FileStats::default(),
        pending: FxHashMap::default(),
        pending_order: VecDeque::new(),
        units: 0,
        failed_first: None,
        fast,
        last_spans: 0,
        cut_ids: 0,
    };
    d.run()?;
    d.flush_pending();
    d.stats.bytes = d.sc.consumed_total();
    Ok(d.stats)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    /// A whole Jaeger trace (or envelope / chunk) parsed by the Jaeger parser; self-contained.
    JaegerWhole,
    /// Loose Jaeger spans or chunks.
    JaegerLoose,
    /// A Zipkin span array holding whole traces.
    ZipkinWhole,
    /// Loose Zipkin spans.
    ZipkinLoose,
    /// OTLP document or resourceSpans element; loose.
    Otlp,
}

impl UnitKind {
    fn format(self) -> Format {
        match self {
            UnitKind::JaegerWhole | UnitKind::JaegerLoose => Format::Jaeger,
            UnitKind::ZipkinWhole | UnitKind::ZipkinLoose => Format::Zipkin,
            UnitKind::Otlp => Format::Otlp,
        }
    }
    fn loose(self) -> bool {
        matches!(
            self,
            UnitKind::JaegerLoose | UnitKind::ZipkinLoose | UnitKind::Otlp
        )
    }
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Probe {
    data: Option<IgnoredAny>,
    spans: Option<IgnoredAny>,
    processes: Option<IgnoredAny>,
    processMap: Option<IgnoredAny>,
    traceID: Option<IgnoredAny>,
    spanID: Option<IgnoredAny>,
    operationName: Option<IgnoredAny>,
    resourceSpans: Option<IgnoredAny>,
    scopeSpans: Option<IgnoredAny>,
    instrumentationLibrarySpans: Option<IgnoredAny>,
    result: Option<IgnoredAny>,
    traceId: Option<IgnoredAny>,
    spanId: Option<IgnoredAny>,
    id: Option<IgnoredAny>,
    localEndpoint: Option<IgnoredAny>,
}

fn probe(bytes: &[u8]) -> Result<UnitKind, String> {
    let p: Probe = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if p.resourceSpans.is_some()
        || p.scopeSpans.is_some()
        || p.instrumentationLibrarySpans.is_some()
    {
        return Ok(UnitKind::Otlp);
    }
    if p.data.is_some() || p.processes.is_some() || p.processMap.is_some() {
        return Ok(UnitKind::JaegerWhole);
    }
    if p.spans.is_some() {
        return Ok(if p.traceID.is_some() || p.traceId.is_some() {
            UnitKind::JaegerWhole
        } else {
            UnitKind::JaegerLoose
        });
    }
    if p.result.is_some() {
        return Ok(UnitKind::JaegerLoose);
    }
    if p.spanID.is_some()
        || p.operationName.is_some()
        || (p.spanId.is_some() && p.traceId.is_some() && p.id.is_none())
    {
        return Ok(UnitKind::JaegerLoose);
    }
    if p.traceId.is_some() && p.id.is_some() || p.localEndpoint.is_some() {
        return Ok(UnitKind::ZipkinLoose);
    }
    Err("a JSON object with none of the fields of a Jaeger, Zipkin or OTLP trace".into())
}

struct Driver<'a> {
    sc: Scanner,
    limits: Limits,
    path: &'a Path,
    interner: &'a mut Interner,
    warnings: &'a mut Warnings,
    on_trace: &'a mut dyn FnMut(RawTrace, &mut Interner, &mut Warnings),
    stats: FileStats,
    pending: FxHashMap<String, Vec<Span>>,
    pending_order: VecDeque<String>,
    units: u64,
    failed_first: Option<String>,
    /// Which fast readers may take Jaeger trace objects (tests compare them with none).
    fast: FastPaths,
    /// Spans in the last trace object read fast: room to make for the next one.
    last_spans: usize,
    /// Trace ids cut to [`MAX_NAME`](crate::limits::MAX_NAME) so far (names are counted by the interner).
    cut_ids: u64,
}

/// What the fast readers made of a Jaeger trace object.
enum Fast {
    /// Read and handed on.
    Taken,
    /// Not theirs: the general parser's.
    General,
    /// Larger than they buffer ([`Limits::fast`]): the scanner's, then theirs again.
    Large,
}

/// The readers tried, in order, on a Jaeger trace object before the general one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FastPaths {
    /// The general parser only.
    #[cfg_attr(not(test), allow(dead_code))]
    None,
    /// The serde fast path, then the general parser.
    #[cfg_attr(not(test), allow(dead_code))]
    Serde,
    /// The hand-written reader, the serde fast path, then the general parser.
    All,
}

impl Driver<'_> {
    fn not_a_trace(&self, reason: impl Into<String>) -> ReadError {
        ReadError::NotATrace {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn io(&self, e: io::Error) -> ReadError {
        ReadError::Io {
            path: self.path.to_path_buf(),
            source: e,
        }
    }

    fn run(&mut self) -> Result<(), ReadError> {
        loop {
            let b = self.sc.peek_nonws().map_err(|e| self.io(e))?;
            match b {
                None => break,
                Some(b'{') => self.top_object()?,
                Some(b'[') => self.top_array()?,
                Some(b',') => {
                    self.sc.bump(); // tolerate `{..},{..}` concatenations
                }
                Some(c) => {
                    return Err(self.not_a_trace(format!(
                        "expected a JSON object or array, found {:?} at byte {}",
                        char::from(c),
                        self.sc.consumed_total()
                    )))
                }
            }
        }
        if self.units == 0 {
            return Err(self.not_a_trace("the file is empty"));
        }
        Ok(())
    }

    fn syntax(&self, what: &str) -> ReadError {
        self.not_a_trace(format!(
            "malformed JSON ({what}) near byte {}",
            self.sc.consumed_total()
        ))
    }

    fn top_object(&mut self) -> Result<(), ReadError> {
        self.sc.compact();
        let obj_start = self.sc.pos;
        self.sc.bump(); // {
        let first = self.sc.peek_nonws().map_err(|e| self.io(e))?;
        if first == Some(b'"') {
            let key = self
                .sc
                .string_value()
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.syntax("key"))?;
            let colon = self.sc.peek_nonws().map_err(|e| self.io(e))?;
            if colon != Some(b':') {
                return Err(self.syntax("expected ':'"));
            }
            self.sc.bump();
            let next = self.sc.peek_nonws().map_err(|e| self.io(e))?;
            let stream_kind = match key.as_str() {
                "data" => Some(UnitKind::JaegerWhole),
                "resourceSpans" | "resource_spans" => Some(UnitKind::Otlp),
                _ => None,
            };
            if let (Some(kind), Some(b'[')) = (stream_kind, next) {
                self.units += 1;
                self.stats.format = Some(kind.format());
                self.sc.bump(); // [
                self.elements(Some(kind))?;
                // rest of the object: skip remaining members
                loop {
                    match self.sc.peek_nonws().map_err(|e| self.io(e))? {
                        Some(b',') => {
                            self.sc.bump();
                            self.sc.peek_nonws().map_err(|e| self.io(e))?;
                            self.sc
                                .string_value()
                                .map_err(|e| self.io(e))?
                                .ok_or_else(|| self.syntax("key"))?;
                            if self.sc.peek_nonws().map_err(|e| self.io(e))? != Some(b':') {
                                return Err(self.syntax("expected ':'"));
                            }
                            self.sc.bump();
                            self.sc.peek_nonws().map_err(|e| self.io(e))?;
                            self.sc
                                .value(false)
                                .map_err(|e| self.io(e))?
                                .ok_or_else(|| self.syntax("value"))?;
                        }
                        Some(b'}') => {
                            self.sc.bump();
                            return Ok(());
                        }
                        _ => return Err(self.syntax("expected ',' or '}'")),
                    }
                }
            }
        }
        // whole-object unit: rewind and take the object in one piece
        self.sc.pos = obj_start;
        let seen = self.cuts();
        let range = self
            .sc
            .value(true)
            .map_err(|e| self.io(e))?
            .ok_or_else(|| self.syntax("object"))?;
        if self.skipped_oversize(seen.at) {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.sc.buf);
        let res = match probe(&buf[range.clone()]) {
            Ok(kind) => {
                self.units += 1;
                self.stats.format.get_or_insert(kind.format());
                self.unit(&buf[range], kind, true)
            }
            Err(r) => Err(self.not_a_trace(r)),
        };
        self.sc.buf = buf;
        self.note_cuts(seen);
        res
    }

    fn top_array(&mut self) -> Result<(), ReadError> {
        self.sc.bump(); // [
        self.units += 1;
        self.elements(None)
    }

    /// Elements of an array whose '[' was consumed, up to and including ']'.
    fn elements(&mut self, mut kind: Option<UnitKind>) -> Result<(), ReadError> {
        let mut first = true;
        loop {
            let b = self.sc.peek_nonws().map_err(|e| self.io(e))?;
            match b {
                Some(b']') => {
                    self.sc.bump();
                    return Ok(());
                }
                Some(b',') if !first => {
                    self.sc.bump();
                    continue;
                }
                None => return Err(self.syntax("unterminated array")),
                _ => {}
            }
            self.sc.compact();
            let is_first = first;
            let mut large = false;
            if kind == Some(UnitKind::JaegerWhole) && self.fast != FastPaths::None {
                match self.jaeger_fast()? {
                    Fast::Taken => {
                        first = false;
                        continue;
                    }
                    Fast::Large => large = true,
                    Fast::General => {}
                }
            }
            let seen = self.cuts();
            let range = self
                .sc
                .value(true)
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.syntax("array element"))?;
            first = false;
            if self.skipped_oversize(seen.at) {
                continue;
            }
            let bytes_ref = &self.sc.buf[range.clone()];
            let k = match kind {
                Some(k) => k,
                None => {
                    let k = match bytes_ref.first() {
                        Some(b'[') => UnitKind::ZipkinWhole,
                        Some(b'{') => probe(bytes_ref).map_err(|r| self.not_a_trace(r))?,
                        _ => {
                            return Err(self
                                .not_a_trace("an array of something other than spans or traces"))
                        }
                    };
                    kind = Some(k);
                    self.stats.format.get_or_insert(k.format());
                    k
                }
            };
            // lend the buffer to the parser without copying the unit
            let buf = std::mem::take(&mut self.sc.buf);
            let res = if large && self.jaeger_whole(&buf[range.clone()]) {
                Ok(())
            } else {
                self.unit(&buf[range], k, is_first)
            };
            self.sc.buf = buf;
            res?;
            self.note_cuts(seen);
        }
    }

    /// The fast path for one Jaeger trace object at the scanner's position: parsed in one pass
    /// straight from the buffer (no scan for its end first), reading more input while it is
    /// incomplete. `false` (nothing consumed, nothing counted) for anything else, which the
    /// general path then handles with its own warnings and errors.
    fn jaeger_fast(&mut self) -> Result<Fast, ReadError> {
        use format::jaeger::fast;
        let seen = self.cuts();
        enum Step {
            Done(Vec<RawTrace>, usize),
            More,
            General,
        }
        loop {
            let avail = self.sc.buf.len() - self.sc.pos;
            let buf = std::mem::take(&mut self.sc.buf);
            let unit = &buf[self.sc.pos..];
            let mut out = Vec::new();
            // the hand-written reader first, then the serde one for what it leaves
            let lexed = match self.fast {
                FastPaths::All => fast::lex::trace(unit, self.last_spans.min(1 << 16)),
                _ => Err(fast::lex::Stop::Bail),
            };
            let step = match lexed {
                Ok((t, used)) => {
                    fast::convert(t, self.interner, self.warnings, &mut out);
                    Step::Done(out, used)
                }
                Err(fast::lex::Stop::Eof) if !self.sc.eof => Step::More,
                Err(_) => {
                    let mut it =
                        serde_json::Deserializer::from_slice(unit).into_iter::<fast::FTrace<'_>>();
                    match it.next() {
                        Some(Ok(t)) => {
                            fast::convert(t, self.interner, self.warnings, &mut out);
                            Step::Done(out, it.byte_offset())
                        }
                        Some(Err(e)) if e.is_eof() && !self.sc.eof => Step::More,
                        _ => Step::General,
                    }
                }
            };
            self.sc.buf = buf;
            match step {
                Step::Done(out, used) => {
                    self.sc.pos += used;
                    self.last_spans = out.iter().map(|t| t.spans.len()).sum();
                    for t in out {
                        self.count_cut_id(&t);
                        self.emit(t, Format::Jaeger);
                    }
                    self.note_cuts(seen);
                    return Ok(Fast::Taken);
                }
                Step::General => return Ok(Fast::General),
                // the scanner reads the rest, cutting long strings and skipping a huge unit
                Step::More if avail > self.limits.fast => return Ok(Fast::Large),
                Step::More => {
                    // incomplete: at least double what is buffered, so a large trace is
                    // re-parsed a bounded number of times
                    let want = self.sc.buf.len() + avail.max(CHUNK);
                    while self.sc.buf.len() < want {
                        if !self.sc.fill().map_err(|e| self.io(e))? {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn unit(&mut self, bytes: &[u8], kind: UnitKind, first: bool) -> Result<(), ReadError> {
        let parsed: Result<Vec<RawTrace>, FormatError> = match kind {
            UnitKind::JaegerWhole | UnitKind::JaegerLoose => {
                format::jaeger::parse(bytes, self.interner, self.warnings)
            }
            UnitKind::ZipkinWhole | UnitKind::ZipkinLoose => {
                format::zipkin::parse(bytes, self.interner, self.warnings)
            }
            UnitKind::Otlp => format::otlp::parse(bytes, self.interner, self.warnings),
        };
        let traces = match parsed {
            Ok(t) => t,
            Err(e) => {
                if first && self.stats.traces == 0 && self.pending.is_empty() {
                    self.failed_first = Some(e.to_string());
                    return Err(self.not_a_trace(e.to_string()));
                }
                self.warnings.add_with(WarningKind::MalformedSpan, || {
                    format!("{}: {e}", self.path.display())
                });
                return Ok(());
            }
        };
        for mut t in traces {
            self.count_cut_id(&t);
            if kind.loose() {
                let held = self.pending.get(&t.trace_id).map_or(0, Vec::len);
                self.cap_spans(&t.trace_id, held, &mut t.spans);
                match self.pending.get_mut(&t.trace_id) {
                    Some(v) => v.extend(t.spans),
                    None => {
                        self.pending_order.push_back(t.trace_id.clone());
                        self.pending.insert(t.trace_id, t.spans);
                    }
                }
            } else {
                self.emit(t, kind.format());
            }
        }
        Ok(())
    }

    fn emit(&mut self, mut t: RawTrace, _format: Format) {
        self.cap_spans(&t.trace_id, 0, &mut t.spans);
        self.stats.traces += 1;
        self.stats.spans += t.spans.len() as u64;
        (self.on_trace)(t, self.interner, self.warnings);
    }

    fn flush_pending(&mut self) {
        let zipkin = self.stats.format == Some(Format::Zipkin);
        while let Some(tid) = self.pending_order.pop_front() {
            if let Some(mut spans) = self.pending.remove(&tid) {
                if zipkin {
                    spans = format::zipkin::merge_fragments(spans, self.warnings);
                }
                let f = self.stats.format.unwrap_or(Format::Jaeger);
                self.emit(
                    RawTrace {
                        trace_id: tid,
                        spans,
                    },
                    f,
                );
            }
        }
    }
}
