//! The document's shape: a trace object, its spans, references, tags, logs and processes.

use std::borrow::Cow;

use super::super::{FRef, FSpan, FTrace};
use super::{
    once, Stop, P, R, REF_KEYS, REF_ORDER, SAME_REF_TYPE, SAME_TRACE_ID, SPAN_KEYS, SPAN_ORDER,
    TAG_KEYS, TAG_ORDER, UNKNOWN,
};
use crate::format::jaeger::schema::{JProcess, JTag};
use crate::format::{Attrs, BStr};

impl<'de> P<'de> {
    pub(super) fn trace(&mut self, expect: usize) -> R<FTrace<'de>> {
        // room for a trace half again as large as expected: growing a list of spans (large
        // records) copies all of them, and traces of one file vary in size
        let room = (expect + expect / 2).min(1 << 16);
        let mut t = FTrace {
            trace_id: None,
            spans: Vec::with_capacity(room),
            refs: Vec::with_capacity(room),
            processes: Vec::new(),
        };
        let (mut seen, mut has_spans) = (0u32, false);
        if self.open(b'{', b'}')? {
            loop {
                match self.key()? {
                    b"traceID" | b"traceId" => {
                        once(&mut seen, 1)?;
                        t.trace_id = self.opt_str_same(SAME_TRACE_ID)?;
                    }
                    b"spans" => {
                        once(&mut seen, 2)?;
                        if !self.null()? {
                            has_spans = true;
                            if self.open(b'[', b']')? {
                                loop {
                                    self.span(&mut t.spans, &mut t.refs)?;
                                    if !self.more(b']')? {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    b"processes" => {
                        once(&mut seen, 4)?;
                        if !self.null()? && self.open(b'{', b'}')? {
                            loop {
                                let id =
                                    std::str::from_utf8(self.key()?).map_err(|_| Stop::Bail)?;
                                let p = self.process()?;
                                t.processes.push((id, p));
                                if !self.more(b'}')? {
                                    break;
                                }
                            }
                        }
                    }
                    k => self.other_key(k)?,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        if !has_spans {
            return Err(Stop::Bail);
        }
        Ok(t)
    }

    /// A key no reader here knows: fields of other Jaeger shapes bail (the general parser reads
    /// them); anything else is skipped, as the derived parsers skip unknown fields (after
    /// decoding the key as text).
    fn other_key(&mut self, k: &[u8]) -> R<()> {
        if matches!(
            k,
            b"data"
                | b"result"
                | b"processMap"
                | b"spanID"
                | b"spanId"
                | b"parentSpanID"
                | b"parentSpanId"
                | b"operationName"
                | b"references"
                | b"startTime"
                | b"duration"
                | b"tags"
                | b"logs"
                | b"processID"
                | b"processId"
                | b"process"
        ) {
            return Err(Stop::Bail);
        }
        self.unknown(k)
    }

    fn unknown(&mut self, k: &[u8]) -> R<()> {
        if !k.is_ascii() {
            std::str::from_utf8(k).map_err(|_| Stop::Bail)?;
        }
        self.skip(0)
    }

    /// One span, built in place at the end of `spans` (a span is large: moving it costs).
    fn span(&mut self, spans: &mut Vec<FSpan<'de>>, refs: &mut Vec<FRef<'de>>) -> R<()> {
        let first = u32::try_from(refs.len()).map_err(|_| Stop::Bail)?;
        spans.push(FSpan {
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            operation: None,
            refs: (first, first),
            start: None,
            duration: None,
            attrs: Attrs::default(),
            log_error: false,
            process_id: None,
            process: None,
        });
        let s = spans.last_mut().ok_or(Stop::Bail)?;
        let mut seen = 0u32;
        let mut next = 0usize;
        if self.open(b'{', b'}')? {
            loop {
                match self.known_key(SPAN_KEYS, SPAN_ORDER, &mut next)? {
                    (0, _) => {
                        once(&mut seen, 1)?;
                        s.trace_id = self.opt_str_same(SAME_TRACE_ID)?;
                    }
                    (1, _) => {
                        once(&mut seen, 2)?;
                        s.span_id = self.opt_str()?;
                    }
                    (2, _) => {
                        once(&mut seen, 4)?;
                        s.parent_span_id = self.opt_str()?;
                    }
                    (3, _) => {
                        once(&mut seen, 8)?;
                        s.operation = self.opt_str_seen()?;
                    }
                    (4, _) => {
                        once(&mut seen, 16)?;
                        if !self.null()? && self.open(b'[', b']')? {
                            loop {
                                refs.push(self.reference()?);
                                if !self.more(b']')? {
                                    break;
                                }
                            }
                        }
                    }
                    (5, _) => {
                        once(&mut seen, 32)?;
                        s.start = self.num_or_text()?;
                    }
                    (6, _) => {
                        once(&mut seen, 64)?;
                        s.duration = self.num_or_text()?;
                    }
                    (7, _) => {
                        once(&mut seen, 128)?;
                        if !self.null()? && self.open(b'[', b']')? {
                            loop {
                                let t = self.tag()?;
                                s.attrs.add(t.key.as_deref().unwrap_or(""), &t.value());
                                if !self.more(b']')? {
                                    break;
                                }
                            }
                        }
                    }
                    (8, _) => {
                        once(&mut seen, 256)?;
                        s.log_error = self.logs()?;
                    }
                    (9, _) => {
                        once(&mut seen, 512)?;
                        s.process_id = self.opt_str_seen()?;
                    }
                    (UNKNOWN, k) => self.unknown(k)?,
                    _ => return Err(Stop::Bail), // `process`: the serde reader's
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        s.refs.1 = u32::try_from(refs.len()).map_err(|_| Stop::Bail)?;
        Ok(())
    }

    fn reference(&mut self) -> R<FRef<'de>> {
        let mut r = FRef {
            ref_type: None,
            trace_id: None,
            span_id: None,
        };
        let (mut seen, mut next) = (0u32, 0usize);
        if self.open(b'{', b'}')? {
            loop {
                match self.known_key(REF_KEYS, REF_ORDER, &mut next)? {
                    (0, _) => {
                        once(&mut seen, 1)?;
                        r.ref_type = self.opt_str_same(SAME_REF_TYPE)?;
                    }
                    (1, _) => {
                        once(&mut seen, 2)?;
                        r.trace_id = self.opt_str_same(SAME_TRACE_ID)?;
                    }
                    (2, _) => {
                        once(&mut seen, 4)?;
                        r.span_id = self.opt_str()?;
                    }
                    (_, k) => self.unknown(k)?,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Ok(r)
    }

    /// One tag object (the api_v2 `vStr`/`vInt64`/… spellings bail).
    fn tag(&mut self) -> R<JTag<'de>> {
        let mut t = JTag::default();
        let (mut seen, mut next) = (0u32, 0usize);
        if self.open(b'{', b'}')? {
            loop {
                match self.known_key(TAG_KEYS, TAG_ORDER, &mut next)? {
                    (0, _) => {
                        once(&mut seen, 1)?;
                        t.key = self.opt_str_seen()?.map(|k| BStr(Cow::Borrowed(k)));
                    }
                    (1, _) => {
                        once(&mut seen, 2)?;
                        t.value = self.value()?;
                    }
                    (2, _) => return Err(Stop::Bail),
                    (3, _) => self.skip(0)?,
                    (_, k) => self.unknown(k)?,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Ok(t)
    }

    /// A span's logs folded into "reports an error".
    fn logs(&mut self) -> R<bool> {
        let mut a = Attrs::default();
        if !self.null()? && self.open(b'[', b']')? {
            loop {
                let mut seen = 0u32;
                if self.open(b'{', b'}')? {
                    loop {
                        match self.key()? {
                            b"fields" => {
                                once(&mut seen, 1)?;
                                if !self.null()? && self.open(b'[', b']')? {
                                    loop {
                                        let t = self.tag()?;
                                        a.add_log_field(t.key.as_deref().unwrap_or(""), &t.value());
                                        if !self.more(b']')? {
                                            break;
                                        }
                                    }
                                }
                            }
                            k => self.unknown(k)?,
                        }
                        if !self.more(b'}')? {
                            break;
                        }
                    }
                }
                if !self.more(b']')? {
                    break;
                }
            }
        }
        Ok(a.error)
    }

    /// One entry of `processes`.
    fn process(&mut self) -> R<JProcess<'de>> {
        let mut p = JProcess::default();
        let mut seen = 0u32;
        if self.open(b'{', b'}')? {
            loop {
                match self.key()? {
                    b"serviceName" => {
                        once(&mut seen, 1)?;
                        p.service_name = self.opt_str()?.map(|s| BStr(Cow::Borrowed(s)));
                    }
                    b"tags" => {
                        once(&mut seen, 2)?;
                        if !self.null()? {
                            let mut tags = Vec::new();
                            if self.open(b'[', b']')? {
                                loop {
                                    tags.push(self.tag()?);
                                    if !self.more(b']')? {
                                        break;
                                    }
                                }
                            }
                            p.tags = Some(tags);
                        }
                    }
                    k => self.unknown(k)?,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Ok(p)
    }
}
