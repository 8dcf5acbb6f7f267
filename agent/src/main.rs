//! mmm-agent: the per-host agent (foreground, logs to stderr).

use anyhow::Context;
use clap::{CommandFactory, Parser};
use mmm_agent::caps::{self, Capability};
use mmm_agent::garp::GarpSender;
use mmm_agent::probe::Probe;
use mmm_agent::reconcile::error_chain;
use mmm_agent::rst::Rst;
use mmm_agent::server::{Agent, Resources};
use mmm_agent::startup;
use mmm_agent::vip::Netlink;
use mmm_common::cli::{init_logging, Exit, Generate, LogFormat};
use mmm_common::config::{ClusterKey, Config, Host};
use mmm_common::proto::ProbeState;
use mmm_common::types::ProbeMode;
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
    #[arg(long, required_unless_present_any = ["man", "completions"])]
    host: Option<String>,
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
    init_logging(args.log_format);
    let (config, key) = match load(&args) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("{e:#}");
            return Exit::Config.into();
        }
    };
    match run(&args, config, key) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            // `{:#}`: the whole chain, "op: cause: cause".
            tracing::error!("{e:#}");
            Exit::Failed.into()
        }
    }
}

/// The config, with this agent's host in it, and the cluster key: what exit code 3 covers.
fn load(args: &Args) -> anyhow::Result<(Config, ClusterKey)> {
    // Every problem of the file, one per line.
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!(e.lines().join("\n")))?;
    let host = args.host.as_deref().unwrap_or_default();
    if config.host(host).is_none() {
        let known: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
        anyhow::bail!(
            "--host {host:?} is not in {} (hosts: {})",
            args.config.display(),
            known.join(", ")
        );
    }
    let key = ClusterKey::load(&config.security.key)?;
    Ok((config, key))
}

fn run(args: &Args, config: Config, key: ClusterKey) -> anyhow::Result<()> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let host: &Host = config
        .host(args.host.as_deref().unwrap_or_default())
        .context("the host vanished from the loaded config")?;
    let _span = tracing::info_span!("agent", host = %host.name).entered();

    let held = caps::restrict()?;
    tracing::info!(capabilities = %held.names(), "capabilities held (every other one dropped)");
    for line in held.missing() {
        tracing::warn!("{line}");
    }
    // After restrict(), not before: a root-started agent no longer has CAP_DAC_OVERRIDE,
    // so files are checked with the access the agent has from now on (drop_after_start
    // below drops nothing that matters to files).
    let user = startup::User::current();
    startup::check(&config, host, &held, &user)?;
    tracing::info!(user = %user, state_dir = %config.agent.state_dir.display(), "start-up checks passed");
    let probe_caps = held.has(Capability::CAP_BPF) && held.has(Capability::CAP_PERFMON);
    let probe_mode = config.agent.probe;
    let (mysql_port, pid_file) = (host.mysql_port, host.mysql_pid_file.clone());

    // Everything that needs CAP_NET_RAW, CAP_BPF or CAP_PERFMON happens here, on the only
    // thread, before those are dropped and before the runtime starts its threads.
    let garp = match GarpSender::open() {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!("{}: VIPs will move without gratuitous ARP", error_chain(&e));
            None
        }
    };
    let probe = match (probe_mode, probe_caps) {
        (ProbeMode::Off, _) => None,
        (ProbeMode::Auto | ProbeMode::Required, false) => {
            tracing::warn!("probe = auto: CAP_BPF or CAP_PERFMON missing, probe=off (deaths are seen by the monitor's checks only)");
            None
        }
        (_, true) => match Probe::load(mysql_port, pid_file.as_deref()) {
            Ok((probe, known)) => {
                tracing::info!(watching = known, "eBPF liveness probe loaded");
                Some((probe, known))
            }
            Err(e) if probe_mode == ProbeMode::Required => {
                return Err(anyhow::Error::new(e).context("probe = \"required\""))
            }
            Err(e) => {
                tracing::warn!("probe = auto: {}: probe=off", error_chain(&e));
                None
            }
        },
    };
    let rst = if held.has(Capability::CAP_BPF) {
        match Rst::load(&host.cluster_interface, mysql_port) {
            Ok(r) => {
                tracing::info!(interface = %host.cluster_interface, "RST program attached: clients of a released VIP are answered at once");
                Some(r)
            }
            Err(e) => {
                tracing::warn!(
                    "{}: clients of a released VIP wait for their TCP retransmission",
                    error_chain(&e)
                );
                None
            }
        }
    } else {
        None
    };
    let kept = caps::drop_after_start(&held)?;
    tracing::info!(capabilities = %kept.names(), "capabilities held from now on (probe loaded, ARP socket open)");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let host_name = host.name.clone();
    let (config_path, running) = (args.config.clone(), config.clone());
    runtime.block_on(async move {
        mmm_agent::reload::spawn(config_path, running);
        let netlink = Netlink::connect()?;
        let (agent, listener) = Agent::start(config, &host_name, key, Resources { netlink, garp, rst })
            .await
            ?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening for the monitor");
        if let Some(addr) = mmm_agent::http::start(agent.clone()).await? {
            tracing::info!(%addr, "HTTP listening (/writer, /reader, /health, /metrics)");
        }
        match probe {
            None => agent.set_probe_state(ProbeState::Off),
            Some((probe, known)) => {
                agent.set_probe_state(if known { ProbeState::Watching } else { ProbeState::Searching });
                let a = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = probe.run(a.clone()).await {
                        tracing::error!("{}: probe=off", error_chain(&e));
                        a.set_probe_state(ProbeState::Off);
                    }
                });
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = agent.clone().serve(listener) => Ok(()),
            _ = term.recv() => {
                // Roles stay as they are: an agent restart must not interrupt writes, and
                // the monitor never promotes over a host whose only fault is a silent agent.
                tracing::info!("SIGTERM: exiting, VIPs and read_only left as they are");
                Ok(())
            }
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
