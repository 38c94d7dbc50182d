//! Where the time went in any system's traces, and what would fix it.
//!
//! Jaeger draws one trace's critical path; CRISP aggregates critical paths over many traces;
//! neither says what to change or what it would save. This crate does all three, on traces from
//! any system, and its core works on in-memory data only, so the live gateway reuses the same
//! critical-path code for its own requests:
//!
//! * [`model`] — the span model every reader produces;
//! * [`format`](mod@format) — parsers for Jaeger (UI JSON and api_v2/v3 protobuf-JSON), Zipkin v2 and
//!   OTLP/JSON units; [`assemble`] turns spans into a [`Trace`], counting every defect as a
//!   warning; [`skew`] corrects clock skew between client and server;
//! * [`critical`] — the critical path (Jaeger's semantics, CRISP's overlap allowance);
//! * [`errors`] — failures on the critical path and the time they cost (CRISP's error metrics);
//! * [`sim`] — re-simulating a trace under a change;
//! * [`analysis`] — aggregation, hotspots, recommendations, what-if and route plans;
//! * [`report`] — the terminal report, the `--json` contract and the HTML page;
//! * [`read`] — the only I/O: files, directories, gzip, streaming;
//! * [`limits`] — what keeps reading bounded on hostile files (long strings, huge units).
#![doc = include_str!("../../../docs/analyze.md")]

pub mod analysis;
pub mod assemble;
pub mod critical;
pub mod errors;
pub mod format;
pub mod limits;
pub mod model;
pub mod read;
pub mod report;
pub mod sim;
pub mod skew;
pub mod synth;

pub use critical::{critical_path, CpGraph, CriticalPath, PathNode, Section, Semantics};
pub use model::{Children, Interner, Span, SpanId, SpanKind, Trace, WarningKind, Warnings};
