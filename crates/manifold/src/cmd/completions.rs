//! `manifold completions SHELL`: shell completion scripts, generated from the same clap
//! definitions that parse the command line, so they cannot fall behind it.

use std::process::ExitCode;

/// Print a completion script for a shell.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
manifold completions bash > ~/.local/share/bash-completion/completions/manifold\n  \
manifold completions zsh > ~/.zfunc/_manifold      # with fpath+=(~/.zfunc) in ~/.zshrc\n  \
manifold completions fish > ~/.config/fish/completions/manifold.fish")]
pub(crate) struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub(crate) fn run(args: Args, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "manifold", &mut out);
    super::write_stdout(&out)
}
