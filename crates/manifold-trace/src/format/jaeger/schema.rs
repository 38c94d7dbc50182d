//! The Jaeger JSON shapes the general parser deserializes (UI JSON and api_v2 protobuf-JSON
//! spelled alike through aliases), with tags and logs folded into [`Attrs`] as they are read.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use crate::format::{text_or_empty, Attrs, BStr, NumOrText, Value};

#[derive(Deserialize, Default)]
pub(super) struct JTag<'a> {
    #[serde(borrow)]
    pub(super) key: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) value: Option<Value<'a>>,
    #[serde(rename = "vStr", borrow)]
    pub(super) v_str: Option<BStr<'a>>,
    #[serde(rename = "vInt64", borrow)]
    pub(super) v_int: Option<NumOrText<'a>>,
    #[serde(rename = "vBool")]
    pub(super) v_bool: Option<bool>,
    #[serde(rename = "vFloat64")]
    pub(super) v_float: Option<f64>,
}

impl<'a> JTag<'a> {
    pub(super) fn value(&self) -> Value<'_> {
        if let Some(v) = &self.value {
            return v.clone();
        }
        if let Some(s) = &self.v_str {
            return Value::Str(Cow::Borrowed(s));
        }
        if let Some(i) = self.v_int.as_ref().and_then(|n| n.as_i64()) {
            return Value::Int(i);
        }
        if let Some(b) = self.v_bool {
            return Value::Bool(b);
        }
        if let Some(f) = self.v_float {
            return Value::Float(f);
        }
        Value::Other
    }
}

#[derive(Deserialize, Default)]
struct JLog<'a> {
    #[serde(borrow, default)]
    fields: Option<Vec<JTag<'a>>>,
}

/// Span tags folded into [`Attrs`] while they are parsed (no per-span `Vec` of tags).
#[derive(Default)]
pub(super) struct TagSummary(pub(super) Attrs);

impl<'de> Deserialize<'de> for TagSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TagSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of tags")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TagSummary, A::Error> {
                let mut a = Attrs::default();
                while let Some(t) = seq.next_element::<JTag<'de>>()? {
                    a.add(text_or_empty(&t.key), &t.value());
                }
                Ok(TagSummary(a))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TagSummary, E> {
                Ok(TagSummary::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Span logs folded into an error flag while they are parsed.
#[derive(Default)]
pub(super) struct LogSummary(pub(super) Attrs);

impl<'de> Deserialize<'de> for LogSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LogSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of logs")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LogSummary, A::Error> {
                let mut a = Attrs::default();
                while let Some(l) = seq.next_element::<JLog<'de>>()? {
                    for f in l.fields.iter().flatten() {
                        a.add_log_field(text_or_empty(&f.key), &f.value());
                    }
                }
                Ok(LogSummary(a))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<LogSummary, E> {
                Ok(LogSummary::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
pub(super) struct JRef<'a> {
    #[serde(rename = "refType", alias = "ref_type", borrow)]
    pub(super) ref_type: Option<BStr<'a>>,
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    pub(super) trace_id: Option<BStr<'a>>,
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    pub(super) span_id: Option<BStr<'a>>,
}

#[derive(Deserialize, Default)]
pub(super) struct JProcess<'a> {
    #[serde(rename = "serviceName", borrow)]
    pub(super) service_name: Option<BStr<'a>>,
    #[serde(borrow, default)]
    pub(super) tags: Option<Vec<JTag<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct JProcessEntry<'a> {
    #[serde(rename = "processID", alias = "processId", borrow)]
    pub(super) process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) process: Option<JProcess<'a>>,
}

#[derive(Deserialize)]
pub(super) struct JSpan<'a> {
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    pub(super) trace_id: Option<BStr<'a>>,
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    pub(super) span_id: Option<BStr<'a>>,
    #[serde(rename = "parentSpanID", alias = "parentSpanId", borrow)]
    pub(super) parent_span_id: Option<BStr<'a>>,
    #[serde(rename = "operationName", borrow)]
    pub(super) operation_name: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) references: Option<Vec<JRef<'a>>>,
    #[serde(rename = "startTime", borrow)]
    pub(super) start_time: Option<NumOrText<'a>>,
    #[serde(borrow)]
    pub(super) duration: Option<NumOrText<'a>>,
    pub(super) tags: Option<TagSummary>,
    pub(super) logs: Option<LogSummary>,
    #[serde(rename = "processID", alias = "processId", borrow)]
    pub(super) process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) process: Option<JProcess<'a>>,
}

/// Any Jaeger object: envelope, trace, chunk or span (all fields optional).
#[derive(Deserialize)]
pub(super) struct JObj<'a> {
    #[serde(borrow)]
    pub(super) data: Option<Vec<JObj<'a>>>,
    /// api_v3's wrapper: Jaeger's own JSON or OTLP/JSON inside (OTLP's fields are ignored
    /// here; [`super::otlp`] reads the whole document again for them).
    #[serde(borrow)]
    pub(super) result: Option<Box<JObj<'a>>>,
    #[serde(rename = "traceID", alias = "traceId", borrow)]
    pub(super) trace_id: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) spans: Option<Vec<JSpan<'a>>>,
    #[serde(borrow)]
    pub(super) processes: Option<HashMap<BStr<'a>, JProcess<'a>>>,
    #[serde(rename = "processMap", borrow)]
    pub(super) process_map: Option<Vec<JProcessEntry<'a>>>,
    // single-span fields
    #[serde(rename = "spanID", alias = "spanId", borrow)]
    pub(super) span_id: Option<BStr<'a>>,
    #[serde(rename = "parentSpanID", alias = "parentSpanId", borrow)]
    pub(super) parent_span_id: Option<BStr<'a>>,
    #[serde(rename = "operationName", borrow)]
    pub(super) operation_name: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) references: Option<Vec<JRef<'a>>>,
    #[serde(rename = "startTime", borrow)]
    pub(super) start_time: Option<NumOrText<'a>>,
    #[serde(borrow)]
    pub(super) duration: Option<NumOrText<'a>>,
    pub(super) tags: Option<TagSummary>,
    pub(super) logs: Option<LogSummary>,
    #[serde(rename = "processID", alias = "processId", borrow)]
    pub(super) process_id: Option<BStr<'a>>,
    #[serde(borrow)]
    pub(super) process: Option<JProcess<'a>>,
}

impl<'a> JObj<'a> {
    pub(super) fn into_single_span(self) -> Option<JSpan<'a>> {
        self.span_id.as_ref()?;
        Some(JSpan {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            operation_name: self.operation_name,
            references: self.references,
            start_time: self.start_time,
            duration: self.duration,
            tags: self.tags,
            logs: self.logs,
            process_id: self.process_id,
            process: self.process,
        })
    }
}
