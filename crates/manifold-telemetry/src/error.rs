//! The one error type: everything here fails only at construction (bad options); recording and
//! exporting never fail the caller, they count.

use thiserror::Error;

/// Why telemetry could not be set up. All are configuration faults, caught at startup.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TelemetryError {
    /// `sample_ratio` outside `0.0..=1.0`, or NaN.
    #[error("sample_ratio must be a number from 0.0 to 1.0, got {0}")]
    SampleRatio(f64),
    /// The OTLP endpoint is not an `http://host[:port][/path]` URL.
    #[error("otlp endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A size or duration option that must be positive is zero, or one is absurdly large.
    #[error("telemetry option {name} = {value}: {reason}")]
    Option {
        /// The option's name.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The exporter's own thread (or its runtime) could not be started.
    #[error("the OTLP exporter's thread could not start: {0}")]
    ExporterThread(String),
}
