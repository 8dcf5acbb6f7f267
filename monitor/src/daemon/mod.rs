//! The monitor daemon: the IO shell around the pure core. One task owns the `Cluster`
//! and feeds it every event (checks, agent links, control commands, ticks); the actions
//! it returns are dispatched to agent links, the seat (the status file, or a fleet's
//! etcd: seat/), kill_host_bin and logs.

pub mod checks;
pub mod control;
pub mod http;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod ping;
pub mod reload;
pub mod seat;

use crate::core::{Action, AgentView, Cluster, Event, Millis};
use links::{LinkCmd, LinkParams};
use mmm_common::config::{CheckConfig, ClusterKey, Config};
use mmm_common::timing::Timing;
use mmm_common::types::CheckKind;
use seat::{Place, Seat};
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
    #[error("the monitor fleet on etcd")]
    Fleet(#[source] crate::fleet::FleetError),
    #[error("etcd key {key} belongs to another cluster (another cluster key under the same prefix): give each cluster its own [coordination] prefix")]
    ForeignPrefix { key: String },
    #[error("the fleet's epoch")]
    Epoch(#[source] mmm_common::epoch::RandomError),
    #[error("starting the HTTP listener")]
    Http(#[from] http::StartError),
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
pub struct Clock {
    wall_ms: Millis,
    start: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_ms,
            start: tokio::time::Instant::now(),
        }
    }
    pub fn now(&self) -> Millis {
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

struct Shell<S: Seat> {
    clock: Clock,
    links: HashMap<String, mpsc::Sender<LinkCmd>>,
    replies: HashMap<u64, oneshot::Sender<String>>,
    events: mpsc::Sender<Event>,
    kill_host_bin: Option<std::path::PathBuf>,
    kill_timeout: Duration,
    notifier: Option<notify::Notifier>,
    metrics: metrics::Shared,
    writer: Option<String>,
    promotion_started: Option<Millis>,
    /// Where this monitor sits: the status, the writer's publication, a fleet's leases.
    seat: S,
    /// Per host: whether the core holds its link down (Isolate), for its ping check's
    /// pace.
    held: HashMap<String, tokio::sync::watch::Sender<bool>>,
}

impl<S: Seat> Shell<S> {
    fn hold(&self, host: &str, held: bool) {
        if let Some(h) = self.held.get(host) {
            h.send_replace(held);
        }
    }

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
                Action::Disconnect { host } => {
                    self.hold(&host, false);
                    self.link(&host, LinkCmd::Disconnect).await
                }
                Action::Isolate { host } => {
                    self.hold(&host, true);
                    self.link(&host, LinkCmd::Isolate).await
                }
                Action::Release { host } => {
                    self.hold(&host, false);
                    self.link(&host, LinkCmd::Release).await
                }
                Action::KillHost { host, ping_ok } => self.kill_host(host, ping_ok),
                Action::EndLease { host } => self.seat.end_lease(host, self.events.clone()),
                Action::Persist(record) => self.seat.persist(record),
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

    /// Refreshes the probes' metrics: agents report their probe in heartbeats, which
    /// change nothing else and so call no `observe`. Once per Tick (at least every
    /// IDLE_TICK), not per event: a heartbeat each second per host would make it
    /// quadratic in the number of hosts.
    fn observe_probes(&self, c: &Cluster) {
        let probes = c
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.probe_state(), h.probe_blind()))
            .collect();
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .probes = probes;
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
        let published = self
            .writer
            .as_deref()
            .and_then(|w| c.host(w))
            .map(|h| (h.name.clone(), h.ip, h.mysql_port));
        self.seat.publish_writer(published);
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
            .ips()
            .iter()
            .filter_map(|r| {
                let ip = r.ip.map(|ip| ip.to_string()).unwrap_or_default();
                Some((r.role.clone(), ip, r.holder.clone()?))
            })
            .collect();
    }
}

/// Why [`lead`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadEnded {
    /// SIGTERM (or the control socket is gone).
    Shutdown,
    /// The fleet's leadership was lost: nothing may be decided any more.
    Deposed,
    /// A fleet's leader that reaches no agent gives way to a monitor that may.
    SteppedDown,
}

