//! mmm-control: MMM's control commands against a running monitor, plus `import-mmm`
//! and `gen-key` which work offline. Success lines start with `OK: `, refusals with
//! `ERROR: `; the exit status is 0 or 1 accordingly.

use anyhow::Context;
use clap::Parser;
use mmm_common::config::{ClusterKey, Config, ControlAddr};
use mmm_monitor::control::{client, command::HELP, Command, CommandError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "mmm-control",
    version,
    about = "Control the mmm monitor (MySQL-MMM's commands and output)",
    after_help = HELP,
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
    /// The command and its arguments; `help` lists them. Without the monitor:
    /// `import-mmm COMMON.conf MON.conf [AGENT.conf]`, `gen-key`, and `check-cluster` (a
    /// live pre-flight of every configured server).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let argv = match cluster_config(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            println!("ERROR: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Args::parse_from(argv);
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            println!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match args.command.first().map(String::as_str) {
        Some("gen-key") => {
            println!(
                "{}",
                ClusterKey::generate_hex().context("reading random bytes for the key")?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some("import-mmm") => return import(&args.command[1..]),
        Some("check-cluster") => return check_cluster(args),
        _ => {}
    }
    let command = match Command::parse(&args.command) {
        Ok(c) => c,
        Err(CommandError::Empty) => {
            print!("{HELP}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            println!("ERROR: {e}\n");
            print!("{HELP}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if command == Command::Help {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    // The config gives the address and, for a socket others can reach, the key.
    let config = if args.monitor.is_none() || args.config.exists() {
        match Config::load(&args.config) {
            Ok(c) => Some(c),
            Err(e) if args.monitor.is_none() => anyhow::bail!("{}", e.lines().join("\n")),
            Err(_) => None,
        }
    } else {
        None
    };
    let addr = match &args.monitor {
        Some(a) => given_addr(a)?,
        None => config
            .as_ref()
            .map(|c| c.monitor.control.clone())
            .context("no control address")?,
    };
    let key = match (&config, addr.keyed()) {
        (Some(c), true) => {
            Some(ClusterKey::load(&c.security.key).context("loading the cluster key")?)
        }
        _ => None,
    };
    match client::request(
        &addr,
        &command.to_string(),
        Duration::from_secs(args.timeout),
        key.as_ref(),
    ) {
        Ok(answer) => {
            print!("{answer}");
            let refused = answer.lines().any(|l| l.starts_with("ERROR:"));
            Ok(if refused {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(e @ client::ClientError::Connect { .. }) => {
            println!("ERROR: Can't connect to monitor daemon!");
            eprintln!("{:#}", anyhow::Error::from(e));
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The live pre-flight of every configured server: one line per finding, exit 1 on errors.
fn check_cluster(args: &Args) -> anyhow::Result<ExitCode> {
    let config =
        Config::load(&args.config).map_err(|e| anyhow::anyhow!("{}", e.lines().join("\n")))?;
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
        Err(e) => println!("WARNING: the agents' eBPF probes were not checked: the monitor did not answer `show --json` ({e:#})"),
    }
    let findings = mmm_monitor::preflight::judge(&config, &facts);
    for f in &findings {
        println!("{f}");
    }
    let failed = findings
        .iter()
        .any(|f| f.level == mmm_monitor::preflight::Level::Error);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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

fn import(files: &[String]) -> anyhow::Result<ExitCode> {
    if !(2..=3).contains(&files.len()) {
        println!(
            "ERROR: usage: mmm-control import-mmm mmm_common.conf mmm_mon.conf [mmm_agent.conf]"
        );
        return Ok(ExitCode::FAILURE);
    }
    let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let imported = mmm_common::legacy::import(&paths)?;
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", imported.toml);
    Ok(ExitCode::SUCCESS)
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
    use super::cluster_config;

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
