//! The config file's JSON Schema, for `manifold schema` and TOML editors (taplo, Even Better
//! TOML), derived from the raw structs the parser deserializes.
//!
//! Deriving it (rather than writing it by hand) is what keeps it honest: a key the parser reads
//! is in the schema with the type serde reads it as, a key it refuses (`deny_unknown_fields`) is
//! refused by the schema too. What the schema cannot say — that a call names a declared
//! upstream, that a template reads a call that exists, the ranges of numbers — `manifold check`
//! says, with file:line:col. So the schema is a floor: a file that fails it fails `check`; a
//! file that passes it may still fail `check`. The few fields the parser reads as a loose TOML
//! value and interprets later are described by the small types below.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// The JSON Schema (draft 2020-12) of a Manifold config file, TOML read as JSON.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(crate::compile::RawConfig);
    schema.insert("title".into(), "Manifold configuration".into());
    schema.insert(
        "description".into(),
        "A Manifold gateway config (TOML). `manifold check` validates what a schema cannot: \
         names, templates, dependency cycles and value ranges."
            .into(),
    );
    schema.to_value()
}

/// `telemetry.traces`: `false` (no trace store) or its bounds (see `trace_store`).
pub(crate) struct TracesValue;

impl JsonSchema for TracesValue {
    fn schema_name() -> Cow<'static, str> {
        "Traces".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The live trace store behind admin /traces: false turns it off; a table sets its bounds.",
            "oneOf": [
                { "type": "boolean" },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "recent": { "type": "integer", "minimum": 0 },
                        "slowest": { "type": "integer", "minimum": 0 },
                        "errors_for": { "type": "string", "pattern": crate::schema::DURATION_PATTERN },
                        "max_errors": { "type": "integer", "minimum": 0 }
                    }
                }
            ]
        })
    }
}

/// `server.concurrency`: `"adaptive"` or a fixed number of requests (see `compile::server::concurrency`).
pub(crate) struct ConcurrencyValue;

impl JsonSchema for ConcurrencyValue {
    fn schema_name() -> Cow<'static, str> {
        "Concurrency".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "\"adaptive\" (the default), or the most requests worked on at once.",
            "oneOf": [
                { "const": "adaptive" },
                { "type": "integer", "minimum": 1 }
            ]
        })
    }
}

/// One entry of `retry.on`: a name or a 5xx status, as a string or a number (see
/// `upstream_policy::retry_on`).
pub(crate) struct RetryOnValue;

impl JsonSchema for RetryOnValue {
    fn schema_name() -> Cow<'static, str> {
        "RetryOn".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "\"connect\", \"reset\", \"timeout\", or a status from 500 to 599.",
            "oneOf": [
                { "enum": ["connect", "reset", "timeout"] },
                { "type": "string", "pattern": "^5[0-9][0-9]$" },
                { "type": "integer", "minimum": 500, "maximum": 599 }
            ]
        })
    }
}

// Durations are written as humantime strings (`"250ms"`, `"1h 30m"`) everywhere in the config;
// the schema shows them as strings with one pattern. It is deliberately looser than humantime —
// any number followed by a unit word, repeated — so an editor never flags a duration the parser
// accepts; the parser stays the judge of the unit names.

/// What a duration string looks like: `"0"`, or one or more `<number><unit>` groups, spaces
/// allowed between them (`"250ms"`, `"2s"`, `"1h 30m"`).
pub(crate) const DURATION_PATTERN: &str =
    r"^\s*(0|[0-9]+\s*[A-Za-zµ]+(\s*[0-9]+\s*[A-Za-zµ]+)*)\s*$";

/// The schema of a duration field: a string matching [`DURATION_PATTERN`].
pub(crate) fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": "A duration: a number and a unit, e.g. \"250ms\", \"2s\", \"5m\", \"1h 30m\"."
    })
}
