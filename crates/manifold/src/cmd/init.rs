//! `manifold init`: write the commented starter config.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Write a commented starter config: one composed route, one proxy route, the production keys
/// that matter first. `manifold check` accepts it as written.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  manifold init -o manifold.toml && manifold check -c manifold.toml\n\n\
Without -o the config goes to standard output. An existing file is never overwritten unless\n\
--force is given."
)]
pub(crate) struct Args {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace the file if it exists.
    #[arg(long, requires = "output")]
    force: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = manifold_config::STARTER_CONFIG;
    let Some(path) = args.output else {
        return super::write_stdout(text.as_bytes());
    };
    // Said first: "already exists; pass --force" would only lead to "Is a directory".
    if path.is_dir() {
        anyhow::bail!(
            "{} is a directory: give the path of the file to write, e.g. {}",
            path.display(),
            path.join("manifold.toml").display()
        );
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // Atomic "create only if absent": no window in which a file appearing between a check
        // and the write would be clobbered, and a symlink at the path is not followed.
        options.create_new(true);
    }
    let mut file = match options.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {} already exists; pass --force to replace it",
                path.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {}; next: manifold check -c {}",
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
