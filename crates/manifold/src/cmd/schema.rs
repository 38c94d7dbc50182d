//! `manifold schema`: the config file's JSON Schema, for TOML editors.

use std::process::ExitCode;

/// Print the JSON Schema of the config file.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  manifold schema > manifold.schema.json\n\n\
Then put `#:schema ./manifold.schema.json` at the top of manifold.toml (taplo and Even Better\n\
TOML read it) for completion and validation while editing. The schema checks keys and types;\n\
`manifold check` checks the rest (names, templates, cycles, ranges).")]
pub(crate) struct Args {}

pub(crate) fn run(_: Args) -> anyhow::Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(&manifold_config::json_schema())?;
    text.push('\n');
    super::write_stdout(text.as_bytes())
}
