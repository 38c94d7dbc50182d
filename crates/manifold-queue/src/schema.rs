//! JSON Schema pieces shared by every section of the config file (feature `schema`).
//!
//! Durations are written as humantime strings (`"250ms"`, `"1h 30m"`) everywhere in the config,
//! and parsed into `Duration`s; the schema shows them as strings with one pattern, defined here
//! once because this is the lowest crate that parses config durations (manifold-config reuses
//! it). The pattern is deliberately looser than humantime — any number followed by a unit word,
//! repeated — so an editor never flags a duration the parser accepts; the parser stays the
//! judge of the unit names.

use schemars::{json_schema, Schema, SchemaGenerator};

/// What a duration string looks like: `"0"`, or one or more `<number><unit>` groups, spaces
/// allowed between them (`"250ms"`, `"2s"`, `"1h 30m"`).
pub const DURATION_PATTERN: &str = r"^\s*(0|[0-9]+\s*[A-Za-zµ]+(\s*[0-9]+\s*[A-Za-zµ]+)*)\s*$";

/// The schema of a duration field: a string matching [`DURATION_PATTERN`].
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "description": "A duration: a number and a unit, e.g. \"250ms\", \"2s\", \"5m\", \"1h 30m\"."
    })
}
