//! mmm-control: MMM's control commands against a running monitor, plus `import-mmm`,
//! `gen-key`, `check-cluster`, `completions` and `man`, which need no monitor. The
//! monitor's answers print as MMM printed them: `OK: ` lines on stdout, a refusal
//! (`ERROR: `) on stderr; errors of mmm-control itself go to stderr too. Exit codes:
//! `mmm_common::cli::Exit`.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use mmm_common::cli::{self as cli, Exit};
use mmm_common::config::{ClusterKey, Config, ControlAddr};
use mmm_monitor::control::command::{help, help_lines, COMMANDS, LOCAL_COMMANDS};
use mmm_monitor::control::{client, CommandError, ControlCommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "mmm-control",
    version,
    about = "Control the mmm monitor (MySQL-MMM's commands and output)",
    after_help = full_help(),
    disable_help_subcommand = true
)]
struct Args {
    /// Config file; the monitor's control address is read from it.
    #[arg(long, short, default_value = "/etc/mmm/mmm.toml")]
    config: PathBuf,
    /// Control address (IP:PORT or a unix socket path); overrides the config's.
    #[arg(long)]
    monitor: Option<String>,
    /// Seconds to wait for the monitor's answer.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The command and its arguments; `help` lists them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `help`: the monitor's commands (MMM's list), then those that need no monitor.
fn full_help() -> String {
    format!(
        "{}\nWithout the monitor:\n{}",
        help(),
        help_lines(&LOCAL_COMMANDS)
    )
}

/// The exit codes (`Exit`), for the man page.
const EXIT_STATUS: &str = "
Exit status: 0 success; 1 the monitor refused the command, or check-cluster found an
error; 2 usage (unknown command, wrong arguments); 3 the config or the key file is
invalid or unreadable; 4 the monitor cannot be reached.
";

/// The clap definition with every command as a subcommand, for completions: the parser
/// itself takes the command as words, as MMM's did.
fn cli_with_commands() -> clap::Command {
    let mut cmd = Args::command().mut_arg("command", |a| a.hide(true));
    for (name, args, about) in COMMANDS.iter().chain(&LOCAL_COMMANDS) {
        let mut sub = clap::Command::new(*name).about(about.replace('\n', " "));
        if !args.is_empty() {
            sub = sub.override_usage(format!("{name} {args}"));
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

/// An error and the exit code it stands for.
struct Failure {
    exit: Exit,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure {
            exit: Exit::Failed,
            error,
        }
    }
}

trait ExitWith<T> {
    fn exit_with(self, exit: Exit) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ExitWith<T> for Result<T, E> {
    fn exit_with(self, exit: Exit) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            exit,
            error: e.into(),
        })
    }
}

fn main() -> ExitCode {
    let argv = match cluster_config(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return Exit::Usage.into();
        }
    };
    let args = Args::parse_from(argv);
    match run(&args) {
        Ok(exit) => exit.into(),
        Err(Failure { exit, error }) => {
            eprintln!("ERROR: {error:#}");
            exit.into()
        }
    }
}

type LocalCommand = fn(&Args) -> Result<Exit, Failure>;

/// The commands that need no monitor, by name (every one of LOCAL_COMMANDS: tested).
fn local(name: &str) -> Option<LocalCommand> {
    Some(match name {
        "gen-key" => |_| {
            let key = ClusterKey::generate_hex().context("reading random bytes for the key")?;
            println!("{key}");
            Ok(Exit::Ok)
        },
        "import-mmm" => |args| import(&args.command[1..]),
        "check-cluster" => check_cluster,
        "completions" => completions,
        "man" => |_| {
            // The commands are words after the options, as MMM's were: the page lists
            // them in its text, not as subcommands with pages of their own.
            let page = Args::command().after_long_help(format!("{}{EXIT_STATUS}", full_help()));
            cli::print_man(page, "1").context("writing the man page")?;
            Ok(Exit::Ok)
        },
        _ => return None,
    })
}

