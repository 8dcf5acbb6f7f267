//! mmm-monitor: the monitor daemon (foreground, logs to stderr).

use clap::Parser;
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
    /// Check the config (this file, or --config's) and exit: prints `OK` or every
    /// problem found, one per line, and exits 1 on problems.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    check_config: Option<PathBuf>,
    /// This monitor's name in a fleet (`[coordination]`); default: the hostname.
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        // `-` stands for "no FILE given": check --config's file.
        let path = if path.as_os_str() == "-" {
            &args.config
        } else {
            path
        };
        return check_config(path);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::Level::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            return ExitCode::FAILURE;
        }
    };
    let key = match ClusterKey::load(&config.security.key) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!("{}", mmm_monitor::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
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
        mmm_monitor::daemon::run(config, key, name, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", mmm_monitor::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in c.warnings() {
                println!("WARNING: {w}");
            }
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                println!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}