/// What stays for the life of the process, whatever the monitor acts as.
pub struct Process {
    pub config: Arc<Config>,
    /// The fencing bounds, derived from `config` once.
    pub timing: Timing,
    pub key: ClusterKey,
    pub metrics: metrics::Shared,
    pub control: mpsc::Receiver<control::Request>,
    pub life: Life,
    /// Held while this process drives the agents: the HTTP listener asks the event loop
    /// then, and serves a standby's own view otherwise.
    pub driving: http::Driving,
    /// Each config reloaded on SIGHUP ([`reload`]).
    pub reloads: tokio::sync::watch::Receiver<Arc<Config>>,
}

/// What ends the process.
pub struct Life {
    /// The control socket's task: it ends only when the socket could not be bound.
    listener: tokio::task::JoinHandle<std::io::Result<()>>,
    control_addr: String,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Life {
    /// Resolves when the monitor must stop: SIGTERM, or the control socket could not be
    /// bound (an operator could not reach us).
    async fn stopped(&mut self) -> Result<(), DaemonError> {
        tokio::select! {
            _ = self.stop.wait_for(|s| *s) => Ok(()),
            ended = &mut self.listener => match ended {
                Ok(Err(source)) => Err(DaemonError::Control { addr: self.control_addr.clone(), source }),
                _ => Ok(()),
            },
        }
    }
}

/// Runs the monitor until `shutdown` resolves. Alone, it claims the status file and
/// drives the agents; in a fleet (`[coordination]`) it stands by until etcd elects it.
pub async fn run(
    config: Config,
    path: std::path::PathBuf,
    key: ClusterKey,
    name: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let place = Place::claim(&config)?;
    let (ctl_tx, control) = mpsc::channel::<control::Request>(64);
    let control_key = config.monitor.control.keyed().then(|| key.clone());
    let reply_timeout = config.monitor.promotion_timeout * 3 + Duration::from_secs(10);
    let ctl_addr = config.monitor.control.clone();
    let listener = tokio::spawn(control::serve(
        ctl_addr.clone(),
        control_key,
        reply_timeout,
        ctl_tx.clone(),
    ));
    let metrics: metrics::Shared = Default::default();
    let driving = http::Driving::default();
    http::start(&config, &name, ctl_tx, metrics.clone(), driving.clone()).await?;
    let reloads = reload::spawn(path, config.clone(), metrics.clone());
    let mut process = Process {
        config: config.clone(),
        timing: Timing::from_config(&config),
        key,
        metrics,
        control,
        life: Life {
            listener,
            control_addr: ctl_addr.to_string(),
            stop,
        },
        driving,
        reloads,
    };
    place.run(&mut process, name).await
}

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

/// One link task per agent; returns the command channel of each.
fn start_links(
    config: &Config,
    timing: &Timing,
    key: &ClusterKey,
    seat: &impl Seat,
    clock: Clock,
    (events, metrics): (&mpsc::Sender<Event>, &metrics::Shared),
    tasks: &mut tokio::task::JoinSet<()>,
) -> HashMap<String, mpsc::Sender<LinkCmd>> {
    let mut links = HashMap::new();
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
    for h in &config.hosts {
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
                let pace = checks::Pace {
                    normal: cfg.check_period.min(timing.ping_pace),
                    held: timing.heartbeat_interval,
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

/// What the event loop listens to besides the process's control socket and the seat.
struct Inputs {
    events: mpsc::Receiver<Event>,
    checks: mpsc::Receiver<checks::Sample>,
}

/// A command's source: this monitor's control socket, or a standby's (through etcd).
enum Asker {
    Local(oneshot::Sender<String>),
    Forwarded(String),
}

/// The one owner of the `Cluster`: each event in, its actions out, then sleep until the
/// next event or the core's next deadline.
async fn event_loop<S: Seat>(
    cluster: &mut Cluster,
    shell: &mut Shell<S>,
    mut inputs: Inputs,
    process: &mut Process,
) -> Result<LeadEnded, DaemonError> {
    let clock = shell.clock;
    // The core says when it next needs a Tick; IDLE_TICK bounds the time since the last
    // one (from the last Tick, not from the last event: events come every second or
    // faster, and a bound restarted by each would never fire).
    let mut last_tick = tokio::time::Instant::now();
    let mut wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
    let mut next_reply: u64 = 1;
    let mut deposed = shell.seat.deposition();
    // In a fleet: since when this leader reaches no agent at all (see `lead`).
    let mut alone_since: Option<tokio::time::Instant> = None;
    let alone_limit = process.timing.alone_limit;
    shell.observe(cluster, clock.now());
    loop {
        let asked = tokio::select! {
            stopped = process.life.stopped() => return stopped.map(|()| LeadEnded::Shutdown),
            _ = deposed.lost() => {
                tracing::error!("leadership lost: stopping at once (another monitor may be elected)");
                return Ok(LeadEnded::Deposed);
            }
            Some(e) = inputs.events.recv() => Ok(e),
            Some(s) = inputs.checks.recv() => {
                if let Event::Check { host, check, .. } = &s.event {
                    shell.metrics.lock().unwrap_or_else(|p| p.into_inner()).check_latency.insert((host.clone(), check.to_string()), s.latency.as_secs_f64());
                    if let Some(read) = s.replication {
                        cluster.observe_replication(host, clock.now(), read);
                    }
                }
                Ok(s.event)
            }
            Some((command, reply)) = process.control.recv() => Err((command, Asker::Local(reply))),
            Ok(()) = process.reloads.changed() => {
                process.config = process.reloads.borrow_and_update().clone();
                reload::apply(process.config.clone(), cluster, shell);
                continue;
            }
            (command, id) = shell.seat.forwarded() => Err((command, Asker::Forwarded(id))),
            _ = tokio::time::sleep_until(wake) => {
                last_tick = tokio::time::Instant::now();
                Ok(Event::Tick)
            }
        };
        // The select picks among ready branches at random: a term known to be over
        // decides nothing more, whatever was picked.
        if shell.seat.is_deposed() {
            tracing::error!("leadership lost: stopping at once (another monitor may be elected)");
            return Ok(LeadEnded::Deposed);
        }
        let event = match asked {
            Ok(e) => e,
            Err((command, asker)) => {
                // `checks` prints local time; the offset can change (DST) while we run.
                cluster.set_utc_offset(local_utc_offset_s());
                cluster.set_fleet(shell.seat.show());
                let id = next_reply;
                next_reply += 1;
                let reply = match asker {
                    Asker::Local(reply) => reply,
                    Asker::Forwarded(fid) => shell.seat.answer_to(fid),
                };
                shell.replies.insert(id, reply);
                Event::Command { reply: id, command }
            }
        };
        let now = clock.now();
        let tick = matches!(event, Event::Tick);
        let actions = cluster.handle(now, event);
        if !actions.is_empty() {
            shell.dispatch(actions).await;
            shell.observe(cluster, now);
        }
        if tick {
            shell.observe_probes(cluster);
        }
        if shell.seat.gives_way_unheard() && !cluster.hosts().is_empty() {
            if cluster.hosts().iter().any(|h| h.agent_up) {
                alone_since = None;
            } else if alone_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                >= alone_limit
            {
                tracing::warn!(after = ?alone_limit, "no agent reachable: stepping down so that a monitor reaching them leads");
                return Ok(LeadEnded::SteppedDown);
            }
        }
        wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
    }
}

/// This host's name: a monitor's default `--name`.
pub fn hostname() -> String {
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
