//! OTLP/HTTP protobuf export: [`encode`] builds `ExportTraceServiceRequest`s from finished traces
//! with the prost types (the reference), [`wire`] writes the same bytes directly (what the
//! exporter sends), [`export`] queues and posts them.

pub mod encode;
pub mod export;
mod queue;
pub mod wire;

pub use encode::{encode_batch, ResourceInfo};
pub use export::{
    spawn, traces_uri, ExportHandle, ExporterTask, OtlpOptions, CONTENT_TYPE_PROTOBUF,
};
pub use wire::{encode_request, encode_request_sized, RequestEncoder};
