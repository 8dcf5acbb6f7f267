//! One term of driving the agents: start the links, hear the agents for the start-up
//! vote, start the checks, then hand over to the event loop.

use super::checks;
use super::event_loop::{event_loop, Inputs};
use super::links::{self, LinkCmd, LinkParams};
use super::ping;
use super::seat::Seat;
use super::shell::Shell;
use super::{notify, Clock, DaemonError, LeadEnded, Process};
use crate::core::{AgentView, Cluster, Event};
use mmm_common::config::{CheckConfig, ClusterKey, Config};
use mmm_common::timing::Timing;
use mmm_common::types::CheckKind;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use tokio::sync::mpsc;

/// Drives the agents until the monitor stops or (in a fleet) loses its leadership; then
/// writes the status and returns. Every task it started ends with it.
///
/// The order matters: the agents are heard before the start-up vote, and the checks
/// start only once the core knows who the writer is.
pub async fn lead<S: Seat>(
    process: &mut Process,
    seat: S,
    mut cluster: Cluster,
    clock: Clock,
) -> Result<LeadEnded, DaemonError> {
    let config = process.config.clone();
    let timing = process.timing;
    let _driving = process.driving.hold();
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4096);
    let (check_tx, check_rx) = mpsc::channel::<checks::Sample>(4096);
    // Dropped on return: every link and check of this term ends with it.
    let mut tasks = tokio::task::JoinSet::new();
    let links = start_links(
        &config,
        &timing,
        &process.key,
        &seat,
        clock,
        (&ev_tx, &process.metrics),
        &mut tasks,
    );
    let (reports, early) = hear_agents(&config, &timing, &mut ev_rx).await;
    // The term may have ended while the agents were heard (up to 2 x agent_timeout):
    // nothing of it may be decided then.
    if seat.is_deposed() {
        tracing::error!("leadership lost before the start-up vote: standing by");
        return Ok(LeadEnded::Deposed);
    }
    // A leader that hears no agent at all is most likely the one cut off: acting on
    // that view (hosts failing, a writer fenced through etcd) would stop writes for
    // nothing. It gives way to a monitor that may reach them.
    if seat.gives_way_unheard() && reports.is_empty() && !config.hosts.is_empty() {
        tracing::warn!("no agent answered at the start of this term: stepping down so that a monitor reaching them leads");
        return Ok(LeadEnded::SteppedDown);
    }
    let mut shell = Shell {
        clock,
        links,
        replies: HashMap::new(),
        events: ev_tx.clone(),
        kill_host_bin: config.monitor.kill_host_bin.clone(),
        kill_timeout: config.monitor.promotion_timeout,
        notifier: config
            .monitor
            .notify_command
            .clone()
            .map(notify::Notifier::start),
        metrics: process.metrics.clone(),
        writer: None,
        promotion_started: None,
        seat,
        held: config
            .hosts
            .iter()
            .map(|h| (h.name.clone(), tokio::sync::watch::Sender::new(false)))
            .collect(),
    };
    let actions = cluster.startup(clock.now(), &reports);
    shell.dispatch(actions).await;
    for e in early {
        let actions = cluster.handle(clock.now(), e);
        shell.dispatch(actions).await;
    }
    start_checks(&config, &timing, &shell.held, clock, &check_tx, &mut tasks)?;
    shell.seat.hear_forwarded().await;
    let inputs = Inputs {
        events: ev_rx,
        checks: check_rx,
    };
    let ended = event_loop(&mut cluster, &mut shell, inputs, process).await?;
    if ended == LeadEnded::Shutdown {
        // Clean shutdown: the status is written, no role is touched.
        let record = cluster.status_record(shell.clock.now());
        shell.seat.persist_last(record).await;
        tracing::info!("monitor stopped (roles left as they are)");
    }
    Ok(ended)
}

/// The most hosts whose pings leave together (see `start_checks`).
const PING_BURST: u32 = 100;

/// One link task per agent; returns the command channel of each.
fn start_links(
    config: &Config,
    timing: &Timing,
    key: &ClusterKey,
    seat: &impl Seat,
    clock: Clock,
    (events, metrics): (&mpsc::Sender<Event>, &super::metrics::Shared),
    tasks: &mut tokio::task::JoinSet<()>,
) -> HashMap<String, mpsc::Sender<LinkCmd>> {
    let mut links = HashMap::new();
    let beat = tokio::time::Instant::now();
    for h in &config.hosts {
        let (tx, rx) = mpsc::channel(64);
        links.insert(h.name.clone(), tx);
        let params = LinkParams {
            host: h.name.clone(),
            addr: SocketAddr::new(IpAddr::V4(h.ip), h.agent_port),
            key: key.clone(),
            monitor_name: seat.name().to_string(),
            term: seat.term(),
            heartbeat_interval: timing.heartbeat_interval,
            beat,
            agent_timeout: timing.agent_timeout,
            lease: timing.monitor_counts_lease_over,
            io_timeout: timing.link_io_timeout,
            clock,
            metrics: metrics.clone(),
        };
        tasks.spawn(links::run(params, rx, events.clone()));
    }
    links
}

