//! Parsers for one unit of each trace format (a trace object, a span array, a `resourceSpans`
//! element), from bytes already in memory. No I/O here: [`crate::read`] finds the units in a
//! file and hands them to these functions.
//!
//! Every parser maps its format onto [`Span`] with the same attribute rules ([`Attrs`]): span
//! kind, error, HTTP method and path, a host for clock-skew correction, whether the call writes,
//! and a fingerprint of the call's arguments for cache detection.

pub mod jaeger;
pub mod otlp;
pub mod zipkin;

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::model::{fingerprint, flags, normalize_trace_id, Interner, Span, SpanId, SpanKind, Sym};

/// Spans of one trace id found in a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTrace {
    /// Normalized trace id.
    pub trace_id: String,
    /// Spans, parents unresolved.
    pub spans: Vec<Span>,
}

/// Why a unit could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not JSON or not the shape this parser reads.
    #[error("input: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is valid but holds no trace data this parser recognizes.
    #[error("input: {0}")]
    Shape(String),
}

/// Add a span to the trace it belongs to (allocating a trace id only for a new trace).
pub(crate) fn push_span(out: &mut Vec<RawTrace>, tid: &str, span: Span) {
    push_span_sized(out, tid, span, 1);
}

/// [`push_span`], sizing a new trace's list for `expect` spans (a whole trace object says how
/// many it holds, which saves growing the list span by span).
pub(crate) fn push_span_sized(out: &mut Vec<RawTrace>, tid: &str, span: Span, expect: usize) {
    if let Some(t) = out.iter_mut().rev().find(|t| t.trace_id == tid) {
        t.spans.push(span);
    } else {
        let mut spans = Vec::with_capacity(expect.max(1));
        spans.push(span);
        out.push(RawTrace {
            trace_id: tid.to_string(),
            spans,
        });
    }
}

/// Normalizes trace ids, remembering the last one (spans of one trace repeat it).
#[derive(Default)]
pub(crate) struct TidCache {
    raw: String,
    norm: String,
}

impl TidCache {
    pub(crate) fn get(&mut self, raw: &str) -> &str {
        if raw != self.raw {
            self.raw.clear();
            self.raw.push_str(raw);
            self.norm = trace_id(raw);
        }
        &self.norm
    }
}

// ---------------------------------------------------------------------------------------------
// ids

/// Decode an id written as hex or as base64 (protobuf JSON) to lower-case hex; other text as is.
pub fn id_text(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Cow::Borrowed(s);
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded = engine
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s));
    match decoded {
        Ok(bytes) if bytes.len() == 8 || bytes.len() == 16 => {
            let mut hex = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            Cow::Owned(hex)
        }
        _ => Cow::Borrowed(s),
    }
}

/// Hex digit values by byte; `0xFF` for anything else.
static HEX: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// A span id from its text form.
pub fn span_id(s: &str, interner: &mut Interner) -> SpanId {
    // the common case, 1 to 16 hex digits, in one branch-free pass (what the general rules
    // below make of it)
    if s.len() == 16 {
        // the usual width: two words of eight digits at once
        let b = s.as_bytes();
        if let (Some(hi), Some(lo)) = (hex8(&b[..8]), hex8(&b[8..])) {
            return SpanId::Hex(u64::from(hi) << 32 | u64::from(lo));
        }
    }
    if !s.is_empty() && s.len() <= 16 {
        let (mut v, mut bad) = (0u64, 0u8);
        for b in s.bytes() {
            let d = HEX[usize::from(b)];
            bad |= d;
            v = (v << 4) | u64::from(d & 0x0F);
        }
        if bad & 0xF0 == 0 {
            return SpanId::Hex(v);
        }
    }
    let t = id_text(s);
    // 128-bit span ids do not exist; a 32-digit hex value with a zero high half is a 64-bit id
    let t: &str = if t.len() == 32 && t.starts_with("0000000000000000") {
        &t[16..]
    } else {
        &t
    };
    SpanId::parse(t, interner)
}

/// Eight hex digits (either case) as a number, `None` if any byte is not one: the same as
/// the table in [`span_id`], a word at a time (the per-byte loop was most of the cost of
/// reading a span id).
fn hex8(b: &[u8]) -> Option<u32> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let mut w = [0u8; 8];
    w.copy_from_slice(b.get(..8)?);
    // the first digit in the top byte
    let x = u64::from_be_bytes(w);
    if x & HIGH != 0 {
        return None; // not ASCII; byte-wise sums below stay within their byte from here on
    }
    // a byte with its top bit set after adding `0x80 - lo` is `>= lo`
    let at_least = |v: u64, lo: u8| v.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH;
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let l = x | (ONES * 0x20);
    let alpha = at_least(l, b'a') & !at_least(l, b'f' + 1);
    if (digit | alpha) != HIGH {
        return None;
    }
    // a digit's value is its low nibble; a letter's is its low nibble + 9
    let v = (x & (ONES * 0x0F)) + (alpha >> 7) * 9;
    // pack the eight nibbles (one per byte) into 32 bits
    let v = (v | v >> 4) & 0x00FF_00FF_00FF_00FF;
    let v = (v | v >> 8) & 0x0000_FFFF_0000_FFFF;
    let v = (v | v >> 16) & 0x0000_0000_FFFF_FFFF;
    u32::try_from(v).ok()
}

