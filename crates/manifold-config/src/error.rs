//! Config errors: every one names what is wrong and where (file, line, column).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What kind of problem a config error is, so tools can group or filter them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// TOML syntax, a wrong type or an unknown key.
    Syntax,
    /// A value that parses but is not acceptable (a bad duration, URL, method…).
    Value,
    /// A name that refers to nothing (an unknown upstream, call or path parameter).
    UnknownName,
    /// The same name declared twice.
    Duplicate,
    /// Calls that depend on each other in a circle.
    Cycle,
    /// Two routes that match the same requests.
    RouteConflict,
    /// A feature that is recognised but not available in this build yet.
    Unsupported,
}

/// One config problem with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The kind of problem.
    pub kind: ErrorKind,
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the offending key or name.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// Something valid but probably not meant, with its location: `manifold check` prints it and
/// still succeeds (a warning never stops a config from loading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What looks wrong, and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one config file. Validation keeps going after the first error where it
/// can, so a user fixes several at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.errors.len() > 1 {
            write!(f, "\n{} errors", self.errors.len())?;
        }
        Ok(())
    }
}

/// Collects errors by byte span while a file is compiled, then resolves spans to lines.
#[derive(Debug)]
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    source: &'a str,
    pending: Vec<(ErrorKind, Range<usize>, String)>,
    warnings: Vec<(Range<usize>, String)>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Diagnostics {
            file,
            source,
            pending: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Note something valid but probably not meant (it does not fail the compile).
    pub(crate) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.warnings.push((span, message.into()));
    }

    /// The warnings so far, resolved to lines, in file order.
    pub(crate) fn take_warnings(&mut self) -> Vec<ConfigWarning> {
        let mut out: Vec<ConfigWarning> = std::mem::take(&mut self.warnings)
            .into_iter()
            .map(|(span, message)| {
                let (line, column) = line_col(self.source, span.start);
                ConfigWarning {
                    file: self.file.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })
            .collect();
        out.sort_by_key(|w| (w.line, w.column));
        out.dedup();
        out
    }

    pub(crate) fn push(&mut self, kind: ErrorKind, span: Range<usize>, message: impl Into<String>) {
        self.pending.push((kind, span, message.into()));
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn finish(self) -> ConfigErrors {
        let mut errors: Vec<ConfigError> = self
            .pending
            .into_iter()
            .map(|(kind, span, message)| {
                let (line, column) = line_col(self.source, span.start);
                ConfigError {
                    kind,
                    file: self.file.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        ConfigErrors { errors }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 999), (3, 1));
    }
}