/// The start-up vote's evidence: every agent's first heartbeat, waited for at most
/// 2 x agent_timeout. Other events meanwhile are kept, in order, for after the vote.
async fn hear_agents(
    config: &Config,
    timing: &Timing,
    events: &mut mpsc::Receiver<Event>,
) -> (Vec<(String, AgentView)>, Vec<Event>) {
    // In a fleet a leader that hears nobody steps down (see `lead`): give the agents a
    // whole session TTL (term file fsync, handshake, first heartbeat on a loaded host).
    let wait = timing.startup_vote_wait;
    let deadline = tokio::time::Instant::now() + wait;
    let mut reports: BTreeMap<String, AgentView> = BTreeMap::new();
    let mut early: Vec<Event> = Vec::new();
    while reports.len() < config.hosts.len() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::AgentHeartbeat { host, view })) => {
                reports.insert(host, view);
            }
            Ok(Some(other)) => early.push(other),
            _ => break,
        }
    }
    tracing::info!(
        reporting = reports.len(),
        of = config.hosts.len(),
        "start-up vote"
    );
    (reports.into_iter().collect(), early)
}

/// The check tasks of every host and the network guard, on one ICMP socket (ping.rs).
fn start_checks(
    config: &Config,
    timing: &Timing,
    held: &HashMap<String, tokio::sync::watch::Sender<bool>>,
    clock: Clock,
    samples: &mpsc::Sender<checks::Sample>,
    spawned: &mut tokio::task::JoinSet<()>,
) -> Result<(), DaemonError> {
    let pinger = ping::Pinger::new();
    let (threads, backlog) = (config.checks.rep_threads, config.checks.rep_backlog);
    let shared = threads.check_period == backlog.check_period && threads.timeout == backlog.timeout;
    let tasks: Vec<(Vec<CheckKind>, CheckConfig)> = if shared {
        vec![
            (vec![CheckKind::Ping], config.checks.ping),
            (vec![CheckKind::Mysql], config.checks.mysql),
            (vec![CheckKind::RepThreads, CheckKind::RepBacklog], backlog),
        ]
    } else {
        CheckKind::ALL
            .iter()
            .map(|k| (vec![*k], *config.checks.get(*k)))
            .collect()
    };
    // Only a writer is ever held down on silence (`Cluster::isolation_due`): the quick ping
    // pace serves the writer role's hosts; the others ping at their check_period, as MMM
    // did (500 hosts: 3,000 pings a second became 500 plus the writer role's few). With no
    // such host every host keeps the quick pace, so events still reach the core at least
    // every ping_pace (`Cluster::notice_stall`).
    let writer_hosts: Vec<&str> = config
        .roles
        .iter()
        .filter(|r| r.name == config.active_master_role)
        .flat_map(|r| r.hosts.iter().map(String::as_str))
        .collect();
    // Pings leave in slots of up to PING_BURST hosts spread over the period: a burst of
    // replies that an unprivileged monitor's socket buffer holds whole, and no more
    // wake-ups than there are slots.
    let slots = (config.hosts.len() as u32)
        .div_ceil(PING_BURST)
        .clamp(1, 100);
    for (i, h) in config.hosts.iter().enumerate() {
        let quick = writer_hosts.is_empty() || writer_hosts.contains(&h.name.as_str());
        let password = h
            .monitor_password
            .reveal()
            .map_err(|source| DaemonError::Secret {
                host: h.name.clone(),
                source,
            })?;
        for (kinds, cfg) in &tasks {
            if kinds[..] == [CheckKind::Ping] {
                let held = held
                    .get(&h.name)
                    .map(|w| w.subscribe())
                    .unwrap_or_else(|| tokio::sync::watch::channel(false).1);
                // Three times per agent_timeout: a host whose agent falls silent but
                // which still answers ping has answered one within agent_timeout even if
                // an echo reply is lost, so the core does not take it for a silent one
                // (and hold its link down); events reach the core often enough that a
                // longer quiet means the monitor stalled.
                let normal = if quick {
                    cfg.check_period.min(timing.ping_pace)
                } else {
                    cfg.check_period
                };
                let pace = checks::Pace {
                    normal,
                    held: timing.heartbeat_interval,
                    offset: normal * (i as u32 % slots) / slots,
                };
                spawned.spawn(checks::run_ping(
                    h.clone(),
                    *cfg,
                    pace,
                    held,
                    pinger.clone(),
                    clock,
                    samples.clone(),
                ));
                continue;
            }
            spawned.spawn(checks::run(
                h.clone(),
                password.clone(),
                kinds.clone(),
                *cfg,
                pinger.clone(),
                clock,
                samples.clone(),
            ));
        }
    }
    let ping_ips: Vec<_> = config
        .monitor
        .ping_ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    spawned.spawn(checks::network_guard(
        ping_ips,
        config.monitor.ping_interval,
        config.checks.ping.timeout,
        pinger,
        samples.clone(),
    ));
    Ok(())
}