/// A trace id from its text form.
pub fn trace_id(s: &str) -> String {
    normalize_trace_id(&id_text(s))
}

// ---------------------------------------------------------------------------------------------
// time

/// Parse RFC 3339 (`2017-01-26T16:46:31.639875139-05:00`) to Unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if !part.iter().all(|c| c.is_ascii_digit()) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        while digits < 9 {
            frac *= 10;
            digits += 1;
        }
    }
    let offset_s: i64 = if i >= b.len() || b[i] == b'Z' || b[i] == b'z' {
        0
    } else if b[i] == b'+' || b[i] == b'-' {
        let sign = if b[i] == b'-' { -1 } else { 1 };
        let oh = num(i + 1..i + 3)?;
        let om = num(i + 4..i + 6)?;
        sign * (oh * 3600 + om * 60)
    } else {
        return None;
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse a duration written as protobuf JSON (`"0.000225s"`) or Go (`"5000ns"`, `"1m2.5s"`) to ns.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .bytes()
            .take_while(|c| c.is_ascii_alphabetic() || *c >= 0x80)
            .count();
        let unit = &rest[..u];
        rest = &rest[u..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        any = true;
    }
    if !any {
        return None;
    }
    let v = total.round();
    if !v.is_finite() || v.abs() > 9.2e18 {
        return None;
    }
    Some(if neg { -(v as i64) } else { v as i64 })
}

/// A JSON number or a string holding one (OTLP writes 64-bit integers as strings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string that is not a plain number (RFC 3339 time, duration with unit); raw index into
    /// nothing: the text is kept by [`NumOrText`].
    Text,
}

/// A number, or text that may hold a time or a duration.
#[derive(Debug, Clone, PartialEq)]
pub enum NumOrText<'a> {
    /// A number.
    Num(Num),
    /// Text.
    Text(Cow<'a, str>),
}

