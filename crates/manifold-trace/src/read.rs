//! Reading trace files: files and directories, plain or gzip, any supported format, streamed.
//!
//! The only module with I/O. A small scanner walks the file's bytes and cuts out one unit at a
//! time — one element of `{"data":[…]}` or `{"resourceSpans":[…]}`, one element of a top-level
//! array, one line of NDJSON — and hands it to the format parser, so memory holds the largest
//! unit, not the file. Units that are whole traces (Jaeger trace objects, Zipkin arrays of one
//! trace) are finished at once; spans that arrive loose (OTLP, Zipkin or Jaeger span streams) are
//! grouped by trace id until the end of the file, as a trace may be spread across it.
//!
//! Jaeger trace objects in an array (`{"data":[…]}`, the common export) skip the scan: they are
//! parsed straight from the buffer in one pass — by a hand-written reader for the plain shape,
//! else by a serde reader of the same shape (`format::jaeger::fast`) — reading more input while
//! the object is incomplete. Whatever those two do not take (another shape, escapes, a syntax
//! error) goes the general way above, so every warning and error is what it was.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::format::{self, FormatError, RawTrace};
use crate::model::{FxHashMap, Interner, Span, WarningKind, Warnings};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read (io).
    #[error("io: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is readable but is not a trace in any supported format (input).
    #[error("input: {path} is not a trace file: {reason}")]
    NotATrace {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The format a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Jaeger UI / query JSON or api_v2 protobuf-JSON.
    Jaeger,
    /// Zipkin v2 JSON.
    Zipkin,
    /// OTLP/JSON (also Jaeger api_v3).
    Otlp,
}

/// What one file contributed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileStats {
    /// Bytes read (after decompression).
    pub bytes: u64,
    /// Traces handed on.
    pub traces: u64,
    /// Spans handed on.
    pub spans: u64,
    /// The detected format (None for an empty file list).
    pub format: Option<Format>,
}

