//! The monitor daemon: the IO shell around the pure core. One task owns the `Cluster`
//! and feeds it every event (checks, agent links, control commands, ticks); the actions
//! it returns are dispatched to agent links, the status file, kill_host_bin and logs.

pub mod checks;
pub mod control;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod ping;

use crate::core::{Action, AgentView, Cluster, Event, Millis};
use links::{LinkCmd, LinkParams};
use mmm_common::config::{CheckConfig, ClusterKey, Config};
use mmm_common::types::CheckKind;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("reading the monitor user's password for host {host}")]
    Secret {
        host: String,
        #[source]
        source: mmm_common::config::SecretError,
    },
    #[error("claiming the status file")]
    Lock(#[from] persist::LockError),
    #[error("starting the control socket on {addr}")]
    Control {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The monitor's clock: wall time at start plus monotonic time since, so durations never
/// jump and stored flap times stay meaningful across restarts.
#[derive(Clone, Copy)]
struct Clock {
    wall_ms: Millis,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_ms,
            start: tokio::time::Instant::now(),
        }
    }
    fn now(&self) -> Millis {
        self.wall_ms + self.start.elapsed().as_millis() as u64
    }

    /// When the core's `deadline` falls on the runtime's clock, and no later than `latest`.
    fn instant(
        &self,
        deadline: Option<Millis>,
        latest: tokio::time::Instant,
    ) -> tokio::time::Instant {
        deadline
            .map(|d| self.start + Duration::from_millis(d.saturating_sub(self.wall_ms)))
            .map_or(latest, |t| t.min(latest))
    }
}

/// The longest the core goes without a Tick. Not needed for any decision (every timed
/// one is in `Cluster::next_deadline`); a bound should one ever be missed.
const IDLE_TICK: Duration = Duration::from_secs(1);

struct Shell {
    clock: Clock,
    links: HashMap<String, mpsc::Sender<LinkCmd>>,
    replies: HashMap<u64, oneshot::Sender<String>>,
    events: mpsc::Sender<Event>,
    status: persist::Writer,
    kill_host_bin: Option<std::path::PathBuf>,
    kill_timeout: Duration,
    notifier: Option<notify::Notifier>,
    metrics: metrics::Shared,
    writer: Option<String>,
    promotion_started: Option<Millis>,
}

impl Shell {
    async fn dispatch(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendDesired { host, desired } => {
                    tracing::debug!(%host, epoch = desired.epoch, writable = desired.writable, roles = ?desired.roles, "desired state");
                    self.link(&host, LinkCmd::Desired(desired)).await;
                }
                Action::AgentAction {
                    host,
                    id,
                    action,
                    deadline,
                } => {
                    tracing::info!(%host, ?action, ?deadline, "agent action");
                    self.link(
                        &host,
                        LinkCmd::Action {
                            id,
                            action,
                            deadline,
                        },
                    )
                    .await;
                }
                Action::QueryStatus { host } => self.link(&host, LinkCmd::Query).await,
                Action::Disconnect { host } => self.link(&host, LinkCmd::Disconnect).await,
                Action::Isolate { host } => self.link(&host, LinkCmd::Isolate).await,
                Action::Release { host } => self.link(&host, LinkCmd::Release).await,
                Action::KillHost { host, ping_ok } => self.kill_host(host, ping_ok),
                Action::Persist(record) => self.status.save(record),
                Action::Notify { host, message } => {
                    match &host {
                        Some(h) => tracing::warn!(host = %h, "{message}"),
                        None => tracing::warn!("{message}"),
                    }
                    if let Some(n) = &self.notifier {
                        n.send(notify::Notice {
                            at_ms: self.clock.now(),
                            host,
                            message,
                        });
                    }
                }
                Action::Reply { id, text } => {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(text);
                    }
                }
            }
        }
    }

    async fn link(&self, host: &str, cmd: LinkCmd) {
        if let Some(l) = self.links.get(host) {
            let _ = l.send(cmd).await;
        }
    }

    fn kill_host(&self, host: String, ping_ok: bool) {
        let Some(bin) = self.kill_host_bin.clone() else {
            return;
        };
        let events = self.events.clone();
        let timeout = self.kill_timeout;
        tokio::spawn(async move {
            tracing::warn!(%host, bin = %bin.display(), "running kill_host_bin");
            let run = tokio::process::Command::new(&bin)
                .arg(&host)
                .arg(if ping_ok { "1" } else { "0" })
                .kill_on_drop(true)
                .output();
            let (ok, output) = match tokio::time::timeout(timeout, run).await {
                Err(_) => (false, format!("no exit within {timeout:?}")),
                Ok(Err(e)) => (false, format!("starting {}: {e}", bin.display())),
                Ok(Ok(o)) => (
                    o.status.success(),
                    format!(
                        "{} {}{}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout).trim(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
            };
            let _ = events.send(Event::KillHostDone { host, ok, output }).await;
        });
    }

    /// Refreshes the metrics after the core changed something.
    fn observe(&mut self, c: &Cluster, now: Millis) {
        let writer = c.active_master().map(str::to_string);
        if let Some(started) = c.promotion_started() {
            self.promotion_started.get_or_insert(started);
        } else if let Some(started) = self.promotion_started.take() {
            if writer.is_some() {
                let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
                m.failovers += 1;
                m.last_failover_seconds = now.saturating_sub(started) as f64 / 1000.0;
            }
        }
        self.writer = writer;
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.writer = self
            .writer
            .as_deref()
            .and_then(|w| c.host(w))
            .map(|h| (h.name.clone(), h.ip.to_string()));
        m.hosts = c
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.state))
            .collect();
        m.roles = c
            .roles()
            .ips
            .iter()
            .filter_map(|r| {
                let ip = r.ip.map(|ip| ip.to_string()).unwrap_or_default();
                Some((r.role.clone(), ip, r.holder.clone()?))
            })
            .collect();
    }
}

