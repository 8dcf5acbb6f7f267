//! mmm-monitor: the monitor daemon (foreground, logs to stderr).

use clap::{CommandFactory, Parser};
use mmm_common::cli::{init_logging, Exit, Generate, LogFormat};
use mmm_common::config::{ClusterKey, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mmm-monitor",
    version,
    about = "The mmm monitor daemon (runs in the foreground)"
)]
struct Args {
    /// Config file.
    #[arg(long, short, default_value = "/etc/mmm/mmm.toml")]
    config: PathBuf,
    /// Check the config (this file, or --config's) and exit: prints `OK`, or every
    /// problem found on stderr, one per line, and exits 3.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    check_config: Option<PathBuf>,
    /// This monitor's name in a fleet (`[coordination]`); default: the hostname.
    #[arg(long)]
    name: Option<String>,
    /// Log lines as text or as one JSON object each (on stderr either way).
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(flatten)]
    generate: Generate,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(exit) = args.generate.run(Args::command(), "8") {
        return exit;
    }
    if let Some(path) = &args.check_config {
        // `-` stands for "no FILE given": check --config's file.
        let path = if path.as_os_str() == "-" {
            &args.config
        } else {
            path
        };
        return check_config(path);
    }
    init_logging(args.log_format);
    let config = match Config::load(&args.config) {
        Ok(c) => {
            for w in c.warnings() {
                tracing::warn!("{w}");
            }
            c
        }
        Err(e) => {
            for line in e.lines() {
                tracing::error!("{line}");
            }
            return Exit::Config.into();
        }
    };
    let key = match ClusterKey::load(&config.security.key) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!("{}", mmm_monitor::error_chain(&e));
            return Exit::Config.into();
        }
    };
    // One thread: the monitor's work is thousands of small wake-ups a second (a heartbeat
    // per agent every 100 ms), which a work-stealing runtime spread over threads at the
    // price of a cross-thread wake-up each: at 1000 hosts it cost a third more CPU. The
    // core's longest step (a pass over every host) is about a millisecond at 1000 hosts;
    // the event loop gives the thread away after such a step, and a link never waits for
    // the core (daemon/outbox.rs), so the heartbeats go on while it works.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!("installing the SIGTERM handler: {e}");
                        return std::future::pending().await;
                    }
                };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
            }
        };
        let name = args.name.unwrap_or_else(mmm_monitor::daemon::hostname);
        mmm_monitor::daemon::run(config, args.config, key, name, shutdown).await
    });
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            tracing::error!("{}", mmm_monitor::error_chain(&e));
            Exit::Failed.into()
        }
    }
}

/// `--check-config`: `OK` on stdout; warnings and problems on stderr, one per line,
/// and exit 3 on problems.
fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("WARNING: {w}");
            }
            println!("OK");
            Exit::Ok.into()
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            Exit::Config.into()
        }
    }
}
