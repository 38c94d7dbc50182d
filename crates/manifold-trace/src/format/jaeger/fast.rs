//! The fast path for the common case: one Jaeger UI trace object (`traceID`, `spans`,
//! `processes`), parsed in one serde pass straight from the input bytes.
//!
//! Why a second parser: the general one ([`super::parse`]) accepts every Jaeger shape through one
//! all-optional struct, so each span costs a `Vec` of references, an identifier string decoded
//! per key and a trace-sized `Vec` of intermediate spans. This one matches keys as raw bytes,
//! folds references into one per-trace list and reads nothing it does not need.
//!
//! It never decides anything on its own: phase one ([`FTrace`]) only parses, without touching
//! the interner or the warnings, and gives up (an error) on anything it does not handle exactly
//! like the general parser — another shape, an escaped string, a duplicate key, a control
//! character. The caller then runs the general parser on the same bytes, so every warning and
//! error stays what it was. Phase two ([`convert`]) runs the shared span conversion.
//!
//! [`lex`] builds the same [`FTrace`] without serde, faster still, for the plainest input; the
//! reader tries it first, then this one, then the general parser.

use std::fmt;

pub(crate) mod lex;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::convert::{convert_span_in, OpCache, Processes, RefIn, SpanIn};
use super::schema::{JProcess, JTag, LogSummary};
use crate::format::{trace_id, Attrs, NumOrText, RawTrace, TidCache, Value};
use crate::model::{Interner, Warnings};

/// A string value borrowed from the input (serde_json has checked it as text); one with escapes
/// is refused, so that nothing is copied, and the general parser takes the unit.
struct Str<'de>(&'de str);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string without escapes")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object key as raw bytes: known keys are matched without decoding them as text (a large share
/// of the reader's time went into that); any other key is checked by [`unknown_key`]. One with
/// escapes is refused like an escaped [`Str`].
struct Key<'de>(&'de [u8]);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key without escapes")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Key(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// An unknown key is skipped, as by the derived parsers, once it is known to be valid text
/// (no control characters, valid UTF-8), as they require.
fn unknown_key<E: de::Error>(k: &[u8]) -> Result<(), E> {
    if k.iter().any(|&c| c < 0x20) || std::str::from_utf8(k).is_err() {
        return Err(E::custom("a key that is not text"));
    }
    Ok(())
}

/// Marks a field as seen; a repeated field is an error, as in the derived parsers.
fn once<E: de::Error>(seen: &mut u32, bit: u32) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(E::custom("duplicate field"));
    }
    *seen |= bit;
    Ok(())
}

/// One reference, as written.
struct FRef<'de> {
    ref_type: Option<&'de str>,
    trace_id: Option<&'de str>,
    span_id: Option<&'de str>,
}

/// One span, as written.
struct FSpan<'de> {
    trace_id: Option<&'de str>,
    span_id: Option<&'de str>,
    parent_span_id: Option<&'de str>,
    operation: Option<&'de str>,
    /// Range of this span's references in [`FTrace::refs`].
    refs: (u32, u32),
    start: Option<NumOrText<'de>>,
    duration: Option<NumOrText<'de>>,
    attrs: Attrs,
    log_error: bool,
    process_id: Option<&'de str>,
    process: Option<JProcess<'de>>,
}

/// A whole Jaeger trace object, parsed but not converted.
pub(crate) struct FTrace<'de> {
    trace_id: Option<&'de str>,
    spans: Vec<FSpan<'de>>,
    refs: Vec<FRef<'de>>,
    processes: Vec<(&'de str, JProcess<'de>)>,
}

impl<'de> Deserialize<'de> for FTrace<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FTrace<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Jaeger trace object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FTrace<'de>, A::Error> {
                let mut t = FTrace {
                    trace_id: None,
                    spans: Vec::new(),
                    refs: Vec::new(),
                    processes: Vec::new(),
                };
                let (mut seen, mut has_spans) = (0u32, false);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k {
                        b"traceID" | b"traceId" => {
                            once(&mut seen, 1)?;
                            t.trace_id = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0);
                        }
                        b"spans" => {
                            once(&mut seen, 2)?;
                            let seed = SpansSeed {
                                spans: &mut t.spans,
                                refs: &mut t.refs,
                            };
                            has_spans = map.next_value_seed(seed)?;
                        }
                        b"processes" => {
                            once(&mut seen, 4)?;
                            map.next_value_seed(ProcessesSeed(&mut t.processes))?;
                        }
                        // other shapes and single-span fields: the general parser's business
                        b"data" | b"result" | b"processMap" | b"spanID" | b"spanId"
                        | b"parentSpanID" | b"parentSpanId" | b"operationName" | b"references"
                        | b"startTime" | b"duration" | b"tags" | b"logs" | b"processID"
                        | b"processId" | b"process" => {
                            return Err(de::Error::custom("not a plain trace object"))
                        }
                        _ => {
                            unknown_key(k)?;
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if !has_spans {
                    return Err(de::Error::custom("no spans"));
                }
                Ok(t)
            }
        }
        d.deserialize_map(V)
    }
}