/// Runs the monitor until `shutdown` resolves; then writes the status and returns.
///
/// The order matters: the status file is claimed first (a second monitor stops before
/// touching anything), the agents are heard before the start-up vote, and the checks start
/// only once the core knows who the writer is.
pub async fn run(
    config: Config,
    key: ClusterKey,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let _lock = persist::StatusLock::acquire(&config.monitor.status_path)?;
    let clock = Clock::new();
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4096);
    let (check_tx, check_rx) = mpsc::channel::<checks::Sample>(4096);
    let (ctl_tx, ctl_rx) = mpsc::channel::<control::Request>(64);
    let metrics: metrics::Shared = Default::default();

    let mut cluster = restore(&config, clock.now());
    let links = start_links(&config, &key, &ev_tx);
    let (reports, early) = hear_agents(&config, &mut ev_rx).await;
    let mut shell = Shell {
        clock,
        links,
        replies: HashMap::new(),
        events: ev_tx.clone(),
        status: persist::Writer::start(config.monitor.status_path.clone()),
        kill_host_bin: config.monitor.kill_host_bin.clone(),
        kill_timeout: config.monitor.promotion_timeout,
        notifier: config
            .monitor
            .notify_command
            .clone()
            .map(notify::Notifier::start),
        metrics: metrics.clone(),
        writer: None,
        promotion_started: None,
    };
    let actions = cluster.startup(clock.now(), &reports);
    shell.dispatch(actions).await;
    for e in early {
        let actions = cluster.handle(clock.now(), e);
        shell.dispatch(actions).await;
    }
    start_checks(&config, &check_tx)?;
    let control_key = config.monitor.control.keyed().then(|| key.clone());
    let reply_timeout = config.monitor.promotion_timeout * 3 + Duration::from_secs(10);
    let ctl_addr = config.monitor.control.clone();
    let listener = tokio::spawn(control::serve(
        ctl_addr.clone(),
        control_key,
        reply_timeout,
        ctl_tx,
    ));
    if let Some(addr) = config.monitor.metrics {
        tokio::spawn(metrics::serve(addr, metrics.clone()));
    }
    let inputs = Inputs {
        events: ev_rx,
        checks: check_rx,
        control: ctl_rx,
        listener,
        control_addr: ctl_addr.to_string(),
    };
    event_loop(&mut cluster, &mut shell, inputs, shutdown).await?;
    // Clean shutdown: the status is written, no role is touched.
    let record = cluster.status_record(shell.clock.now());
    shell.status.finish(record).await;
    tracing::info!("monitor stopped (roles left as they are)");
    Ok(())
}

/// The cluster as the status file left it, or passive mode (with the cause shown) when
/// the file cannot be trusted.
fn restore(config: &Arc<Config>, now: Millis) -> Cluster {
    let mut cluster = Cluster::new(config.clone(), now);
    let path = &config.monitor.status_path;
    match persist::read(path, now) {
        Ok(Some(record)) => match cluster.restore(&record) {
            Ok(()) => tracing::info!(path = %path.display(), "resuming from the status file"),
            Err(e) => {
                let cause = format!("status file {} unusable: {e}", path.display());
                tracing::error!("{cause}");
                cluster.go_passive(cause);
            }
        },
        Ok(None) => {
            tracing::info!(path = %path.display(), "no status file: first start, hosts AWAITING_RECOVERY")
        }
        Err(e) => {
            let cause = format!(
                "{}: starting passive rather than guessing",
                crate::error_chain(&e)
            );
            tracing::error!("{cause}");
            cluster.go_passive(cause);
        }
    }
    cluster
}