/// Expand arguments into trace files: files as given, directories walked (sorted) for
/// `.json`, `.ndjson`, `.jsonl` and their `.gz` forms.
pub fn expand_paths(args: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|e| ReadError::Io {
            path: a.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            let mut stack = vec![a.clone()];
            let mut found = Vec::new();
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d).map_err(|e| ReadError::Io {
                    path: d.clone(),
                    source: e,
                })?;
                for entry in rd {
                    let entry = entry.map_err(|e| ReadError::Io {
                        path: d.clone(),
                        source: e,
                    })?;
                    let p = entry.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if is_trace_name(&p) {
                        found.push(p);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

fn is_trace_name(p: &Path) -> bool {
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".json") || name.ends_with(".ndjson") || name.ends_with(".jsonl")
}

/// Open a file, transparently gunzipping (by magic bytes, not by name).
pub fn open(path: &Path) -> Result<Box<dyn Read>, ReadError> {
    let io_err = |e| ReadError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(f);
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Read one file, calling `on_trace` for every trace found (spans unassembled).
pub fn read_file(
    path: &Path,
    interner: &mut Interner,
    warnings: &mut Warnings,
    on_trace: &mut dyn FnMut(RawTrace, &mut Interner, &mut Warnings),
) -> Result<FileStats, ReadError> {
    let r = open(path)?;
    read_stream(r, path, interner, warnings, on_trace)
}

/// Read one file straight into an analysis, one trace at a time (memory holds one unit).
pub fn analyze_file(
    an: &mut crate::analysis::Analyzer,
    path: &Path,
) -> Result<FileStats, ReadError> {
    let mut interner = std::mem::take(&mut an.interner);
    let mut warnings = std::mem::take(&mut an.warnings);
    let res = read_file(path, &mut interner, &mut warnings, &mut |t, i, w| {
        std::mem::swap(&mut an.interner, i);
        std::mem::swap(&mut an.warnings, w);
        an.add_raw(t);
        std::mem::swap(&mut an.interner, i);
        std::mem::swap(&mut an.warnings, w);
    });
    an.interner = interner;
    an.warnings = warnings;
    res
}

/// Read a stream (standard input for `manifold analyze -`) straight into an analysis, one
/// trace at a time; `name` is only used in errors.
pub fn analyze_stream(
    an: &mut crate::analysis::Analyzer,
    r: Box<dyn Read>,
    name: &Path,
) -> Result<FileStats, ReadError> {
    let mut interner = std::mem::take(&mut an.interner);
    let mut warnings = std::mem::take(&mut an.warnings);
    let res = read_stream(r, name, &mut interner, &mut warnings, &mut |t, i, w| {
        std::mem::swap(&mut an.interner, i);
        std::mem::swap(&mut an.warnings, w);
        an.add_raw(t);
        std::mem::swap(&mut an.interner, i);
        std::mem::swap(&mut an.warnings, w);
    });
    an.interner = interner;
    an.warnings = warnings;
    res
}

/// Read any stream as a trace file named `path` (the name is only used in errors).
pub fn read_stream(
    r: Box<dyn Read>,
    path: &Path,
    interner: &mut Interner,
    warnings: &mut Warnings,
    on_trace: &mut dyn FnMut(RawTrace, &mut Interner, &mut Warnings),
) -> Result<FileStats, ReadError> {
    read_stream_with(r, path, interner, warnings, on_trace, FastPaths::All)
}

fn read_stream_with(
    r: Box<dyn Read>,
    path: &Path,
    interner: &mut Interner,
    warnings: &mut Warnings,
    on_trace: &mut dyn FnMut(RawTrace, &mut Interner, &mut Warnings),
    fast: FastPaths,
) -> Result<FileStats, ReadError> {
    let mut d = Driver {
        sc: Scanner::new(r),
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
    };
    d.run()?;
    d.flush_pending();
    d.stats.bytes = d.sc.consumed_total();
    Ok(d.stats)
}

/// Parse a whole in-memory document (any format), for tests and fuzzing.
pub fn read_bytes(
    bytes: &[u8],
    interner: &mut Interner,
    warnings: &mut Warnings,
) -> Result<Vec<RawTrace>, ReadError> {
    let mut out = Vec::new();
    let mut cb = |t: RawTrace, _: &mut Interner, _: &mut Warnings| out.push(t);
    read_stream(
        Box::new(io::Cursor::new(bytes.to_vec())),
        Path::new("<memory>"),
        interner,
        warnings,
        &mut cb,
    )?;
    Ok(out)
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
}

/// The readers tried, in order, on a Jaeger trace object before the general one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastPaths {
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
        let range = self
            .sc
            .value(true)
            .map_err(|e| self.io(e))?
            .ok_or_else(|| self.syntax("object"))?;
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
            if kind == Some(UnitKind::JaegerWhole)
                && self.fast != FastPaths::None
                && self.jaeger_fast()?
            {
                first = false;
                continue;
            }
            let range = self
                .sc
                .value(true)
                .map_err(|e| self.io(e))?
                .ok_or_else(|| self.syntax("array element"))?;
            first = false;
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
            let res = self.unit(&buf[range], k, is_first);
            self.sc.buf = buf;
            res?;
        }
    }

    /// The fast path for one Jaeger trace object at the scanner's position: parsed in one pass
    /// straight from the buffer (no scan for its end first), reading more input while it is
    /// incomplete. `false` (nothing consumed, nothing counted) for anything else, which the
    /// general path then handles with its own warnings and errors.
    fn jaeger_fast(&mut self) -> Result<bool, ReadError> {
        use format::jaeger::fast;
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
                        self.emit(t, Format::Jaeger);
                    }
                    return Ok(true);
                }
                Step::General => return Ok(false),
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
        for t in traces {
            if kind.loose() {
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

    fn emit(&mut self, t: RawTrace, _format: Format) {
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

// ---------------------------------------------------------------------------------------------

const CHUNK: usize = 256 * 1024;
/// Consumed bytes are dropped from the buffer once this many have accumulated: moving the tail
/// (at most one read) that rarely costs ~3% of a copy, and memory stays at one unit plus this.
const COMPACT_AT: usize = 8 * 1024 * 1024;

/// A byte buffer over a reader that can cut out complete JSON values.
struct Scanner {
    r: Box<dyn Read>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    dropped: u64,
}

impl Scanner {
    fn new(r: Box<dyn Read>) -> Scanner {
        Scanner {
            r,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            eof: false,
            dropped: 0,
        }
    }

    fn consumed_total(&self) -> u64 {
        self.dropped + self.pos as u64
    }

    /// Drop consumed bytes once they are worth moving.
    fn compact(&mut self) {
        if self.pos >= COMPACT_AT || (self.pos > 0 && self.pos == self.buf.len()) {
            self.buf.drain(..self.pos);
            self.dropped += self.pos as u64;
            self.pos = 0;
        }
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        // `read_to_end` on a bounded reader appends without zeroing the new space first
        let len = self.buf.len();
        self.buf.reserve(CHUNK);
        match (&mut self.r).take(CHUNK as u64).read_to_end(&mut self.buf) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(e) => {
                self.buf.truncate(len);
                Err(e)
            }
        }
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// Skip whitespace (and a UTF-8 BOM) and peek at the next byte.
    fn peek_nonws(&mut self) -> io::Result<Option<u8>> {
        loop {
            while self.pos < self.buf.len() {
                let b = self.buf[self.pos];
                if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
                    self.pos += 1;
                } else if b == 0xEF
                    && self.buf.get(self.pos + 1) == Some(&0xBB)
                    && self.buf.get(self.pos + 2) == Some(&0xBF)
                {
                    self.pos += 3;
                } else {
                    return Ok(Some(b));
                }
            }
            if self.pos >= COMPACT_AT {
                self.compact();
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Read a JSON string at `pos` and decode it.
    fn string_value(&mut self) -> io::Result<Option<String>> {
        let Some(r) = self.value(false)? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<String>(&self.buf[r]).ok())
    }

    /// Scan the complete JSON value starting at `pos` (after whitespace); returns its range.
    /// `None` on a syntax error or early end of input. The range stays valid until the next
    /// `compact`.
    fn value(&mut self, _unit: bool) -> io::Result<Option<std::ops::Range<usize>>> {
        let start = self.pos;
        let mut i = self.pos;
        let mut depth: usize = 0;
        let mut in_str = false;
        let mut esc = false;
        let first = match self.byte_at(i)? {
            Some(b) => b,
            None => return Ok(None),
        };
        if !(first == b'{' || first == b'[' || first == b'"') {
            // scalar: up to a delimiter
            loop {
                match self.byte_at(i)? {
                    Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') | None => break,
                    Some(_) => i += 1,
                }
            }
            self.pos = i;
            return Ok(if i > start { Some(start..i) } else { None });
        }
        loop {
            if i >= self.buf.len() && !self.fill()? {
                return Ok(None);
            }
            let buf = &self.buf;
            let end = buf.len();
            while i < end {
                if in_str {
                    if esc {
                        esc = false;
                        i += 1;
                        continue;
                    }
                    // jump to the next quote or backslash
                    match memchr::memchr2(b'"', b'\\', &buf[i..end]) {
                        None => {
                            i = end;
                            continue;
                        }
                        Some(k) => {
                            i += k;
                            let b = buf[i];
                            i += 1;
                            if b == b'\\' {
                                esc = true;
                            } else {
                                in_str = false;
                                if depth == 0 {
                                    self.pos = i;
                                    return Ok(Some(start..i));
                                }
                            }
                            continue;
                        }
                    }
                }
                let b = buf[i];
                i += 1;
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        if depth == 0 {
                            return Ok(None);
                        }
                        depth -= 1;
                        if depth == 0 {
                            self.pos = i;
                            return Ok(Some(start..i));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn byte_at(&mut self, i: usize) -> io::Result<Option<u8>> {
        while i >= self.buf.len() {
            if !self.fill()? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Vec<RawTrace>, ReadError> {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        read_bytes(s.as_bytes(), &mut i, &mut w)
    }

    #[test]
    fn shapes() {
        let span = r#"{"traceID":"1","spanID":"a","operationName":"x","references":[],"startTime":1,"duration":2,"processID":"p"}"#;
        let trace = format!(
            r#"{{"traceID":"1","spans":[{span}],"processes":{{"p":{{"serviceName":"s"}}}}}}"#
        );
        assert_eq!(
            read(&format!(r#"{{"data":[{trace},{trace}],"total":0}}"#))
                .expect("data")
                .len(),
            2
        );
        assert_eq!(read(&trace).expect("single").len(), 1);
        assert_eq!(read(&format!("[{trace}]")).expect("array").len(), 1);
        assert_eq!(read(&format!("{span}\n{span}\n")).expect("ndjson").len(), 1);
        let z = r#"{"traceId":"1","id":"2","name":"a","timestamp":1,"duration":1,"localEndpoint":{"serviceName":"s"}}"#;
        assert_eq!(read(&format!("[{z}]")).expect("zipkin").len(), 1);
        assert_eq!(
            read(&format!("[[{z}],[{z}]]"))
                .expect("zipkin traces")
                .len(),
            2
        );
    }

    #[test]
    fn otlp_streams_and_api_v3() {
        let rs = r#"{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"a","startTimeUnixNano":"1","endTimeUnixNano":"9"}]}]}"#;
        let doc = format!(r#"{{"resourceSpans":[{rs},{rs}]}}"#);
        let t = read(&format!("{doc}\n{doc}\n")).expect("ndjson otlp");
        assert_eq!(t.len(), 1, "one trace id across lines");
        assert_eq!(t[0].spans.len(), 4);
        let v3 = format!(r#"{{"result":{{"resourceSpans":[{rs}]}}}}"#);
        assert_eq!(read(&v3).expect("api_v3").len(), 1);
    }

    /// Everything a reader produced, with symbols resolved (interners may number names in a
    /// different order), for comparing readers.
    fn outcome(bytes: &[u8], fast: FastPaths, chunk_reads: bool) -> String {
        let mut i = Interner::new();
        let mut w = Warnings::default();
        let mut traces = Vec::new();
        let r: Box<dyn Read> = if chunk_reads {
            // a reader that hands out a few bytes at a time: units straddle every refill
            Box::new(Dribble(io::Cursor::new(bytes.to_vec())))
        } else {
            Box::new(io::Cursor::new(bytes.to_vec()))
        };
        let res = read_stream_with(
            r,
            Path::new("<memory>"),
            &mut i,
            &mut w,
            &mut |t, _, _| traces.push(t),
            fast,
        );
        let mut out = format!("{:?}\n", res.map_err(|e| e.to_string()));
        for t in &traces {
            out.push_str(&format!("trace {}\n", t.trace_id));
            for s in &t.spans {
                out.push_str(&format!(
                    "  {} <- {:?} {:?} {}/{} {}+{} {:?} {} h={} m={} p={}\n",
                    s.id.render(&i),
                    s.parent_id.map(|p| p.render(&i)),
                    s.link,
                    i.name(s.service),
                    i.name(s.operation),
                    s.start,
                    s.duration,
                    s.kind,
                    s.flags,
                    i.name(s.host),
                    i.name(s.http_method),
                    i.name(s.http_path),
                ));
            }
        }
        out.push_str(&format!("{:?}", w.nonzero()));
        out
    }

    struct Dribble(io::Cursor<Vec<u8>>);

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.read(&mut buf[..n])
        }
    }

    fn same_with_and_without_fast_paths(doc: &[u8]) {
        let general = outcome(doc, FastPaths::None, false);
        assert_eq!(
            outcome(doc, FastPaths::Serde, false),
            general,
            "serde fast path"
        );
        assert_eq!(
            outcome(doc, FastPaths::All, false),
            general,
            "all fast paths"
        );
        assert_eq!(
            outcome(doc, FastPaths::All, true),
            general,
            "all, small reads"
        );
    }

    fn jaeger_samples() -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/traces");
        let mut docs = vec![crate::synth::checkout_file(3, 9).into_bytes()];
        for name in [
            "jaeger-ui__TraceStatistics-testTrace__jaeger-json.json",
            "jaeger__uimodel-fixture-ui_01__jaeger-ui-json.json",
        ] {
            if let Ok(b) = std::fs::read(dir.join(name)) {
                // the hand-written reader takes these real traces itself (not only its fallbacks)
                assert!(
                    format::jaeger::fast::lex::trace(&b, 0).is_ok(),
                    "{name} is read fast"
                );
                docs.push(b);
                let mut env = b"{\"data\":[".to_vec();
                env.extend_from_slice(docs.last().map_or(&[][..], |d| &d[..]));
                env.extend_from_slice(b"]}");
                docs.push(env);
            }
        }
        docs
    }

    #[test]
    fn fast_paths_read_exactly_what_the_general_parser_reads() {
        for doc in jaeger_samples() {
            same_with_and_without_fast_paths(&doc);
        }
        let trace = |extra: &str, tag: &str| {
            format!(
                r#"{{"data":[{{"traceID":"00ff","spans":[{{"traceID":"ff","spanID":"a","operationName":"GET /x","references":[{{"refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c"}},{{"refType":"CHILD_OF","traceID":"ee","spanID":"d"}}],"startTime":1,"duration":2,"tags":[{{"key":"http.method","type":"string","value":"post"}},{{"key":"http.url","value":"http://h/p?q=1"}},{{"key":"error","value":true}},{{"key":"n","value":[1,{{"a":null}}]}}{tag}],"logs":[{{"timestamp":3,"fields":[{{"key":"event","value":"error"}}]}}],"processID":"p"{extra}}}],"processes":{{"p":{{"serviceName":"s","tags":[{{"key":"hostname","value":"h1"}}]}},"p":{{"serviceName":"t"}}}},"warnings":null}}]}}"#
            )
        };
        for extra in [
            "",
            r#","flags":1.5e3"#,
            r#","startTime":3"#,
            r#","x":"a"b""#,
            r#","operationName":null,"y":-0"#,
            r#","process":{"serviceName":"inline"}"#,
            r#","z":{"deep":[[[[[]]]]]}"#,
        ] {
            same_with_and_without_fast_paths(trace(extra, "").as_bytes());
        }
        for tag in [
            r#",{"key":"http.status_code","value":500.0}"#,
            r#",{"key":"error","value":-0}"#,
            r#",{"key":"error","value":0.0}"#,
            r#",{"key":"http.status_code","value":1e400}"#,
            r#",{"key":"http.status_code","value":18446744073709551616}"#,
            r#",{"key":"http.status_code","value":-9223372036854775808}"#,
            r#",{"key":"x","value":1E+2,"type":"float64"}"#,
            r#",{"key":"http.url","value":"http://h/é"}"#,
            r#",{"key":"http.url","value":"http://h/é"}"#,
            r#",{"value":"GET","key":"http.method"}"#,
            r#",{"key":"db.statement","value":"insert into \"t\" values ('\u00e9')"}"#,
            r#",{"key":"http.route","value":"/\ud83d\ude00"}"#,
            r#",{"key":"http.route","value":"/\ud800"}"#,
            r#",{"key":"http.route","value":"/\x"}"#,
            r#",{"key":"http.route","type":"a\"b\\","value":"/"}"#,
            r#",{"key":"http.route","type":"\ud800","value":"/"}"#,
        ] {
            same_with_and_without_fast_paths(trace("", tag).as_bytes());
            let dur = tag.replace("\"key\"", "\"k\"").replace("value", "v");
            same_with_and_without_fast_paths(
                trace(&format!(",\"q\":[{}]", &dur[1..]), "").as_bytes(),
            );
        }
        // keys out of the usual order, other spellings, repeats under another spelling (the
        // hand-written reader guesses the next key; a wrong guess must change nothing)
        for (from, to) in [
            (
                r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c""#,
                r#""spanId":"c","ref_type":"FOLLOWS_FROM","traceId":"ff""#,
            ),
            (
                r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c""#,
                r#""refType":"FOLLOWS_FROM","traceID":"ff","spanID":"c","traceId":"ff""#,
            ),
            (
                r#""traceID":"ff","spanID":"a","operationName":"GET /x""#,
                r#""operationName":"GET /x","spanId":"a","flags":1,"traceId":"ff""#,
            ),
            (
                r#""traceID":"ff","spanID":"a","operationName":"GET /x""#,
                r#""traceID":"ff","spanID":"a","spanId":"b","operationName":"GET /x""#,
            ),
            (
                r#""key":"http.method","type":"string""#,
                r#""type":"string","key":"http.method","type":1"#,
            ),
            (r#""processID":"p""#, r#""processID" : "p""#),
            (r#""traceID":"00ff""#, r#""traceID":"ff","traceID":"ff""#),
        ] {
            let doc = trace("", "").replace(from, to);
            assert_ne!(doc, trace("", ""), "{to}");
            same_with_and_without_fast_paths(doc.as_bytes());
        }
        for time in [
            "1.5",
            "-0",
            "1e400",
            "1e3",
            "\"1.5\"",
            "\"2017-01-26T16:46:31Z\"",
            "true",
            "[]",
        ] {
            let doc = trace("", "").replace("\"startTime\":1,", &format!("\"startTime\":{time},"));
            same_with_and_without_fast_paths(doc.as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        #[test]
        fn fast_paths_agree_on_damaged_input(
            which in 0usize..8,
            at in 0usize..100_000,
            how in 0u8..4,
            byte in proptest::sample::select(vec![
                b'\\', b'"', b',', b'}', b']', b'{', b'[', b'0', b'9', b'.', b'-', b'e', b' ',
                b'n', b't', b':', 0x01, 0xC3, 0xFF, b'a',
            ]),
        ) {
            let docs = jaeger_samples();
            let mut doc = docs[which % docs.len()].clone();
            let k = at % doc.len();
            match how {
                0 => doc.truncate(k),
                1 => doc[k] = byte,
                2 => doc.insert(k, byte),
                _ => {
                    doc.remove(k);
                }
            }
            let general = outcome(&doc, FastPaths::None, false);
            proptest::prop_assert_eq!(outcome(&doc, FastPaths::Serde, false), general.clone());
            proptest::prop_assert_eq!(outcome(&doc, FastPaths::All, false), general.clone());
            proptest::prop_assert_eq!(outcome(&doc, FastPaths::All, true), general);
        }
    }

    #[test]
    fn not_a_trace_names_the_reason() {
        for bad in [
            "",
            "hello",
            r#"{"cases":[]}"#,
            "[1,2]",
            r#"{"data":[{"a":1}"#,
        ] {
            match read(bad) {
                Err(ReadError::NotATrace { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
