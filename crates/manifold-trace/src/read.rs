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

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::format::RawTrace;
use crate::model::{Interner, Warnings};

mod driver;
mod scan;

use driver::{read_stream_with, FastPaths};

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
///
/// A walk takes regular files only (a FIFO or a device named `*.json` in a directory would
/// block the read or never end), and enters each directory once, however many symbolic links
/// lead to it: a link to a parent made the walk read every file some forty times over, until
/// the kernel refused to follow more links.
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
            let mut seen = std::collections::HashSet::new();
            while let Some(d) = stack.pop() {
                // Unresolvable (a link loop the kernel gave up on): nothing to read there.
                let Ok(real) = std::fs::canonicalize(&d) else {
                    continue;
                };
                if !seen.insert(real) {
                    continue;
                }
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
                    // Through symbolic links: a linked file or directory is walked as its target.
                    let Ok(meta) = std::fs::metadata(&p) else {
                        continue;
                    };
                    if meta.is_dir() {
                        stack.push(p);
                    } else if meta.is_file() && is_trace_name(&p) {
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
    read_stream_with(
        r,
        path,
        interner,
        warnings,
        on_trace,
        FastPaths::All,
        crate::limits::Limits::DEFAULT,
    )
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

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