fn completions(args: &Args) -> Result<Exit, Failure> {
    let shell = match &args.command[1..] {
        [shell] => shell
            .parse::<cli::Shell>()
            .map_err(|e| anyhow::anyhow!("completions {shell:?}: {e}"))
            .exit_with(Exit::Usage)?,
        _ => {
            return Err(anyhow::anyhow!(
                "usage: mmm-control completions bash|zsh|fish|elvish|powershell"
            ))
            .exit_with(Exit::Usage)
        }
    };
    cli::print_completions(cli_with_commands(), shell);
    Ok(Exit::Ok)
}

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path)
        .map_err(|e| anyhow::anyhow!("{}", e.lines().join("\n")))
        .exit_with(Exit::Config)
}

fn run(args: &Args) -> Result<Exit, Failure> {
    if let Some(command) = args.command.first().and_then(|c| local(c)) {
        return command(args);
    }
    let command = match ControlCommand::parse(&args.command) {
        Ok(c) => c,
        Err(CommandError::Empty) => {
            print!("{}", full_help());
            return Ok(Exit::Ok);
        }
        Err(e) => {
            eprintln!("ERROR: {e}\n");
            eprint!("{}", full_help());
            return Ok(Exit::Usage);
        }
    };
    if command == ControlCommand::Help {
        print!("{}", full_help());
        return Ok(Exit::Ok);
    }
    // The config gives the address and, for a socket others can reach, the key.
    let config = if args.monitor.is_none() || args.config.exists() {
        match load_config(&args.config) {
            Ok(c) => Some(c),
            Err(e) if args.monitor.is_none() => return Err(e),
            Err(_) => None,
        }
    } else {
        None
    };
    let addr = match &args.monitor {
        Some(a) => given_addr(a).exit_with(Exit::Usage)?,
        None => config
            .as_ref()
            .map(|c| c.monitor.control.clone())
            .context("no control address")?,
    };
    let key = match (&config, addr.keyed()) {
        (Some(c), true) => Some(
            ClusterKey::load(&c.security.key)
                .context("loading the cluster key")
                .exit_with(Exit::Config)?,
        ),
        _ => None,
    };
    match client::request(
        &addr,
        &command.to_string(),
        Duration::from_secs(args.timeout),
        key.as_ref(),
    ) {
        Ok(answer) => {
            // A refusal is one `ERROR: ` answer: the whole of it is the error.
            if answer.starts_with("ERROR:") {
                eprint!("{answer}");
                return Ok(Exit::Failed);
            }
            print!("{answer}");
            let refused = answer.lines().any(|l| l.starts_with("ERROR:"));
            Ok(if refused { Exit::Failed } else { Exit::Ok })
        }
        Err(e @ client::ClientError::Connect { .. }) => {
            eprintln!("ERROR: Can't connect to monitor daemon!");
            eprintln!("{:#}", anyhow::Error::from(e));
            Ok(Exit::Unreachable)
        }
        // Connected, but the monitor did not answer in --timeout (or closed the socket).
        Err(e @ client::ClientError::Io { .. }) => {
            Err(anyhow::Error::from(e)).exit_with(Exit::Unreachable)
        }
        Err(e) => Err(anyhow::Error::from(e).into()),
    }
}

