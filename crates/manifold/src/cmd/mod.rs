//! One module per subcommand. Each exposes `Args` (clap) and `run`, returning the process exit code.

pub(crate) mod admin;
pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod bench_peer;
pub(crate) mod cache;
pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod demo;
pub(crate) mod init;
pub(crate) mod load;
pub(crate) mod queue;
pub(crate) mod reload;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod sim;

/// `--timer`: how `manifold sim` waits out service times and `manifold load` waits for send
/// times.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub(crate) enum TimerArg {
    /// A dedicated timer thread: each wait ends within tens of microseconds of its deadline.
    #[default]
    Precise,
    /// tokio's timer: every wait rounded up to the next millisecond tick.
    Tokio,
}

impl TimerArg {
    pub(crate) fn timer(self) -> manifold_timer::Timer {
        match self {
            TimerArg::Precise => manifold_timer::Timer::precise(),
            TimerArg::Tokio => manifold_timer::Timer::Tokio,
        }
    }
}

/// Raise this process's soft limit on open files to its hard limit, and return the limit now in
/// force (`None` where it cannot be read). Every socket is a file: a gateway, a simulator or a
/// load generator held to a distribution's default soft limit (often 1,024) fails to accept or
/// connect long before the machine is busy. Go's runtime does the same at start-up.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            Some(limit)
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Build the multi-threaded tokio runtime the async subcommands run on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`), through a bounded queue
/// and a thread of their own (`manifold_gateway::log_out`): a stderr nobody reads drops lines,
/// counted, instead of holding the request workers that log. Keep the guard until the command
/// has ended: dropping it writes out what is queued (waiting at most a second).
pub(crate) fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = manifold_gateway::log_out::writer(
        "log",
        manifold_gateway::log_out::LOG_LINES,
        std::io::stderr(),
    );
    // Colours on a terminal only: in a file, a pipe or journald they are escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init();
    guard
}

/// Write `bytes` to standard output. A reader that stops early (`manifold schema | head`) is
/// not an error of the command.
pub(crate) fn write_stdout(bytes: &[u8]) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(std::process::ExitCode::SUCCESS),
    }
}

/// A file a command writes at the end of a long run (`manifold demo --report`, `manifold
/// analyze --html`), opened before the run: a path that cannot be written fails in a second,
/// not after minutes of measuring. A file this created is removed again if the run fails, so a
/// failed run leaves no empty report behind; an existing one keeps its content until
/// [`LateOutput::write`].
pub(crate) struct LateOutput {
    path: std::path::PathBuf,
    file: std::fs::File,
    created: bool,
    written: bool,
}

impl LateOutput {
    pub(crate) fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if path.is_dir() {
            anyhow::bail!("cannot write {}: it is a directory", path.display());
        }
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            created,
            written: false,
        })
    }

    /// Replace the file's content with `bytes`.
    pub(crate) fn write(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use anyhow::Context as _;
        use std::io::Write as _;
        self.written = true;
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(bytes))
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for LateOutput {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
