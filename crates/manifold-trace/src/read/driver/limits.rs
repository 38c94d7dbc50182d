//! What the driver does when a file meets the reader's limits ([`crate::limits`]): warnings
//! that name the file and the place, skipped units, capped traces, and the fast readers run on
//! a Jaeger trace object the scanner had to read.

use super::{Driver, FastPaths, Format};
use crate::format::{self, RawTrace};
use crate::limits::MAX_NAME;
use crate::model::{Span, WarningKind};

/// The limits' counts before a unit, and where it starts.
#[derive(Clone, Copy)]
pub(super) struct Cuts {
    pub(super) at: u64,
    names: u64,
    strings: u64,
    ids: u64,
}

impl Driver<'_> {
    /// What the limits had cut before a unit (compared after it by [`Driver::note_cuts`]).
    pub(super) fn cuts(&self) -> Cuts {
        Cuts {
            at: self.sc.consumed_total(),
            names: self.interner.cut(),
            strings: self.sc.cut_strings,
            ids: self.cut_ids,
        }
    }

    /// One warning for the text the limits cut in the unit that started at `before.at`, which
    /// names the file and the place.
    pub(super) fn note_cuts(&mut self, before: Cuts) {
        let names = self.interner.cut() - before.names + self.cut_ids - before.ids;
        let strings = self.sc.cut_strings - before.strings;
        if names + strings == 0 {
            return;
        }
        let path = self.path;
        let max_string = self.limits.string;
        self.warnings
            .add_n_with(WarningKind::LongTextCut, names + strings, || {
                let mut what = Vec::new();
                if strings > 0 {
                    what.push(format!("{strings} string(s) over {max_string} bytes"));
                }
                if names > 0 {
                    what.push(format!("{names} name(s) or id(s) over {MAX_NAME} bytes"));
                }
                format!(
                    "{}: in the unit at byte {}, {} kept cut",
                    path.display(),
                    before.at,
                    what.join(" and ")
                )
            });
    }

    /// True (and a warning naming the file and the place) if the value just scanned was over
    /// the unit limit and skipped.
    pub(super) fn skipped_oversize(&mut self, at: u64) -> bool {
        let Some(len) = self.sc.take_oversize() else {
            return false;
        };
        self.units += 1;
        let (path, max) = (self.path, self.limits.unit);
        self.warnings.add_with(WarningKind::UnitTooLarge, || {
            format!(
                "{}: the unit at byte {at} is {len} bytes, over the limit of {max}; skipped",
                path.display()
            )
        });
        true
    }

    /// A Jaeger trace object too large for the fast readers to buffer, now complete (and with
    /// its long strings cut): the same readers on the whole of it, `false` if they do not take
    /// it (the general parser then does, as for any other).
    pub(super) fn jaeger_whole(&mut self, unit: &[u8]) -> bool {
        use format::jaeger::fast;
        let mut out = Vec::new();
        let lexed = match self.fast {
            FastPaths::All => fast::lex::trace(unit, self.last_spans.min(1 << 16)).ok(),
            _ => None,
        };
        match lexed {
            Some((t, used)) if unit[used..].iter().all(u8::is_ascii_whitespace) => {
                fast::convert(t, self.interner, self.warnings, &mut out)
            }
            _ => match serde_json::from_slice::<fast::FTrace<'_>>(unit) {
                Ok(t) => fast::convert(t, self.interner, self.warnings, &mut out),
                Err(_) => return false,
            },
        }
        self.last_spans = out.iter().map(|t| t.spans.len()).sum();
        for t in out {
            self.count_cut_id(&t);
            self.emit(t, Format::Jaeger);
        }
        true
    }

    /// A trace id the normalization cut (it ends in the mark [`crate::limits::clip`] leaves).
    pub(super) fn count_cut_id(&mut self, t: &RawTrace) {
        if t.trace_id.len() > MAX_NAME - 4 && t.trace_id.ends_with('…') {
            self.cut_ids += 1;
        }
    }

    /// Drop the spans past the per-trace limit, given `held` spans of the trace already kept.
    pub(super) fn cap_spans(&mut self, tid: &str, held: usize, spans: &mut Vec<Span>) {
        let room = self.limits.trace_spans.saturating_sub(held);
        if spans.len() <= room {
            return;
        }
        let dropped = (spans.len() - room) as u64;
        spans.truncate(room);
        let (path, max) = (self.path, self.limits.trace_spans);
        self.warnings
            .add_n_with(WarningKind::TraceTooLarge, dropped, || {
                format!(
                    "{}: trace {tid} has more than {max} spans; the spans after them are dropped",
                    path.display()
                )
            });
    }
}