/// One link task per agent; returns the command channel of each.
fn start_links(
    config: &Config,
    key: &ClusterKey,
    events: &mpsc::Sender<Event>,
) -> HashMap<String, mpsc::Sender<LinkCmd>> {
    let mut links = HashMap::new();
    for h in &config.hosts {
        let (tx, rx) = mpsc::channel(64);
        links.insert(h.name.clone(), tx);
        let params = LinkParams {
            host: h.name.clone(),
            addr: SocketAddr::new(IpAddr::V4(h.ip), h.agent_port),
            key: key.clone(),
            monitor_name: hostname(),
            heartbeat_interval: config.monitor.heartbeat_interval,
            agent_timeout: config.monitor.agent_timeout,
            lease: config.agent.lease + config.monitor.heartbeat_interval,
        };
        tokio::spawn(links::run(params, rx, events.clone()));
    }
    links
}

/// The start-up vote's evidence: every agent's first heartbeat, waited for at most
/// 2 x agent_timeout. Other events meanwhile are kept, in order, for after the vote.
async fn hear_agents(
    config: &Config,
    events: &mut mpsc::Receiver<Event>,
) -> (Vec<(String, AgentView)>, Vec<Event>) {
    let wait = (config.monitor.agent_timeout * 2).max(Duration::from_secs(1));
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
    samples: &mpsc::Sender<checks::Sample>,
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
    for h in &config.hosts {
        let password = h
            .monitor_password
            .reveal()
            .map_err(|source| DaemonError::Secret {
                host: h.name.clone(),
                source,
            })?;
        for (kinds, cfg) in &tasks {
            tokio::spawn(checks::run(
                h.clone(),
                password.clone(),
                kinds.clone(),
                *cfg,
                pinger.clone(),
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
    tokio::spawn(checks::network_guard(
        ping_ips,
        config.monitor.ping_interval,
        config.checks.ping.timeout,
        pinger,
        samples.clone(),
    ));
    Ok(())
}

/// What the event loop listens to.
struct Inputs {
    events: mpsc::Receiver<Event>,
    checks: mpsc::Receiver<checks::Sample>,
    control: mpsc::Receiver<control::Request>,
    /// The control socket's task: it ends only when the socket could not be bound.
    listener: tokio::task::JoinHandle<std::io::Result<()>>,
    control_addr: String,
}

/// The one owner of the `Cluster`: each event in, its actions out, then sleep until the
/// next event or the core's next deadline.
async fn event_loop(
    cluster: &mut Cluster,
    shell: &mut Shell,
    mut inputs: Inputs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let clock = shell.clock;
    // The core says when it next needs a Tick; IDLE_TICK bounds the time since the last
    // one (from the last Tick, not from the last event: events come every second or
    // faster, and a bound restarted by each would never fire).
    let mut last_tick = tokio::time::Instant::now();
    let mut wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
    let mut next_reply: u64 = 1;
    tokio::pin!(shutdown);
    shell.observe(cluster, clock.now());
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ended = &mut inputs.listener => {
                // The control socket is gone (could not bind): an operator could not reach us.
                if let Ok(Err(source)) = ended {
                    return Err(DaemonError::Control { addr: inputs.control_addr.clone(), source });
                }
                return Ok(());
            }
            Some(e) = inputs.events.recv() => e,
            Some(s) = inputs.checks.recv() => {
                if let Event::Check { host, check, .. } = &s.event {
                    shell.metrics.lock().unwrap_or_else(|p| p.into_inner()).check_latency.insert((host.clone(), check.to_string()), s.latency.as_secs_f64());
                }
                s.event
            }
            Some((command, reply)) = inputs.control.recv() => {
                // `checks` prints local time; the offset can change (DST) while we run.
                cluster.set_utc_offset(local_utc_offset_s());
                let id = next_reply;
                next_reply += 1;
                shell.replies.insert(id, reply);
                Event::Command { reply: id, command }
            }
            _ = tokio::time::sleep_until(wake) => {
                last_tick = tokio::time::Instant::now();
                Event::Tick
            }
        };
        let now = clock.now();
        let actions = cluster.handle(now, event);
        if !actions.is_empty() {
            shell.dispatch(actions).await;
            shell.observe(cluster, now);
        }
        wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_unreadable| "mmm-monitor".into())
}

/// This host's offset from UTC now, in seconds (the TZ environment or /etc/localtime).
fn local_utc_offset_s() -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r reads `now` and fills `tm`, both valid and exclusively ours for
    // the call; a null return (no such time) leaves the offset at 0.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}
