//! [`Spanned`]: toml's `Spanned` (a value and where it was written), plus the JSON Schema of the
//! value it wraps.
//!
//! The raw structs the parser deserializes are also what `manifold schema` derives the config's
//! JSON Schema from, so the schema cannot drift from the parser: a key added to a raw struct is
//! in the schema with the type serde reads. toml's `Spanned` has no `JsonSchema` and the orphan
//! rule forbids adding one, hence this transparent wrapper. It derefs to toml's type, so
//! `.span()` and `.get_ref()` read as before; deserializing hands the deserializer straight to
//! toml's `Spanned`, whose special-cased handshake with the TOML deserializer records the span.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use std::borrow::Cow;
use std::ops::Deref;

/// A value read from the config file and the byte range it was read from.
#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub(crate) struct Spanned<T>(toml::Spanned<T>);

impl<T> Deref for Spanned<T> {
    type Target = toml::Spanned<T>;

    fn deref(&self) -> &toml::Spanned<T> {
        &self.0
    }
}

/// Written exactly as the value: where a value was written is no part of its schema.
impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::Spanned;

    #[derive(serde::Deserialize)]
    struct Doc {
        key: Spanned<String>,
    }

    #[test]
    fn keeps_the_span_toml_records() {
        let text = "key = \"value\"\n";
        let doc: Doc = toml::from_str(text).unwrap();
        assert_eq!(doc.key.get_ref(), "value");
        assert_eq!(&text[doc.key.span()], "\"value\"");
    }
}