impl<'a> NumOrText<'a> {
    /// As an integer (text holding an integer counts).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            NumOrText::Num(Num::Int(i)) => Some(*i),
            NumOrText::Num(Num::Float(f)) if f.is_finite() && f.abs() < 9.2e18 => {
                Some(f.round() as i64)
            }
            NumOrText::Text(t) => t.trim().parse::<i64>().ok().or_else(|| {
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f.round() as i64)
            }),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for NumOrText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = NumOrText<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(NumOrText::Num(Num::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(NumOrText::Num(
                    i64::try_from(v)
                        .map(Num::Int)
                        .unwrap_or(Num::Float(v as f64)),
                ))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(NumOrText::Num(Num::Float(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(NumOrText::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(NumOrText::Text(Cow::Owned(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(NumOrText::Num(Num::Text))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A tag or attribute value in any of the formats' spellings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Text.
    Str(Cow<'a, str>),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Null, arrays, objects: nothing we read.
    Other,
}

impl<'a> Value<'a> {
    /// Text form (numbers and bools rendered).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(f.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Other => Cow::Borrowed(""),
        }
    }

    /// Integer form (text holding an integer counts).
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.is_finite() => Some(*f as i64),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Truthiness as tracers use it for `error`.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => {
                let t = s.trim();
                !(t.is_empty() || t.eq_ignore_ascii_case("false") || t == "0")
            }
            Value::Other => false,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Value<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v)
                    .map(Value::Int)
                    .unwrap_or(Value::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Value::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Value::Str(Cow::Owned(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Value::Other)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Value::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Text that may be missing or null.
pub(crate) fn text_or_empty<'a>(v: &'a Option<BStr<'a>>) -> &'a str {
    v.as_deref().unwrap_or("")
}

/// A string borrowed from the input when it has no escapes. (serde's own `Cow<str>` only
/// borrows as a direct field; inside `Option` it always allocates.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BStr<'a>(pub Cow<'a, str>);

impl std::ops::Deref for BStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// attributes

/// What the attribute rules extract from a span's tags / attributes / logs.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    /// Span kind from a `span.kind` tag.
    pub kind: Option<SpanKind>,
    /// An error was reported.
    pub error: bool,
    /// HTTP method.
    pub method: Option<Cow<'static, str>>,
    /// Route, path or RPC method.
    pub path: Option<String>,
    /// Fingerprint of the identifying argument text (URL with query, statement, destination).
    args: Option<u64>,
    /// The call writes or publishes.
    pub write: bool,
    /// Host or IP.
    pub host: Option<String>,
    /// Service name given as an attribute (`service.name`).
    pub service: Option<String>,
}

const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Attrs {
    /// Feed one attribute.
    pub fn add(&mut self, key: &str, v: &Value<'_>) {
        match key {
            "span.kind" => self.kind = Some(SpanKind::parse(&v.text())),
            "error" => self.error |= v.truthy(),
            "otel.status_code" => self.error |= v.text().eq_ignore_ascii_case("error"),
            "http.status_code" | "http.response.status_code" => {
                self.error |= v.int().is_some_and(|c| c >= 400)
            }
            "grpc.status" | "rpc.grpc.status_code" | "grpc.status_code" => {
                let t = v.text();
                let t = t.trim();
                if !(t.is_empty() || t == "0" || t.eq_ignore_ascii_case("ok")) {
                    self.error = true
                }
            }
            "http.method" | "http.request.method" => {
                // the usual methods without an allocation per span
                let t = v.text();
                let m = match KNOWN_METHODS.iter().find(|k| k.eq_ignore_ascii_case(&t)) {
                    Some(k) => Cow::Borrowed(*k),
                    None => Cow::Owned(t.to_ascii_uppercase()),
                };
                if WRITE_METHODS.contains(&m.as_ref()) {
                    self.write = true;
                }
                self.method = Some(m);
            }
            "http.route" => self.path = Some(v.text().into_owned()),
            "http.target" | "url.path" | "http.path" => {
                let t = v.text();
                if self.path.is_none() {
                    self.path = Some(t.split('?').next().unwrap_or("").to_string());
                }
                self.arg(&t);
            }
            "http.url" | "url.full" => {
                let t = v.text();
                if self.path.is_none() {
                    self.path = Some(path_of_url(&t).to_string());
                }
                self.arg(&t);
            }
            "url.query" => self.arg(&v.text()),
            "db.statement" | "db.query.text" | "sql.query" => {
                let t = v.text();
                let head = t
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(
                    head.as_str(),
                    "INSERT" | "UPDATE" | "DELETE" | "UPSERT" | "MERGE" | "REPLACE"
                ) {
                    self.write = true;
                }
                self.arg(&t);
            }
            "messaging.destination" | "messaging.destination.name" => self.arg(&v.text()),
            "messaging.operation" | "messaging.operation.type" => {
                let t = v.text().to_ascii_lowercase();
                if t == "publish" || t == "send" || t == "create" {
                    self.write = true;
                }
            }
            "rpc.method" => {
                self.path.get_or_insert_with(|| v.text().into_owned());
            }
            "hostname" | "host.name" | "ip" | "host.ip" | "net.host.ip" => {
                self.host.get_or_insert_with(|| v.text().into_owned());
            }
            "service.name" => self.service = Some(v.text().into_owned()),
            _ => {}
        }
    }

    fn arg(&mut self, text: &str) {
        let h = fingerprint(text.as_bytes());
        self.args = Some(crate::model::mix(self.args.unwrap_or(0), h));
    }

    /// Feed one log/event field (errors only).
    pub fn add_log_field(&mut self, key: &str, v: &Value<'_>) {
        match key {
            "error.object" | "exception.type" | "exception.message" => self.error = true,
            "error" => self.error |= matches!(v, Value::Str(_)) || v.truthy(),
            "event" => {
                self.error |= v.text().eq_ignore_ascii_case("error")
                    || v.text().eq_ignore_ascii_case("exception")
            }
            _ => {}
        }
    }

    /// Write what was found into a span (kind given by the format takes precedence when known).
    pub fn apply(&self, span: &mut Span, interner: &mut Interner) {
        if span.kind == SpanKind::Unspecified {
            if let Some(k) = self.kind {
                span.kind = k;
            }
        }
        if self.error {
            span.flags |= flags::ERROR;
        }
        let named_write = interner.memo(span.operation, |n| name_writes(&n.to_ascii_lowercase()));
        if self.write || span.kind == SpanKind::Producer || named_write {
            span.flags |= flags::WRITE;
        }
        if let Some(m) = &self.method {
            span.http_method = interner.intern(m);
        }
        if let Some(p) = &self.path {
            span.http_path = interner.intern(p);
        }
        if let Some(h) = &self.host {
            span.host = interner.intern(h);
        }
        let mut key = crate::model::mix(u64::from(span.service), u64::from(span.operation));
        if let Some(a) = self.args {
            span.flags |= flags::HAS_ARGS;
            key = crate::model::mix(key, a);
        }
        span.call_key = key;
    }
}

/// The path part of a URL (`http://h:1/a/b?x` → `/a/b`).
pub fn path_of_url(url: &str) -> &str {
    // byte searches (what `str::find` with these patterns finds, without setting up a
    // substring search per span); every byte looked for is ASCII, so cuts fall on characters
    let b = url.as_bytes();
    let rest = match memchr::memchr_iter(b':', b).find(|&i| b.get(i + 1..i + 3) == Some(b"//")) {
        Some(i) => &url[i + 3..],
        None => url,
    };
    let start = memchr::memchr(b'/', rest.as_bytes()).unwrap_or(rest.len());
    let p = &rest[start..];
    let end = memchr::memchr2(b'?', b'#', p.as_bytes()).unwrap_or(p.len());
    &p[..end]
}

fn name_writes(op: &str) -> bool {
    const WORDS: [&str; 14] = [
        "publish", "send", "write", "insert", "update", "save", "enqueue", "notify", "emit",
        "produce", "post", "put", "delete", "email",
    ];
    op.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| WORDS.contains(&w))
}

/// Intern a service name, `unknown` stays symbol 0 so assembly can count it.
pub(crate) fn service_sym(name: Option<&str>, interner: &mut Interner) -> Sym {
    match name {
        Some(n) if !n.trim().is_empty() => interner.intern(n),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex8_is_the_table_a_word_at_a_time() {
        let table = |b: &[u8]| -> Option<u32> {
            let mut v = 0u32;
            for &c in b {
                let d = HEX[usize::from(c)];
                if d > 15 {
                    return None;
                }
                v = v << 4 | u32::from(d);
            }
            Some(v)
        };
        // every byte value in every position, among valid digits of both cases
        let base = *b"09afAF5c";
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut w = base;
                w[pos] = c;
                assert_eq!(hex8(&w), table(&w), "{w:?}");
            }
        }
        let mut r = crate::synth::Rng::new(7);
        let alphabet = b"0123456789abcdefABCDEFgG/:@`\x7f\x80\xff ";
        for _ in 0..20_000 {
            let mut w = [0u8; 8];
            for c in &mut w {
                *c = alphabet[r.range(0, alphabet.len() as i64) as usize];
            }
            assert_eq!(hex8(&w), table(&w), "{w:?}");
        }
        let mut i = Interner::new();
        assert_eq!(span_id("00000000000000FF", &mut i), SpanId::Hex(255));
        assert_eq!(span_id("ffffffffffffffff", &mut i), SpanId::Hex(u64::MAX));
        assert_eq!(
            span_id("123456789abcdef0", &mut i),
            SpanId::Hex(0x1234_5678_9abc_def0)
        );
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2017-01-26T16:46:31.639875139-05:00"),
            Some(1_485_467_191_639_875_139)
        );
        assert_eq!(
            parse_rfc3339("2017-01-26T21:46:31.639875Z"),
            Some(1_485_467_191_639_875_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_duration("0.000225s"), Some(225_000));
        assert_eq!(parse_duration("5000ns"), Some(5000));
        assert_eq!(parse_duration("1m2.5s"), Some(62_500_000_000));
        assert_eq!(parse_duration("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration("abc"), None);
    }

    #[test]
    fn ids_in_hex_or_base64() {
        assert_eq!(id_text("AAAAAAAAAAI="), "0000000000000002");
        assert_eq!(id_text("00ff"), "00ff");
        assert_eq!(trace_id("AAAAAAAAAAAAAAAAAAAAAQ=="), "0000000000000001");
        let mut i = Interner::new();
        assert_eq!(span_id("AAAAAAAAAAI=", &mut i), SpanId::Hex(2));
    }

    #[test]
    fn url_paths() {
        assert_eq!(path_of_url("http://h:1/a/b?x=1"), "/a/b");
        assert_eq!(path_of_url("/a?b"), "/a");
        for url in [
            "",
            ":",
            "://",
            "a:/b://c/d#e?f",
            "h:1/x",
            "http://h",
            "http://é/ü?x",
            "x://y://z/w",
            "/p#f",
            "http:/h/p",
        ] {
            let rest = match url.find("://") {
                Some(i) => &url[i + 3..],
                None => url,
            };
            let p = &rest[rest.find('/').unwrap_or(rest.len())..];
            assert_eq!(
                path_of_url(url),
                &p[..p.find(['?', '#']).unwrap_or(p.len())],
                "{url}"
            );
        }
    }
}
