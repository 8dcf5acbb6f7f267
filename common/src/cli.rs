//! What the three binaries share on their command lines: the exit codes scripts and
//! systemd read, and how logs reach a terminal, a file or the journal.

use std::process::ExitCode;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The exit status of every binary (docs/operations.md, "Exit codes"). The numbers are a
/// contract: scripts and `systemctl` (`RestartPreventExitStatus=`) test them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// A command the monitor refused or that failed; a daemon that stopped on an error.
    Failed = 1,
    /// The command line is wrong: unknown command, wrong arguments (clap's own code too).
    Usage = 2,
    /// The config (or a file it names, such as the key) is invalid or unreadable.
    Config = 3,
    /// mmm-control cannot reach the monitor.
    Unreachable = 4,
}

impl Exit {
    /// Every code, for the docs' table and its test.
    pub const ALL: [Exit; 5] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Config,
        Exit::Unreachable,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, target, spans).
    Json,
}

/// Logs to stderr at INFO (or `RUST_LOG`), in `format`. When stderr is the journal
/// (systemd sets JOURNAL_STREAM to its device and inode), each line starts with its
/// sd-daemon priority (`<3>` error .. `<7>` debug) so `journalctl -p err` works, and
/// carries no timestamp: the journal stamps every line itself.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::Level::INFO.into())
        .from_env_lossy();
    let journal = stderr_is_journal();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Colour only on a terminal: log files and the journal get plain text.
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = match (format, journal) {
        (LogFormat::Text, false) => layer
            .with_ansi(ansi)
            .map_event_format(|f| Priority { journal, inner: f })
            .boxed(),
        (LogFormat::Text, true) => layer
            .with_ansi(false)
            .without_time()
            .map_event_format(|f| Priority { journal, inner: f })
            .boxed(),
        (LogFormat::Json, _) => layer
            .json()
            .map_event_format(|f| Priority { journal, inner: f })
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
}

/// systemd's JOURNAL_STREAM (`DEVICE:INODE`) names the journal's stream socket; it is
/// inherited by children whose stderr went elsewhere, so it counts only if it is fd 2.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (d, i) = v.split_once(':')?;
        Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The sd-daemon(3) priority of a level.
pub fn journal_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// Writes `<N>` before the wrapped format's line when logging to the journal.
struct Priority<F> {
    journal: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.journal {
            write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

pub use clap_complete::Shell;

/// The daemons' hidden `--man` and `--completions SHELL`: what packaging runs to write
/// their man pages and completion scripts.
#[derive(Debug, Clone, clap::Args)]
pub struct Generate {
    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    pub man: bool,
    /// Print the completion script for SHELL and exit.
    #[arg(long, hide = true, value_name = "SHELL")]
    pub completions: Option<Shell>,
}

impl Generate {
    /// Prints what was asked for and says how to exit, or `None` to run as usual.
    pub fn run(&self, cmd: clap::Command, section: &str) -> Option<ExitCode> {
        if let Some(shell) = self.completions {
            print_completions(cmd, shell);
            return Some(Exit::Ok.into());
        }
        if self.man {
            return Some(match print_man(cmd, section) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    eprintln!("ERROR: writing the man page: {e}");
                    Exit::Failed.into()
                }
            });
        }
        None
    }
}

/// Prints the completion script of `cmd` for `shell` on stdout.
pub fn print_completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Prints the man page of `cmd` (roff) on stdout, in `section` (1 commands, 8 daemons).
pub fn print_man(cmd: clap::Command, section: &str) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd)
        .section(section)
        .render(&mut std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/operations.md's table has a row for every code, and no other.
    #[test]
    fn every_exit_code_is_documented() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .expect("docs/operations.md");
        let section = docs
            .split("\n## ")
            .find(|s| s.starts_with("Exit codes"))
            .expect("a section on exit codes");
        let rows: Vec<u8> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect();
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(rows, codes);
    }
}