/// The `spans` array, appended to the trace's list (references to the shared list).
struct SpansSeed<'a, 'de> {
    spans: &'a mut Vec<FSpan<'de>>,
    refs: &'a mut Vec<FRef<'de>>,
}

impl<'de> DeserializeSeed<'de> for SpansSeed<'_, 'de> {
    /// Whether the array was present (`null` counts as absent).
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for SpansSeed<'_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of spans")
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        if let Some(n) = seq.size_hint() {
            self.spans.reserve(n);
        }
        while let Some(s) = seq.next_element_seed(SpanSeed(self.refs))? {
            self.spans.push(s);
        }
        Ok(true)
    }
}

struct SpanSeed<'a, 'de>(&'a mut Vec<FRef<'de>>);

impl<'de> DeserializeSeed<'de> for SpanSeed<'_, 'de> {
    type Value = FSpan<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FSpan<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpanSeed<'_, 'de> {
    type Value = FSpan<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Jaeger span")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FSpan<'de>, A::Error> {
        let refs = self.0;
        let first = u32::try_from(refs.len()).map_err(de::Error::custom)?;
        let mut s = FSpan {
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
        };
        let mut seen = 0u32;
        let opt_str = |m: &mut A| -> Result<Option<&'de str>, A::Error> {
            Ok(m.next_value::<Option<Str<'de>>>()?.map(|s| s.0))
        };
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match k {
                b"traceID" | b"traceId" => {
                    once(&mut seen, 1)?;
                    s.trace_id = opt_str(&mut map)?;
                }
                b"spanID" | b"spanId" => {
                    once(&mut seen, 2)?;
                    s.span_id = opt_str(&mut map)?;
                }
                b"parentSpanID" | b"parentSpanId" => {
                    once(&mut seen, 4)?;
                    s.parent_span_id = opt_str(&mut map)?;
                }
                b"operationName" => {
                    once(&mut seen, 8)?;
                    s.operation = opt_str(&mut map)?;
                }
                b"references" => {
                    once(&mut seen, 16)?;
                    map.next_value_seed(RefsSeed(refs))?;
                }
                b"startTime" => {
                    once(&mut seen, 32)?;
                    s.start = map.next_value()?;
                }
                b"duration" => {
                    once(&mut seen, 64)?;
                    s.duration = map.next_value()?;
                }
                b"tags" => {
                    once(&mut seen, 128)?;
                    if let Some(FTags(a)) = map.next_value::<Option<FTags>>()? {
                        s.attrs = a;
                    }
                }
                b"logs" => {
                    once(&mut seen, 256)?;
                    s.log_error = map
                        .next_value::<Option<LogSummary>>()?
                        .is_some_and(|l| l.0.error);
                }
                b"processID" | b"processId" => {
                    once(&mut seen, 512)?;
                    s.process_id = opt_str(&mut map)?;
                }
                b"process" => {
                    once(&mut seen, 1024)?;
                    s.process = map.next_value()?;
                }
                _ => {
                    unknown_key(k)?;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let end = u32::try_from(refs.len()).map_err(de::Error::custom)?;
        s.refs = (first, end);
        Ok(s)
    }
}

/// A span's `references` (or `null`), appended to the trace's list.
struct RefsSeed<'a, 'de>(&'a mut Vec<FRef<'de>>);

impl<'de> DeserializeSeed<'de> for RefsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RefsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of references")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(r) = seq.next_element::<FRefDe<'de>>()? {
            self.0.push(r.0);
        }
        Ok(())
    }
}

struct FRefDe<'de>(FRef<'de>);

