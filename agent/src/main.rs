//! mmm-agent: the per-host agent (foreground, logs to stderr).

use clap::Parser;
use mmm_common::config::{ClusterKey, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mmm-agent",
    version,
    about = "The mmm agent for one database host (runs in the foreground)"
)]
struct Args {
    /// Config file (the same one the monitor reads).
    #[arg(long, short, default_value = "/etc/mmm/mmm.toml")]
    config: PathBuf,
    /// The host this agent serves, as named in the config (MMM's `this`).
    #[arg(long)]
    host: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::Level::INFO.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                tracing::error!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let Some(host) = config.host(&args.host) else {
        let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        tracing::error!(
            "--host {:?} is not in {} (hosts: {})",
            args.host,
            args.config.display(),
            known.join(", ")
        );
        return ExitCode::FAILURE;
    };
    if let Err(e) = ClusterKey::load(&config.security.key) {
        tracing::error!("{:#}", anyhow::Error::from(e));
        return ExitCode::FAILURE;
    }
    tracing::error!(host = %host.name, ip = %host.ip, "the agent daemon is not implemented yet");
    ExitCode::FAILURE
}
