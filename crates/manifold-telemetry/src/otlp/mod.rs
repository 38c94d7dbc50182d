//! OTLP/HTTP protobuf export: [`encode`] builds `ExportTraceServiceRequest`s from finished traces,
//! [`export`] queues and posts them.

pub mod encode;
pub mod export;

pub use encode::{encode_batch, ResourceInfo};
pub use export::{
    spawn, traces_uri, ExportHandle, ExporterTask, OtlpOptions, CONTENT_TYPE_PROTOBUF,
};