impl<'de> Deserialize<'de> for FRefDe<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FRefDe<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FRefDe<'de>, A::Error> {
                let mut r = FRef {
                    ref_type: None,
                    trace_id: None,
                    span_id: None,
                };
                let mut seen = 0u32;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let slot = match k {
                        b"refType" | b"ref_type" => {
                            once(&mut seen, 1)?;
                            &mut r.ref_type
                        }
                        b"traceID" | b"traceId" => {
                            once(&mut seen, 2)?;
                            &mut r.trace_id
                        }
                        b"spanID" | b"spanId" => {
                            once(&mut seen, 4)?;
                            &mut r.span_id
                        }
                        _ => {
                            unknown_key(k)?;
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0);
                }
                Ok(FRefDe(r))
            }
        }
        d.deserialize_map(V)
    }
}

/// Span tags folded into [`Attrs`] while they are parsed, keys matched as bytes.
struct FTags(Attrs);

impl<'de> Deserialize<'de> for FTags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FTags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tags")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FTags, A::Error> {
                let mut a = Attrs::default();
                while let Some(FTag(t)) = seq.next_element::<FTag<'de>>()? {
                    let key = t.key.as_deref().unwrap_or("");
                    a.add(key, &t.value());
                }
                Ok(FTags(a))
            }
            fn visit_unit<E: de::Error>(self) -> Result<FTags, E> {
                Ok(FTags(Attrs::default()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One tag: the same fields as [`JTag`], keys matched as bytes.
struct FTag<'de>(JTag<'de>);

impl<'de> Deserialize<'de> for FTag<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FTag<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tag")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FTag<'de>, A::Error> {
                let mut t = JTag::default();
                let mut seen = 0u32;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k {
                        b"key" => {
                            once(&mut seen, 1)?;
                            t.key = map
                                .next_value::<Option<Str<'de>>>()?
                                .map(|s| crate::format::BStr(s.0.into()));
                        }
                        b"value" => {
                            once(&mut seen, 2)?;
                            t.value = map.next_value::<Option<Value<'de>>>()?;
                        }
                        b"vStr" => {
                            once(&mut seen, 4)?;
                            t.v_str = map.next_value()?;
                        }
                        b"vInt64" => {
                            once(&mut seen, 8)?;
                            t.v_int = map.next_value()?;
                        }
                        b"vBool" => {
                            once(&mut seen, 16)?;
                            t.v_bool = map.next_value()?;
                        }
                        b"vFloat64" => {
                            once(&mut seen, 32)?;
                            t.v_float = map.next_value()?;
                        }
                        _ => {
                            unknown_key(k)?;
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(FTag(t))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `processes` map (or `null`), in document order (a repeated id: the last one wins, as in
/// the general parser's map).
struct ProcessesSeed<'a, 'de>(&'a mut Vec<(&'de str, JProcess<'de>)>);

impl<'de> DeserializeSeed<'de> for ProcessesSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ProcessesSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of processes")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            let p: JProcess<'de> = map.next_value()?;
            self.0.push((k, p));
        }
        Ok(())
    }
}

/// Convert a parsed trace object exactly as the general parser converts the same object.
pub(crate) fn convert(
    t: FTrace<'_>,
    interner: &mut Interner,
    warnings: &mut Warnings,
    out: &mut Vec<RawTrace>,
) {
    let default_tid = t.trace_id.map(trace_id).unwrap_or_default();
    let mut procs = Processes::default();
    for (k, p) in &t.processes {
        procs.add(k, p, interner);
    }
    let mut cache = TidCache::default();
    if let Some(raw) = t.trace_id {
        cache.get(raw);
    }
    // every string in `t` is borrowed from the unit's bytes (see `OpCache`)
    let mut ops = OpCache::default();
    let first = out.len();
    let refs = &t.refs;
    let n = t.spans.len();
    let mut spans = t.spans;
    for (k, s) in spans.iter_mut().enumerate() {
        let rs = refs
            .get(s.refs.0 as usize..s.refs.1 as usize)
            .unwrap_or(&[])
            .iter()
            .map(|r| RefIn {
                ref_type: r.ref_type,
                trace_id: r.trace_id,
                span_id: r.span_id,
            });
        let input = SpanIn {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_span_id: s.parent_span_id,
            operation: s.operation,
            start: s.start.as_ref(),
            duration: s.duration.as_ref(),
            process: s.process.as_ref(),
            process_id: s.process_id,
        };
        convert_span_in(
            input,
            rs,
            std::mem::take(&mut s.attrs),
            s.log_error,
            (&default_tid, &procs, &mut cache, n - k, Some(&mut ops)),
            interner,
            warnings,
            out,
        );
    }
    if let Some(t) = out.get_mut(first) {
        t.spans.shrink_to_fit();
    }
}