/// The live pre-flight of every configured server: one line per finding, exit 1 on errors.
fn check_cluster(args: &Args) -> Result<Exit, Failure> {
    let config = load_config(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let per_host = Duration::from_secs(args.timeout.clamp(1, 30));
    let mut facts = runtime.block_on(mmm_monitor::preflight::gather(&config, per_host));
    // The agents' probes, as the running monitor sees them: a probe that watches no
    // mysqld is an error no server variable shows.
    match monitor_show_json(args, &config) {
        Ok(show) => {
            let probes = mmm_monitor::preflight::probes_from_show(&show);
            for f in &mut facts {
                f.probe = probes.get(&f.host).copied();
            }
        }
        Err(e) => eprintln!("WARNING: the agents' eBPF probes were not checked: the monitor did not answer `show --json` ({e:#})"),
    }
    let findings = mmm_monitor::preflight::judge(&config, &facts);
    for f in &findings {
        println!("{f}");
    }
    let failed = findings
        .iter()
        .any(|f| f.level == mmm_monitor::preflight::Level::Error);
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// `--monitor`: a unix socket path or IP:PORT.
fn given_addr(a: &str) -> anyhow::Result<ControlAddr> {
    if a.starts_with('/') {
        return Ok(ControlAddr::Unix(a.into()));
    }
    Ok(ControlAddr::Tcp(a.parse().with_context(|| {
        format!("--monitor {a:?} is not IP:PORT or a socket path")
    })?))
}

/// The monitor's `show --json`, at the control address `--monitor` or the config names.
fn monitor_show_json(args: &Args, config: &Config) -> anyhow::Result<serde_json::Value> {
    let addr = match &args.monitor {
        Some(a) => given_addr(a)?,
        None => config.monitor.control.clone(),
    };
    let key = if addr.keyed() {
        Some(ClusterKey::load(&config.security.key).context("loading the cluster key")?)
    } else {
        None
    };
    let answer = client::request(&addr, "show --json", Duration::from_secs(5), key.as_ref())?;
    serde_json::from_str(&answer).context("parsing the monitor's show --json")
}

fn import(files: &[String]) -> Result<Exit, Failure> {
    if !(2..=3).contains(&files.len()) {
        return Err(anyhow::anyhow!(
            "usage: mmm-control import-mmm mmm_common.conf mmm_mon.conf [mmm_agent.conf]"
        ))
        .exit_with(Exit::Usage);
    }
    let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let imported = mmm_common::legacy::import(&paths).exit_with(Exit::Config)?;
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", imported.toml);
    Ok(Exit::Ok)
}

/// MMM's `mmm_control @CLUSTER COMMAND`: `@NAME` before the command stands for
/// `--config /etc/mmm/NAME.toml`, so one host can drive several clusters.
fn cluster_config(mut argv: Vec<String>) -> Result<Vec<String>, String> {
    let mut i = 1;
    let mut explicit_config = false;
    while i < argv.len() {
        let arg = argv[i].as_str();
        match arg {
            "--config" | "-c" => {
                explicit_config = true;
                i += 2;
            }
            "--monitor" | "--timeout" => i += 2,
            a if a.starts_with("--config=") => {
                explicit_config = true;
                i += 1;
            }
            a if a.starts_with('@') => {
                let name = &a[1..];
                let valid = !name.is_empty()
                    && !name.starts_with(['.', '-'])
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    return Err(format!(
                        "{a:?}: a cluster name uses letters, digits, '-', '_' and '.' only"
                    ));
                }
                if explicit_config {
                    return Err(format!("{a} and --config both name the config: give one"));
                }
                let path = format!("/etc/mmm/{name}.toml");
                argv.splice(i..=i, ["--config".to_string(), path]);
                return Ok(argv);
            }
            a if a.starts_with('-') => i += 1,
            // The command: no @NAME before it.
            _ => return Ok(argv),
        }
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `help` lists every command mmm-control runs itself, and each one it lists runs.
    #[test]
    fn help_lists_every_local_command_and_each_dispatches() {
        for (name, _, _) in LOCAL_COMMANDS {
            assert!(local(name).is_some(), "{name} is in help but does not run");
            assert!(full_help().contains(&format!("\n    {name}")), "{name}");
        }
        for (name, _, _) in COMMANDS {
            assert!(full_help().contains(&format!("\n    {name}")), "{name}");
        }
        assert!(local("show").is_none());
    }

    /// Completions come from the same definitions: every command is a subcommand there.
    #[test]
    fn the_generated_definition_has_every_command() {
        let cmd = cli_with_commands();
        cmd.clone().debug_assert();
        for (name, _, _) in COMMANDS.iter().chain(&LOCAL_COMMANDS) {
            assert!(cmd.find_subcommand(name).is_some(), "{name}");
        }
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn at_name_stands_for_its_config_file() {
        assert_eq!(
            cluster_config(args("mmm-control @main show")).unwrap(),
            args("mmm-control --config /etc/mmm/main.toml show")
        );
        assert_eq!(
            cluster_config(args("mmm-control --timeout 5 @c2 move_role writer db2")).unwrap(),
            args("mmm-control --timeout 5 --config /etc/mmm/c2.toml move_role writer db2")
        );
        // After the command, an @ word is the command's business.
        assert_eq!(
            cluster_config(args("mmm-control show @x")).unwrap(),
            args("mmm-control show @x")
        );
        assert!(cluster_config(args("mmm-control -c /x.toml @main show"))
            .unwrap_err()
            .contains("both name the config"));
        assert!(cluster_config(args("mmm-control @../etc show")).is_err());
        assert!(cluster_config(args("mmm-control @ show")).is_err());
    }
}
