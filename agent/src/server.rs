//! The agent's side of the protocol, the reconciler task and lease fencing.
//!
//! In a fleet (`[coordination]`) each handshake is judged by the monitor's term
//! (`crate::term`) before the Challenge goes out, and the lease is renewed by the agent's
//! own etcd lease (`crate::etcd`), not by the monitor.
//!
//! Tasks: one accept loop; per monitor connection a reader and a writer; one reconciler
//! that alone changes VIPs and read_only (so two desired states never interleave); the
//! lease's task, which fences without SQL; the wake task, which waits on a hung mysqld
//! that may be writable and makes it read-only the moment it answers (docs/fencing.md, "A
//! hung mysqld that wakes up"). Heartbeats are answered by the connection's reader from the
//! status snapshot at once, never waiting on SQL or netlink.

use crate::garp::GarpSender;
use crate::lease::{Lease, Renewal, Stamp};
use crate::mysql::{CatchUp, Mysql, SemiSyncHold};
use crate::reconcile::{error_chain, plan, Desired, Executor, Observed, Scope, Step};
use crate::term::{Accepted, Admitted, Shown, Terms};
use crate::vip::Netlink;
use mmm_common::config::{ClusterKey, Config, Host};
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::*;
use mmm_common::timing::Timing;
use mmm_common::types::Fencing;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

/// Bound on each handshake step: a peer that does not answer in time is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Logs a repeated refusal at most once a second, with how many were refused meanwhile.
#[derive(Default)]
struct Throttle {
    last: Option<std::time::Instant>,
    count: u64,
}

impl Throttle {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            log(self.count);
            self.last = Some(std::time::Instant::now());
            self.count = 0;
        }
    }
}
/// How often the status snapshot is refreshed from the kernel and the server.
pub(crate) const REFRESH: Duration = Duration::from_millis(500);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the agent reports; refreshed by the reconciler and read by every connection.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub applied_epoch: u32,
    pub server: Option<ServerKind>,
    pub mysql_up: bool,
    pub read_only: Option<bool>,
    pub held_vips: Vec<Ipv4Addr>,
    pub replication: Option<Replication>,
    pub gtid_executed: String,
    pub binlog: Option<(String, u64)>,
    pub fenced_reason: String,
    /// The desired state gives this host the writer role and it holds no permit to take it
    /// (its lease or etcd permit ran out): reported as self-fenced until it can.
    pub permitless: bool,
    pub probe: Option<ProbeState>,
    /// The server may accept writes: it said read_only = 0, or it stopped answering after
    /// it last did, or a lift of read_only may still run. Never "mysqld cannot be reached"
    /// for a process that may wake up: only a read back read_only = 1 (or the probe seeing
    /// the process exit) clears it.
    pub possibly_writable: bool,
    /// mysqld does not answer and may be writable, and what keeps clients from it holds
    /// whatever it does when it wakes up: the writer VIPs are gone, no lift of read_only
    /// can still run, the agent kills what it left in the server and sets read_only again
    /// the moment it answers. Reported as self-fenced: the demotion is confirmed by that,
    /// never by mysqld being unreachable.
    pub stall_fenced: bool,
    /// When mysqld last answered (its read_only read): the HTTP health checks count an
    /// older answer as none, so a stalled refresh never keeps a host in a load balancer.
    pub answered: Option<std::time::Instant>,
}

impl Status {
    fn heartbeat(&self) -> AgentHeartbeat {
        let mut flags = 0;
        if self.read_only == Some(true) && !self.possibly_writable {
            flags |= hb_flags::READ_ONLY;
        }
        // A hung server that may wake up writable is not "down": a monitor must not take
        // its silence for a demotion.
        if self.mysql_up || self.possibly_writable {
            flags |= hb_flags::MYSQL_UP;
        }
        if !self.fenced_reason.is_empty() || self.permitless || self.stall_fenced {
            flags |= hb_flags::SELF_FENCED;
        }
        if let Some(r) = &self.replication {
            if r.io_running {
                flags |= hb_flags::IO_RUNNING;
            }
            if r.sql_running {
                flags |= hb_flags::SQL_RUNNING;
            }
        }
        AgentHeartbeat {
            applied_epoch: self.applied_epoch,
            uptime_s: host_uptime_s(),
            flags,
            probe: self.probe.unwrap_or(ProbeState::Off),
            source: self
                .replication
                .as_ref()
                .and_then(|r| Some((r.source_host.parse().ok()?, r.source_port))),
            held_vips: self.held_vips.clone(),
        }
    }

    fn report(&self) -> StatusReport {
        StatusReport {
            applied_epoch: self.applied_epoch,
            uptime_s: host_uptime_s(),
            server: self.server.unwrap_or(ServerKind::Unknown),
            mysql_up: self.mysql_up || self.possibly_writable,
            read_only: self.read_only == Some(true) && !self.possibly_writable,
            held_vips: self.held_vips.clone(),
            replication: self.replication.clone(),
            gtid_executed: self.gtid_executed.clone(),
            gtid_unreadable: String::new(),
            binlog: self.binlog.clone(),
            probe: self.probe.unwrap_or(ProbeState::Off),
            fenced_reason: if !self.fenced_reason.is_empty() {
                self.fenced_reason.clone()
            } else if self.permitless {
                "the writer role cannot be taken: no writer permit (lease not renewed)".into()
            } else if self.stall_fenced {
                "mysqld does not answer and may wake up writable: the writer VIPs are gone, and read_only is set again the moment it answers".into()
            } else {
                String::new()
            },
        }
    }
}

/// Seconds since the host booted (MMM's reboot detection compares these).
fn host_uptime_s() -> u32 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0)
}

/// How a monitor connection ended without an error.
pub(crate) enum ConnectionEnded {
    Disconnected,
    /// Its term was refused (already logged, once per term).
    Refused,
}

/// Each carries the lease's stamp of when it was accepted: the plan it leads to dies when
/// anything newer arrives (`Lease::current`), even while it waits in this queue.
enum Command {
    /// Answered with None when a newer order superseded it before it was done: that
    /// order answers for itself (an Applied for this epoch with the plan's remaining
    /// steps as failures would tell a promotion the candidate failed).
    Apply(DesiredState, Stamp, oneshot::Sender<Option<Applied>>),
    /// Force read_only (true) or lift it (false) until the next desired state.
    ReadOnly(bool, Stamp, oneshot::Sender<Vec<String>>),
    /// Give up the writer role: VIP, then read_only, then sessions.
    Demote(Stamp, oneshot::Sender<Vec<String>>),
    /// The lease task has removed the writer VIPs: drop the writer from the desired state
    /// and finish the fence (read_only, sessions).
    Fenced(Stamp),
}

/// Everything the agent's tasks share.
pub struct Agent {
    pub config: Config,
    /// The fencing bounds, derived from `config` once.
    timing: Timing,
    pub host: Host,
    key: ClusterKey,
    scope: Scope,
    status: watch::Sender<Status>,
    lease: Arc<Lease>,
    /// The highest monitor term seen (a fleet's leadership term; 0 without a fleet).
    terms: Terms,
    /// In a fleet: etcd's election, which a monitor's term must lead to be obeyed.
    election: Option<Arc<crate::election::Election>>,
    /// The probe saw mysqld exit and no new one listening yet (see Executor).
    mysqld_exited: Arc<std::sync::atomic::AtomicBool>,
    /// Lifts of read_only whose outcome is unknown, and whether the server hung while it
    /// may be writable (shared with the Executor and the task that acts when it wakes).
    grants: Arc<crate::mysql::Grants>,
    /// The last desired state followed: the same one re-sent keeps its plan going.
    followed: std::sync::Mutex<Option<DesiredState>>,
    commands: mpsc::Sender<Command>,
    actions_mysql: Mysql,
    /// For status queries: promotion decisions need the server's state now, not the
    /// snapshot of up to REFRESH ago, and must not wait behind a long action.
    status_mysql: Mysql,
    /// The probe's seam: events sent here reach every connected monitor at once.
    probe_events: broadcast::Sender<ProbeEvent>,
    semi_sync: SemiSyncHold,
    /// Held for the whole of an action that changes replication: a re-point is several
    /// statements (STOP, CHANGE, START), and two of them interleaved fail with "you have
    /// a running slave" or leave the server following the wrong source.
    replication_changes: tokio::sync::Mutex<()>,
    /// Prohibit routes to a vanished source while its IO thread is stopped.
    routes: crate::route::Routes,
    /// In a fleet: the monitors' consents and the leader's vouch (crate::failsafe).
    pub(crate) failsafe: crate::witness::FailsafeState,
    /// Actions done, by kind and outcome (`/metrics`).
    pub(crate) counters: crate::http::metrics::Counters,
}

/// The kernel resources opened at start (the last two while capabilities allowed it).
pub struct Resources {
    pub netlink: Netlink,
    pub garp: Option<GarpSender>,
    pub rst: Option<crate::rst::Rst>,
}

impl Agent {
    /// Binds the listener and starts the reconciler; `serve` then accepts monitors.
    pub async fn start(
        config: Config,
        host_name: &str,
        key: ClusterKey,
        resources: Resources,
    ) -> Result<(Arc<Agent>, TcpListener), StartError> {
        let host = config
            .host(host_name)
            .cloned()
            .ok_or_else(|| StartError::UnknownHost(host_name.into()))?;
        let scope = Scope::new(&config, &host);
        let agent_password = host.agent_password.reveal()?;
        let timeout = config.checks.mysql.timeout.max(Duration::from_millis(500));
        // Its own server at the host's ip (or socket), as MMM's agent reached it: grants
        // like 'mmm_agent'@'10.0.0.%' and a bind-address of the host's ip keep working.
        let server_ip = host.ip.to_string();
        let mysql = |t| match config
            .agent
            .mysql_socket
            .as_deref()
            .and_then(|p| p.to_str())
        {
            Some(socket) => Mysql::socket(socket, &host.agent_user, &agent_password, t),
            None => Mysql::new(
                &server_ip,
                host.mysql_port,
                &host.agent_user,
                &agent_password,
                t,
            ),
        };
        let (commands, rx) = mpsc::channel(16);
        let addr = SocketAddr::from((host.ip, host.agent_port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let semi_sync = SemiSyncHold::persisted(&config.agent.state_dir, &host.name);
        let timing = Timing::from_config(&config);
        // In a fleet the permit is the agent's own etcd lease of session_ttl, renewed by
        // the agent itself (crate::etcd); without one, the monitor renews `agent.lease`.
        let (length, renewal) = match timing.etcd {
            Some(e) => (e.ttl, Renewal::Etcd),
            None => (timing.lease, Renewal::Monitor),
        };
        // A frame that waited through a freeze renews nothing (Lease::with_freeze_detection):
        // a gap under the monitor's slack over the agent's deadline is harmless.
        let freeze_gap = timing.freeze_gap;
        let lease = Arc::new(
            Lease::new(
                length,
                config.agent.fencing == Fencing::Lease,
                renewal,
                &config.agent.state_dir,
                &host.name,
            )
            .with_freeze_detection(freeze_gap),
        );
        Lease::watch_freezes(lease.clone());
        let terms = Terms::load(
            config.coordination.is_some(),
            &config.agent.state_dir,
            &host.name,
        );
        let election = config.coordination.as_ref().map(|c| {
            let e = Arc::new(crate::election::Election::new(
                c,
                &key,
                config.monitor.agent_timeout,
            ));
            tokio::spawn(e.clone().run().instrument(tracing::info_span!("election")));
            e
        });
        if let Some(c) = &config.coordination {
            let keeper =
                crate::etcd::Keeper::new(c, &config.agent.state_dir, &host.name, lease.clone());
            tokio::spawn(keeper.run().instrument(tracing::info_span!("etcd")));
        }
        let lease_netlink = resources.netlink.clone();
        let routes = crate::route::Routes::new(&resources.netlink);
        match routes.clear_stale().await {
            Ok(cleared) if !cleared.is_empty() => {
                tracing::warn!(?cleared, "removed prohibit routes a previous agent left")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %error_chain(&e), "stale prohibit routes not checked"),
        }
        let guards = crate::reconcile::VipGuards {
            rst: resources.rst.map(Arc::new),
            garp: resources
                .garp
                .map(|g| Arc::new(crate::garp::Announcer::new(g))),
            host: scope
                .writer_vips()
                .is_empty()
                .then_some((host.ip, host.mysql_port)),
            host_fenced: Default::default(),
        };
        let mysqld_exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let grants = Arc::new(crate::mysql::Grants::default());
        let executor = Executor {
            lease: lease.clone(),
            grants: grants.clone(),
            writer_vips: scope.writer_vips(),
            guards: guards.clone(),
            mysqld_exited: mysqld_exited.clone(),
            netlink: resources.netlink,
            interface: host.cluster_interface.clone(),
            garp_count: config.agent.garp_count,
            garp_interval: config.agent.garp_interval,
            mysql: Arc::new(mysql(timeout)),
            mysql_port: host.mysql_port,
            max_kill_retries: config.agent.max_kill_retries,
            spare_users: vec![host.agent_user.clone(), host.monitor_user.clone()],
            block_users: config.agent.block_users.clone(),
            never_blocked: vec![
                host.agent_user.clone(),
                host.monitor_user.clone(),
                host.replication_user.clone(),
            ],
            semi_sync: semi_sync.clone(),
        };
        let wake_mysql = mysql(timeout);
        let agent = Arc::new(Agent {
            actions_mysql: mysql(timeout),
            status_mysql: mysql(timeout),
            config,
            timing,
            host,
            key,
            scope,
            status: watch::Sender::new(Status::default()),
            lease,
            terms,
            election,
            mysqld_exited,
            grants,
            followed: std::sync::Mutex::new(None),
            commands,
            probe_events: broadcast::channel(64).0,
            semi_sync,
            replication_changes: tokio::sync::Mutex::new(()),
            routes,
            failsafe: Default::default(),
            counters: Default::default(),
        });
        let woken = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(
            reconciler(agent.clone(), executor, rx, woken.clone())
                .instrument(tracing::info_span!("reconcile")),
        );
        // Its own connection: the reconciler's may be stuck behind a hung statement.
        tokio::spawn(
            wake_task(agent.clone(), wake_mysql, woken).instrument(tracing::info_span!("wake")),
        );
        // Parked VIPs live only as long as they are refreshed (a dead agent's program soon
        // stops answering for them), by a task of their own: a reconcile pass can take
        // longer than their bound.
        if let Some(rst) = guards.rst.clone() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::rst::PARK_REFRESH);
                loop {
                    tick.tick().await;
                    rst.refresh_parked();
                }
            });
        }
        tokio::spawn(
            lease_task(agent.clone(), lease_netlink, guards)
                .instrument(tracing::info_span!("lease")),
        );
        Ok((agent, listener))
    }

    /// STOP SLAVE IO_THREAD with a prohibit route to the source meanwhile (crate::route):
    /// semi-sync's kill-connection to a vanished source fails at once instead of waiting
    /// for its timeout. Without the route (unknown source, no CAP_NET_ADMIN) the stop
    /// just takes longer.
    async fn stop_io_thread_of_vanished_source(
        &self,
        vanished: Ipv4Addr,
        deadline: Duration,
    ) -> Result<(), crate::mysql::MysqlError> {
        // Only while the server still replicates from it: a stop that arrives after a
        // re-point must not cut this host off from its new, live source.
        let source = self
            .status
            .borrow()
            .replication
            .as_ref()
            .and_then(|r| self.source_ip(&r.source_host))
            .filter(|ip| *ip == vanished && *ip != self.host.ip && !ip.is_loopback());
        let prohibited = match source {
            None => None,
            Some(ip) => match self.routes.prohibit(ip).await {
                Ok(true) => Some(ip),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!(%ip, error = %error_chain(&e), "the IO thread's stop may wait for semi-sync's kill-connection");
                    // One that timed out may have been added all the same: removed after
                    // the stop too.
                    matches!(e, crate::route::RouteError::Timeout { .. }).then_some(ip)
                }
            },
        };
        let stopped = self.actions_mysql.stop_io_thread(deadline).await;
        if let Some(ip) = prohibited {
            if let Err(e) = self.routes.allow(ip).await {
                tracing::error!(%ip, error = %error_chain(&e), "this host cannot reach its old source until the route is removed (the agent removes it at its next start)");
            }
        }
        stopped
    }

    /// The IPv4 address of a replication source as SHOW SLAVE STATUS names it: an
    /// address, or a configured host's name.
    fn source_ip(&self, source_host: &str) -> Option<Ipv4Addr> {
        source_host.parse().ok().or_else(|| {
            self.config
                .hosts
                .iter()
                .find(|h| h.name == source_host)
                .map(|h| h.ip)
        })
    }

    /// The status report with the server's replication state and GTID set read now.
    async fn fresh_report(&self) -> StatusReport {
        let mut report = self.status.borrow().report();
        let db = &self.status_mysql;
        let kind = match db.server_kind().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "status query: mysqld does not answer");
                // Unreachable is not read-only: one that may still be writable stays up.
                report.mysql_up = self.status.borrow().possibly_writable;
                report.gtid_unreadable = format!("mysqld does not answer: {}", error_chain(&e));
                return report;
            }
        };
        report.server = kind;
        report.mysql_up = true;
        if let Ok(ro) = db.read_only().await {
            // A lift of read_only that may still run makes a read-only server no better.
            report.read_only = ro && !self.grants.may_still_run();
        }
        // A set that cannot be read is reported as unknown, never as the cached or an
        // empty one: the monitor's errant-transaction checks must fail closed.
        match db.gtid_executed().await {
            Ok(g) => report.gtid_executed = g,
            Err(e) => report.gtid_unreadable = error_chain(&e),
        }
        if let Ok(r) = db.replication().await {
            report.replication = r;
        }
        if let Ok(b) = db.binlog_position().await {
            report.binlog = b;
        }
        report
    }

    /// Where the liveness probe publishes what it sees; each monitor connection forwards
    /// the events unasked, ahead of anything queued behind them.
    pub fn probe_sender(&self) -> broadcast::Sender<ProbeEvent> {
        self.probe_events.clone()
    }

    /// Records the probe's state for heartbeats and status reports.
    pub fn set_probe_state(&self, state: ProbeState) {
        self.status.send_modify(|s| s.probe = Some(state));
    }

    /// The probe saw mysqld's process exit (true) or a new mysqld listening (false).
    pub fn set_mysqld_exited(&self, exited: bool) {
        self.mysqld_exited
            .store(exited, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The answer to a heartbeat: the status snapshot, and whether etcd renews this
    /// agent's lease (a monitor vouches for a failsafe only while no agent says so).
    pub(crate) fn heartbeat(&self) -> AgentHeartbeat {
        let mut hb = self.status.borrow().heartbeat();
        if self.etcd_ok() {
            hb.flags |= hb_flags::ETCD_OK;
        }
        hb
    }

    /// In a fleet: etcd renewed this agent's own lease within two keepalive periods.
    pub(crate) fn etcd_ok(&self) -> bool {
        self.timing
            .etcd
            .is_some_and(|e| self.lease.etcd_renewed_within(e.keepalive_every * 2))
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(crate) fn terms(&self) -> &Terms {
        &self.terms
    }

    pub(crate) fn timing(&self) -> &Timing {
        &self.timing
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The probe saw mysqld's process exit and no new one listening yet.
    pub(crate) fn mysqld_exited(&self) -> bool {
        self.mysqld_exited
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Accepts monitor connections: only from `agent.monitor_ips` when set, and a bounded
    /// number of handshakes at once, with a budget of their own for addresses that
    /// authenticated before (crate::admission), so a flood of idle connections can neither
    /// exhaust descriptors nor keep a monitor out long enough to fence the writer.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let admission = Arc::new(crate::admission::Admission::default());
        let allowed = self.config.agent.monitor_ips.clone();
        let mut refusals = Throttle::default();
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if !allowed.is_empty() && !allowed.contains(&peer.ip()) {
                        refusals.warn(|n| tracing::warn!(%peer, refused = n, "connection refused: not one of agent.monitor_ips"));
                        continue;
                    }
                    let permit = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            refusals.warn(
                                |n| tracing::warn!(%peer, refused = n, "connection refused: {why}"),
                            );
                            continue;
                        }
                    };
                    let agent = self.clone();
                    tokio::spawn(
                        async move {
                            match agent.connection(stream, permit).await {
                                Ok(ConnectionEnded::Disconnected) => tracing::info!("monitor disconnected"),
                                Ok(ConnectionEnded::Refused) => {}
                                Err(e) => tracing::warn!(error = %error_chain(&e), "monitor connection dropped"),
                            }
                        }
                        .instrument(tracing::info_span!("monitor", %peer)),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "accepting a monitor connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        handshake: crate::admission::Slot,
    ) -> Result<ConnectionEnded, ConnError> {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        let mut hs = AgentHandshake::new(
            &self.key,
            &self.host.name,
            fresh_nonce().map_err(|e| ConnError::Io {
                op: "reading random bytes for the nonce",
                source: std::io::Error::other(e.to_string()),
            })?,
        );
        let hello = read_frame(&mut reader, &mut buf, HANDSHAKE_TIMEOUT).await?;
        let challenge = match hs.on_hello(&hello) {
            Ok(c) => c,
            Err(e) => {
                if let Some(bytes) = hs.reject(&e.to_string()) {
                    let _ = write_frames(&mut writer, &bytes, HANDSHAKE_TIMEOUT).await;
                }
                return Err(e.into());
            }
        };
        // The term decides before anything else is answered: a refused monitor learns why.
        let (monitor, term) = hs
            .peer()
            .map(|(m, t)| (m.to_string(), t))
            .unwrap_or_default();
        if term.is_witness() {
            let io = crate::witness::Io {
                reader,
                writer,
                buf,
            };
            return crate::witness::serve(&self, hs, challenge, io, handshake, monitor).await;
        }
        // A term of another epoch is judged by what etcd shows now, read by this agent.
        let shown = match &self.election {
            Some(e) if self.terms.needs_etcd(term) => e.shown().await,
            _ => Shown::NotAsked,
        };
        let order = match self.terms.admit(&monitor, term, &shown) {
            Ok(Admitted {
                accepted: Accepted::Higher { .. } | Accepted::NewEpoch { .. },
                order,
            }) => {
                self.lease.enter_term(order);
                order
            }
            Ok(Admitted {
                accepted: Accepted::Same,
                order,
            }) => order,
            Err(refused) => {
                // The Challenge sealed by `on_hello` is never sent: the reject goes out
                // as the first frame, and the monitor shows its text.
                if let Some(bytes) = hs.reject(&refused.to_string()) {
                    let _ = write_frames(&mut writer, &bytes, HANDSHAKE_TIMEOUT).await;
                }
                // Logged by `admit`, once per refused term.
                return Ok(ConnectionEnded::Refused);
            }
        };
        write_frames(&mut writer, &challenge, HANDSHAKE_TIMEOUT).await?;
        let auth = read_frame(&mut reader, &mut buf, HANDSHAKE_TIMEOUT).await?;
        let (session, welcome) = hs.on_auth(&auth, VERSION)?;
        let Some((session_id, mut fenced)) = self.lease.new_session(order) else {
            // A later term was entered during this handshake: the session is already over.
            tracing::info!(
                %term,
                "monitor refused: a later term began during its handshake"
            );
            return Ok(ConnectionEnded::Refused);
        };
        write_frames(&mut writer, &welcome, HANDSHAKE_TIMEOUT).await?;
        handshake.authenticated();
        tracing::info!(monitor = %session.peer, %term, "monitor authenticated");
        let Session {
            mut sealer,
            mut opener,
            ..
        } = session;

        // The writer task owns the sealer: every outgoing frame goes through it in order.
        let (out_tx, mut out_rx) = mpsc::channel::<(Message, u32, u8)>(64);
        let write_timeout = self.timing.agent_write_timeout;
        let mut probe_rx = self.probe_events.subscribe();
        let writer_task = tokio::spawn(async move {
            let mut bytes = Vec::with_capacity(256);
            let mut probe_open = true;
            loop {
                let (msg, id, flags) = tokio::select! {
                    biased;
                    event = probe_rx.recv(), if probe_open => match event {
                        Ok(e) => (Message::ProbeEvent(e), 0, 0),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "probe events dropped: the monitor connection is too slow");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            probe_open = false;
                            continue;
                        }
                    },
                    out = out_rx.recv() => match out {
                        Some(o) => o,
                        None => break,
                    },
                };
                bytes.clear();
                if let Err(e) = sealer.seal_into(&msg, id, flags, &mut bytes) {
                    return Err(ConnError::from(e));
                }
                write_frames(&mut writer, &bytes, write_timeout).await?;
            }
            Ok(())
        });
        // A monitor heartbeats every heartbeat_interval; one silent far longer is gone.
        let idle = self.timing.agent_idle;
        let result = loop {
            let read = tokio::select! {
                r = read_frame(&mut reader, &mut buf, idle) => r,
                // Nothing this session sent before the fence may undo it: the monitor
                // must come back on a new connection.
                _ = fenced.changed() => {
                    match self.lease.fenced() {
                        Some(_) => tracing::warn!("closing the monitor connection: the lease fenced this host"),
                        None => tracing::info!(%term, "closing the monitor connection: a monitor of a later term connected"),
                    }
                    break Ok(());
                }
            };
            let frame = match read {
                Ok(f) => f,
                Err(ConnError::Closed) => break Ok(()),
                Err(e) => break Err(e),
            };
            let msg = match opener.open_part(&frame) {
                Ok(Some(m)) => m,
                // A message in several frames comes out with its last.
                Ok(None) => continue,
                Err(e) => {
                    tell_monitor(&out_tx, &e).await;
                    break Err(e.into());
                }
            };
            let id = frame.header.request_id;
            if let Err(e) = self.dispatch(session_id, term, msg, id, &out_tx).await {
                tell_monitor(&out_tx, &e).await;
                break Err(e.into());
            }
        };
        drop(out_tx);
        // Let queued replies (an Error explaining the drop) reach the monitor, bounded.
        let _ = tokio::time::timeout(Duration::from_millis(500), writer_task).await;
        result.map(|()| ConnectionEnded::Disconnected)
    }

    async fn dispatch(
        self: &Arc<Self>,
        session: u64,
        term: Term,
        msg: Message,
        id: u32,
        out: &mpsc::Sender<(Message, u32, u8)>,
    ) -> Result<(), FrameError> {
        let reply = move |m: Message| (m, id, FLAG_RESPONSE);
        // In a fleet an order is obeyed only from the term etcd's election says leads now
        // (a deposed leader woken up may still hold a session here: crate::election).
        if let (Some(election), Message::DesiredState(_) | Message::Action(_)) =
            (&self.election, &msg)
        {
            // What could make this host a writer: writable, a writer VIP, or lifting a
            // fence. Only that waits for etcd's word when etcd cannot be asked; a reader
            // role or a demotion is taken while etcd is away.
            let grants_writer = match &msg {
                Message::DesiredState(d) => {
                    let writer = self.scope.writer_vips();
                    // Parking draws the writer's clients here: a deposed leader's
                    // parking would pull them from the writer another leader made.
                    d.writable
                        || d.roles.iter().any(|(_, ip)| writer.contains(ip))
                        || !d.parked.is_empty()
                        || self.lease.fenced().is_some()
                }
                Message::Action(a) => matches!(a.action, Action::SetReadOnly { on: false }),
                _ => false,
            };
            let verdict = match election.confirms(term, grants_writer).await {
                Err(crate::election::NotLeader::Unknown { .. }) if !grants_writer => Ok(()),
                other => other,
            };
            if let Err(not) = verdict {
                tracing::warn!(reason = %not, "monitor order refused");
                // A later term leads: record it, so this session closes and the deposed
                // monitor's reconnections are refused at the handshake from now on.
                if let crate::election::NotLeader::Other {
                    current, record, ..
                } = &not
                {
                    if let Ok(Admitted {
                        accepted: Accepted::Higher { .. } | Accepted::NewEpoch { .. },
                        order,
                    }) = self.terms.admit(
                        "(etcd's election)",
                        *current,
                        &Shown::Etcd {
                            record: *record,
                            leading: Some(current.rev),
                        },
                    ) {
                        self.lease.enter_term(order);
                    }
                }
                let refusal = match &msg {
                    Message::DesiredState(d) => Message::Applied(Applied {
                        epoch: d.epoch,
                        failures: vec![not.to_string()],
                    }),
                    _ => Message::ActionResult(ActionResult {
                        outcome: ActionOutcome::Failed,
                        detail: not.to_string(),
                        position: None,
                    }),
                };
                let _ = out.send(reply(refusal)).await;
                return Ok(());
            }
        }
        match msg {
            Message::Heartbeat(_) => {
                self.lease.on_heartbeat(session);
                let hb = self.heartbeat();
                let _ = out.send(reply(Message::AgentHeartbeat(hb))).await;
            }
            // Consents come on witness sessions (crate::witness) only.
            Message::Consent(_) => {}
            Message::DesiredState(d) => {
                let epoch = d.epoch;
                let decided = {
                    let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
                    let unchanged = followed.as_ref() == Some(&d);
                    let decided = self.lease.on_desired(session, unchanged);
                    if decided.is_ok() {
                        *followed = Some(d.clone());
                    }
                    decided
                };
                let stamp = match decided {
                    Err(still) => {
                        tracing::warn!(epoch, reason = %still, "desired state refused");
                        let refusal = Applied {
                            epoch,
                            failures: vec![still.to_string()],
                        };
                        let _ = out.send(reply(Message::Applied(refusal))).await;
                        return Ok(());
                    }
                    Ok(f) => {
                        if f.lifted {
                            tracing::info!(
                                epoch,
                                "desired state from a new monitor connection ends the self-fence"
                            );
                            self.status.send_modify(|s| s.fenced_reason.clear());
                        }
                        f.stamp
                    }
                };
                let (tx, rx) = oneshot::channel();
                let out = out.clone();
                if self
                    .commands
                    .send(Command::Apply(d, stamp, tx))
                    .await
                    .is_ok()
                {
                    tokio::spawn(async move {
                        let applied = match rx.await {
                            Ok(Some(applied)) => applied,
                            Ok(None) => return,
                            Err(_dropped) => Applied {
                                epoch,
                                failures: vec!["the reconciler stopped".into()],
                            },
                        };
                        let _ = out.send(reply(Message::Applied(applied))).await;
                    });
                } else {
                    let stopped = Applied {
                        epoch,
                        failures: vec!["the reconciler stopped".into()],
                    };
                    let _ = out.send(reply(Message::Applied(stopped))).await;
                }
            }
            Message::StatusQuery => {
                let agent = self.clone();
                let out = out.clone();
                tokio::spawn(async move {
                    let mut report = agent.fresh_report().await;
                    report.fit_message();
                    let _ = out.send(reply(Message::StatusReport(report))).await;
                });
            }
            Message::Action(req) => {
                let agent = self.clone();
                let out = out.clone();
                tokio::spawn(
                    async move {
                        let kind = crate::http::metrics::action_kind(&req.action);
                        let result = agent.action(session, req).await;
                        agent.counters.action(kind, result.outcome);
                        let _ = out.send(reply(Message::ActionResult(result))).await;
                    }
                    .instrument(tracing::info_span!("action", id)),
                );
            }
            Message::Error(e) => {
                tracing::warn!(message = %e.message, "the monitor reports an error")
            }
            other => {
                return Err(FrameError::Unexpected {
                    msg_type: other.msg_type(),
                    state: "from a monitor",
                })
            }
        }
        Ok(())
    }

    /// Runs an order that came on `session`. An order read after a monitor of a later
    /// term connected (it waited in the deposed monitor's socket) is refused, here and
    /// again when the reconciler runs it (its stamp carries the session's term).
    async fn action(&self, session: u64, req: ActionRequest) -> ActionResult {
        let deadline = Duration::from_millis(req.deadline_ms.into());
        tracing::info!(action = ?req.action, ?deadline, "action requested");
        if !self.lease.term_leads(session) {
            let over = crate::lease::NotFollowed::TermOver;
            tracing::warn!(action = ?req.action, reason = %over, "monitor order refused");
            return failed(over.to_string());
        }
        let failures_to_result = |failures: Vec<String>| ActionResult {
            outcome: if failures.is_empty() {
                ActionOutcome::Ok
            } else {
                ActionOutcome::Failed
            },
            detail: failures.join("; "),
            position: None,
        };
        let via_reconciler = |make: fn(Stamp, oneshot::Sender<Vec<String>>) -> Command| async move {
            let (tx, rx) = oneshot::channel();
            // Whatever the reconciler was doing for an older order is over.
            let stamp = match self.lease.supersede_for(session) {
                Ok(stamp) => stamp,
                Err(over) => return vec![over.to_string()],
            };
            if self.commands.send(make(stamp, tx)).await.is_err() {
                return vec!["the reconciler stopped".to_string()];
            }
            match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(f)) => f,
                Ok(Err(_dropped)) => vec!["the reconciler stopped".to_string()],
                Err(_elapsed) => vec![format!("not done within {deadline:?}")],
            }
        };
        // STOP SLAVE IO_THREAD is not queued: it is sent when the source died, to be done
        // at once, and a re-point it interleaves with is simply retried by the monitor.
        let _serialized =
            match req.action {
                Action::ChangeMaster { .. }
                | Action::StopReplication
                | Action::StartReplication => {
                    match tokio::time::timeout(deadline, self.replication_changes.lock()).await {
                    Ok(guard) => Some(guard),
                    Err(_elapsed) => {
                        return ActionResult {
                            outcome: ActionOutcome::TimedOut,
                            detail: format!("another replication change on this server did not end within {deadline:?}"),
                            position: None,
                        }
                    }
                }
                }
                _ => None,
            };
        let result = match req.action {
            Action::SetReadOnly { on: true } => Ok(failures_to_result(
                via_reconciler(|stamp, tx| Command::ReadOnly(true, stamp, tx)).await,
            )),
            Action::SetReadOnly { on: false } => Ok(failures_to_result(
                via_reconciler(|stamp, tx| Command::ReadOnly(false, stamp, tx)).await,
            )),
            Action::Demote => Ok(failures_to_result(via_reconciler(Command::Demote).await)),
            Action::KillSessions => self
                .actions_mysql
                .kill_sessions(
                    self.config.agent.max_kill_retries,
                    &[self.host.agent_user.clone(), self.host.monitor_user.clone()],
                )
                .await
                .map(|n| ActionResult {
                    outcome: ActionOutcome::Ok,
                    detail: format!("{n} sessions killed"),
                    position: None,
                }),
            Action::CatchUp { target } => {
                match self.actions_mysql.catch_up(target, deadline).await {
                    Ok(CatchUp::Reached) => Ok(ActionResult {
                        outcome: ActionOutcome::Ok,
                        detail: "caught up".into(),
                        position: self
                            .actions_mysql
                            .gtid_executed()
                            .await
                            .ok()
                            .filter(|g| !g.is_empty())
                            .map(Position::Gtid),
                    }),
                    Ok(CatchUp::NotReplica) => Ok(ActionResult {
                        outcome: ActionOutcome::NotReplica,
                        detail: "the server is not a replica: nothing to catch up on".into(),
                        position: None,
                    }),
                    Ok(CatchUp::TimedOut) => Ok(ActionResult {
                        outcome: ActionOutcome::TimedOut,
                        detail: format!("relay log not applied within {deadline:?}"),
                        position: None,
                    }),
                    Err(e) => Err(e),
                }
            }
            Action::StopReplication => self
                .actions_mysql
                .stop_replication(deadline)
                .await
                .map(|()| ok("replication stopped")),
            Action::StartReplication => {
                if let Err(e) = self.semi_sync.release(&self.actions_mysql).await {
                    return failed(error_chain(&e));
                }
                self.actions_mysql
                    .start_replication(deadline)
                    .await
                    .map(|()| ok("replication started"))
            }
            // Sent when this server's source is dead (before a promotion).
            Action::StopIoThread { source } => match self
                .stop_io_thread_of_vanished_source(source, deadline)
                .await
            {
                Err(e) => Err(e),
                Ok(()) => match self.semi_sync.suspend(&self.actions_mysql).await {
                    Ok(true) => Ok(ok(
                        "replication IO thread stopped; semi-sync master wait suspended until this server is writable or replicates again",
                    )),
                    Ok(false) => Ok(ok("replication IO thread stopped")),
                    // The stop is what was asked; the suspension only saves time.
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "semi-sync master wait not suspended");
                        Ok(ok("replication IO thread stopped"))
                    }
                },
            },
            Action::ChangeMaster {
                host,
                port,
                position,
            } => {
                // A source the config does not name is refused, as a VIP outside it is:
                // a forged or buggy command must not make this server replicate from
                // anywhere.
                let known = self.config.hosts.iter().any(|h| {
                    h.name != self.host.name && h.ip == host && h.mysql_port == port
                });
                if !known {
                    tracing::warn!(%host, port, "replication source refused: not a configured host");
                    return failed(format!(
                        "replication source {host}:{port} refused: not the ip and mysql_port of another configured host"
                    ));
                }
                let password = match self.host.replication_password.reveal() {
                    Ok(p) => p,
                    Err(e) => return failed(error_chain(&e)),
                };
                // A suspended semi-sync master wait stays suspended: a re-point is a slave
                // following the new writer, or the candidate fetching from a slave that is
                // ahead; neither has a semi-sync replica of its own, and each relayed
                // commit would wait rpl_semi_sync_master_timeout (a whole second of the
                // failover, measured). Going writable restores it.
                self.actions_mysql
                    .change_master(
                        &host.to_string(),
                        port,
                        &self.host.replication_user,
                        &password,
                        &position,
                        deadline,
                    )
                    .await
                    .map(|()| ok(&format!("replicating from {host}:{port}")))
            }
        };
        let result = result.unwrap_or_else(|e| match e {
            crate::mysql::MysqlError::Timeout { .. } => ActionResult {
                outcome: ActionOutcome::TimedOut,
                detail: error_chain(&e),
                position: None,
            },
            e => failed(error_chain(&e)),
        });
        tracing::info!(outcome = ?result.outcome, detail = %result.detail, "action done");
        result
    }
}

/// The last frame before the agent closes a connection over a bad frame: what was wrong.
/// Best effort: the connection is ending, a failed send has nobody left to tell.
async fn tell_monitor(out: &mpsc::Sender<(Message, u32, u8)>, e: &impl std::fmt::Display) {
    let _ = out
        .send((
            Message::Error(ErrorMessage {
                message: e.to_string(),
            }),
            0,
            0,
        ))
        .await;
}

fn ok(detail: &str) -> ActionResult {
    ActionResult {
        outcome: ActionOutcome::Ok,
        detail: detail.into(),
        position: None,
    }
}

fn failed(detail: String) -> ActionResult {
    ActionResult {
        outcome: ActionOutcome::Failed,
        detail,
        position: None,
    }
}

/// The only task that changes VIPs and read_only.
async fn reconciler(
    agent: Arc<Agent>,
    exec: Executor,
    mut rx: mpsc::Receiver<Command>,
    woken: Arc<tokio::sync::Notify>,
) {
    let scope = &agent.scope;
    // The desired state followed, with the stamp of the order that set it.
    let mut desired: Option<(Desired, Stamp)> = None;
    let mut refresh = tokio::time::interval(REFRESH);
    let mut seen = Seen::default();
    // Periodic re-announcement of held VIPs (garp_refresh), for switches and clients that
    // missed the takeover burst; off when garp_refresh = "0s".
    let refresh_every = agent.config.agent.garp_refresh;
    let mut garp_tick = tokio::time::interval(refresh_every.unwrap_or(Duration::from_secs(3600)));
    loop {
        // Orders first: a refresh of a desired state that a queued one supersedes would
        // only be cut short.
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Apply(d, stamp, reply) => {
                        let epoch = d.epoch;
                        let applied = match scope.check(&d) {
                            Err(problems) => {
                                tracing::warn!(epoch, ?problems, "desired state refused; nothing changed");
                                Some(Applied { epoch, failures: problems })
                            }
                            Ok(d) => {
                                desired = Some((d, stamp));
                                let failures = converge(&agent, &exec, current(&desired), &mut seen).await;
                                if exec.lease.current(stamp) {
                                    Some(Applied { epoch, failures })
                                } else {
                                    // The fence answers no request: say it here, or the
                                    // monitor would wait out its timeout for nothing. A
                                    // newer order answers for itself (None).
                                    exec.lease.fenced().map(|reason| Applied {
                                        epoch,
                                        failures: vec![format!("self-fenced before state {epoch} was applied: {reason}")],
                                    })
                                }
                            }
                        };
                        let _ = reply.send(applied);
                    }
                    Command::ReadOnly(on, stamp, reply) => {
                        let (mut d, _) = desired.take().unwrap_or_else(|| (empty_desired(0), stamp));
                        if on {
                            drop_writer(&mut d, scope);
                        } else {
                            d.writable = true;
                        }
                        desired = Some((d, stamp));
                        let _ = reply.send(converge(&agent, &exec, current(&desired), &mut seen).await);
                    }
                    Command::Demote(stamp, reply) => {
                        let (mut d, _) = desired.take().unwrap_or_else(|| (empty_desired(0), stamp));
                        drop_writer(&mut d, scope);
                        desired = Some((d, stamp));
                        let _ = reply.send(converge(&agent, &exec, current(&desired), &mut seen).await);
                    }
                    Command::Fenced(fence) => {
                        match desired.take() {
                            // A desired state accepted after the fence (on a session made
                            // after it, which alone may lift it) is what holds now.
                            Some((d, stamp)) if stamp.generation > fence.generation => {
                                desired = Some((d, stamp));
                            }
                            other => {
                                let (mut d, _) = other.unwrap_or_else(|| (empty_desired(0), fence));
                                drop_writer(&mut d, scope);
                                // Applied epoch 0 tells the monitor this host holds no state of its choosing.
                                d.epoch = 0;
                                desired = Some((d, fence));
                            }
                        }
                        let failures = converge(&agent, &exec, current(&desired), &mut seen).await;
                        if !failures.is_empty() {
                            tracing::error!(?failures, "self-fencing incomplete after the VIP removal");
                        }
                    }
                }
            }
            // A hung server answers again and was made read-only: report it now.
            _ = woken.notified() => {
                converge(&agent, &exec, current(&desired), &mut seen).await;
            }
            _ = refresh.tick() => {
                // Re-applies the desired state when the host drifted from it (an address
                // removed by hand, read_only flipped), and refreshes the report.
                converge(&agent, &exec, current(&desired), &mut seen).await;
            }
            _ = garp_tick.tick(), if refresh_every.is_some() => {
                let mut held = agent.status.borrow().held_vips.clone();
                // A writer VIP is announced only while this host is to be the writer and
                // may: one whose lease ran out is about to be fenced (an agent that just
                // thawed), one a newer desired state takes away is about to be removed;
                // announcing either would pull clients back from its successor.
                if !exec.lease.writer_wanted() {
                    held.retain(|ip| !exec.writer_vips.contains(ip));
                }
                if let Err(e) = exec.reannounce(&held).await {
                    tracing::warn!(error = %error_chain(&e), "periodic gratuitous ARP failed");
                }
            }
        }
    }
}

/// The desired state followed and its stamp, as `converge` takes them.
fn current(desired: &Option<(Desired, Stamp)>) -> Option<(&Desired, Stamp)> {
    desired.as_ref().map(|(d, s)| (d, *s))
}

/// What the reconciler remembers of the server between passes.
#[derive(Debug)]
struct Seen {
    kind: ServerKind,
    /// The last read_only the server answered (None: none yet, or its process exited
    /// since: a restarted mysqld comes up read_only from its my.cnf).
    read_only: Option<bool>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            kind: ServerKind::Unknown,
            read_only: None,
        }
    }
}

/// The lease's own task: at the deadline it removes the writer VIPs through netlink, before
/// any SQL, and then hands read_only and the session kill to the reconciler.
async fn lease_task(agent: Arc<Agent>, netlink: Netlink, guards: crate::reconcile::VipGuards) {
    let lease = agent.lease.clone();
    if !lease.enforced() {
        return;
    }
    let writer = agent.scope.writer_vips();
    let interface = agent.host.cluster_interface.clone();
    let timing = agent.timing;
    // Expired with nothing to fence: look again now and then. The executor adds no writer
    // VIP without the lease, so this only catches one added by hand or a writable server.
    let idle = lease.length().max(Duration::from_millis(100));
    // The deadline is on CLOCK_BOOTTIME, and so is its timer (crate::clock): a suspended
    // host fences the moment it wakes, not a suspension later.
    let mut timer = crate::clock::BootTimer::new();
    loop {
        if let Some(deadline) = lease.running_deadline() {
            tokio::select! {
                _ = timer.wait_until(deadline) => {}
                _ = lease.changed() => {}
            }
            continue;
        }
        let expiries = lease.expiries();
        if lease.fenced().is_none() {
            let gate = lease.gate().await;
            let last_seen = agent.status.borrow().held_vips.clone();
            let held = held_writer_vips(&netlink, &interface, &writer, &last_seen).await;
            // Possibly writable counts: a server that said read_only = 0 and then hung
            // may run anything when it wakes up.
            let writable = agent.status.borrow().possibly_writable || agent.grants.may_still_run();
            let fence = (!held.is_empty() || writable)
                .then(|| {
                    lease.try_fence(|| match timing.etcd {
                        Some(e) => format!(
                            "the agent's etcd lease was not renewed in time, or is gone (session_ttl {:?}, given up {:?} early): writer role given up",
                            e.ttl, e.margin
                        ),
                        None => format!(
                            "no renewal from the monitor within the lease ({:?}, given up {:?} early): writer role given up",
                            timing.lease, timing.margin
                        ),
                    })
                })
                .flatten();
            if let Some((reason, stamp)) = fence {
                tracing::warn!(%reason, ?held, "lease expired: fencing myself");
                agent.status.send_modify(|s| s.fenced_reason = reason);
                for ip in &held {
                    guards.before_remove(*ip);
                    // As the reconciler's removal does: an RST can leave only while the
                    // address is ours, and a session through it must not wait for a reply
                    // a hung server may send when it wakes up.
                    if !agent
                        .mysqld_exited
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        if let Err(e) =
                            crate::sockdiag::reset_connections_to(*ip, agent.host.mysql_port)
                        {
                            tracing::warn!(%ip, error = %error_chain(&e), "fence: client connections to the VIP not reset");
                        }
                    }
                }
                remove_vips(&netlink, &interface, &held).await;
                drop(gate);
                lease.mark_judged(expiries);
                if agent.commands.send(Command::Fenced(stamp)).await.is_err() {
                    tracing::error!("the reconciler stopped: read_only not set after the fence");
                }
                continue;
            }
            drop(gate);
        }
        lease.mark_judged(expiries);
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = lease.changed() => {}
        }
    }
}

/// How long one connection attempt waits for a hung server's greeting before it is made
/// again (nothing is lost by waiting: the attempt completes the moment the server wakes).
const WAKE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a killed thread may take to end before the kill is sent again.
const THREAD_END: Duration = Duration::from_secs(1);

/// What happens the moment a hung mysqld answers again, on a connection of its own (the
/// reconciler's may wait behind a statement the server has not read).
///
/// While mysqld does not answer and may be writable (it said read_only = 0 before it
/// hung, or a lift of read_only got no answer), a connection attempt waits for its
/// greeting, which comes the moment the server wakes up. Then, before anything it held
/// can do harm for long: the unanswered lift's thread is killed and waited out (so it
/// cannot run after what follows); unless the current desired state wants this host
/// writable with a valid permit, read_only is set, the application's accounts locked and
/// client sessions killed (statements queued in a hung server run when it wakes up, the
/// old writer's clients' included). Only then does the reconciler report it (read_only
/// read back), which is what confirms a demotion to the monitor.
async fn wake_task(agent: Arc<Agent>, mysql: Mysql, woken: Arc<tokio::sync::Notify>) {
    let grants = agent.grants.clone();
    let spare = [
        agent.host.agent_user.clone(),
        agent.host.monitor_user.clone(),
    ];
    let never_blocked = [
        agent.host.agent_user.clone(),
        agent.host.monitor_user.clone(),
        agent.host.replication_user.clone(),
    ];
    loop {
        grants.wanted().await;
        if let Err(e) = mysql.answer(WAKE_PATIENCE).await {
            if !matches!(e, crate::mysql::MysqlError::Timeout { .. }) {
                // Refused, or the connection broke: not an answer; ask again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        let serial = grants.serial().await;
        if let Some(grant) = grants.unresolved() {
            match mysql.end_thread(grant.connection, THREAD_END).await {
                Ok(true) => {
                    tracing::warn!(
                        connection = grant.connection,
                        "mysqld answers again: the unanswered lift of read_only is killed and gone"
                    );
                    grants.resolve(grant);
                }
                Ok(false) => {
                    tracing::warn!(connection = grant.connection, "the unanswered lift of read_only is still running after its kill: killing it again");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "killing the unanswered lift of read_only failed: trying again");
                    drop(serial);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if !agent.lease.writer_wanted() {
            match mysql.read_only().await {
                Ok(true) => {}
                Ok(false) => {
                    let done = async {
                        mysql.make_read_only().await?;
                        mysql
                            .lock_accounts(&agent.config.agent.block_users, &never_blocked, true)
                            .await?;
                        mysql
                            .kill_sessions(agent.config.agent.max_kill_retries, &spare)
                            .await
                    };
                    match done.await {
                        Ok(killed) => tracing::warn!(
                            killed,
                            "mysqld answers again, writable while this host is not to write: read_only set, client sessions killed"
                        ),
                        // A commit waiting for its semi-sync acknowledgement holds up
                        // read_only = 1 until rpl_semi_sync_master_timeout.
                        Err(e) => {
                            tracing::error!(error = %error_chain(&e), "a woken server may still be writable: trying again");
                            drop(serial);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "reading read_only of a woken server failed: trying again");
                    drop(serial);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        drop(serial);
        grants.set_hung_writable(false);
        woken.notify_one();
        // The reconciler's report of the hang may still be on its way: not a new one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bound on one netlink request of the fence.
const FENCE_STEP: Duration = Duration::from_millis(500);

/// The writer VIPs on the interface now; if the kernel cannot be asked, the ones the last
/// refresh saw (removing one not held is harmless, fencing a host that held none is not:
/// it would close every monitor session for nothing).
async fn held_writer_vips(
    netlink: &Netlink,
    interface: &str,
    writer: &std::collections::BTreeSet<Ipv4Addr>,
    last_seen: &[Ipv4Addr],
) -> Vec<Ipv4Addr> {
    let fallback = || -> Vec<Ipv4Addr> {
        last_seen
            .iter()
            .copied()
            .filter(|ip| writer.contains(ip))
            .collect()
    };
    let read = async {
        let link = netlink.link(interface).await?;
        netlink.addresses(link.index, interface).await
    };
    match tokio::time::timeout(FENCE_STEP, read).await {
        Ok(Ok(addrs)) => addrs
            .into_iter()
            .map(|(ip, _)| ip)
            .filter(|ip| writer.contains(ip))
            .collect(),
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "reading addresses for the fence: using the last refresh's");
            fallback()
        }
        Err(_elapsed) => {
            tracing::warn!("reading addresses for the fence timed out: using the last refresh's");
            fallback()
        }
    }
}

async fn remove_vips(netlink: &Netlink, interface: &str, vips: &[Ipv4Addr]) {
    let link = match tokio::time::timeout(FENCE_STEP, netlink.link(interface)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::error!(error = %error_chain(&e), "fence: the cluster interface cannot be read; writer VIPs not removed");
            return;
        }
        Err(_elapsed) => {
            tracing::error!(
                "fence: reading the cluster interface timed out; writer VIPs not removed"
            );
            return;
        }
    };
    for ip in vips {
        match tokio::time::timeout(FENCE_STEP, netlink.remove(link.index, interface, *ip)).await {
            Ok(Ok(_)) => tracing::info!(%ip, "fence: writer VIP removed"),
            Ok(Err(e)) => {
                tracing::error!(%ip, error = %error_chain(&e), "fence: removing the writer VIP failed")
            }
            Err(_elapsed) => tracing::error!(%ip, "fence: removing the writer VIP timed out"),
        }
    }
}

/// Removes the writer role and writability: the demotion every fencing path applies.
fn drop_writer(d: &mut Desired, scope: &Scope) {
    let writer = scope.writer_vips();
    d.vips.retain(|ip, _| !writer.contains(ip));
    d.writable = false;
}

fn empty_desired(epoch: u32) -> Desired {
    Desired {
        epoch,
        state: mmm_common::types::HostState::Online,
        active_master: String::new(),
        writable: false,
        vips: Default::default(),
        parked: Default::default(),
    }
}

/// Observes, applies the plan (if there is a desired state), observes again and
/// publishes the status. Returns the failed steps.
async fn converge(
    agent: &Agent,
    exec: &Executor,
    desired: Option<(&Desired, Stamp)>,
    seen: &mut Seen,
) -> Vec<String> {
    // What anything else that finds the server writable must leave alone.
    exec.lease
        .set_wanted(desired.filter(|(d, _)| d.writable).map(|(_, s)| s));
    if exec.lease.writer_wanted() {
        // This host is to write: its clients must reach it before it is writable.
        exec.guards.lower_host_fence();
    }
    if seen.kind == ServerKind::Unknown {
        if let Ok(k) = exec.mysql.server_kind().await {
            seen.kind = k;
        }
    }
    let (observed, mut failures) = exec.observe(&agent.scope, true).await;
    let mut silent = unanswered_but_running(exec, &observed, &failures);
    let after = match desired {
        Some((d, stamp)) => {
            let mut steps = plan(d, &observed, &agent.scope);
            if silent {
                // Each would wait out its bound behind whatever hangs the server, holding
                // up the VIP steps and the report; the wake task sets read_only the moment
                // it answers, if it may be writable.
                steps.retain(|s| !matches!(s, Step::SetReadOnly(_) | Step::KillSessions));
            }
            if !steps.is_empty() {
                tracing::info!(epoch = d.epoch, ?steps, "converging");
                failures = exec.run(&steps, stamp).await;
            } else {
                failures.clear();
            }
            let superseded = failures
                .iter()
                .any(|e| matches!(e, crate::reconcile::StepError::Superseded { .. }));
            if superseded {
                // The order that superseded it is queued: it observes and reports afresh.
                return failures.iter().map(|e| error_chain(e)).collect();
            }
            // A server that did not answer a moment ago is not asked again: the report
            // (the writer VIPs gone) must not wait out another timeout.
            let (after, errors) = exec.observe(&agent.scope, !silent).await;
            silent = silent || unanswered_but_running(exec, &after, &errors);
            after
        }
        None => observed,
    };
    publish(agent, exec, desired.map(|(d, _)| d), &after, silent, seen).await;
    // A writer role this host cannot take for want of a permit is reported in every
    // heartbeat (SELF_FENCED) for as long as that lasts, not only at the fence: a fleet's
    // leader fails over a writer that stays so (an agent cut from etcd alone would
    // otherwise be an outage that `show` calls a healthy writer).
    let permitless = failures
        .iter()
        .any(|e| matches!(e, crate::reconcile::StepError::NoLease { .. }));
    agent.status.send_if_modified(|s| {
        let changed = s.permitless != permitless;
        s.permitless = permitless;
        changed
    });
    // Text from here on: the monitor shows them (Applied::failures).
    failures.iter().map(|e| error_chain(e)).collect()
}

/// mysqld did not answer, and nothing says its process is gone (the probe saw no exit, the
/// connection was not refused): it may still run what it holds when it wakes up.
fn unanswered_but_running(
    exec: &Executor,
    observed: &Observed,
    errors: &[crate::reconcile::StepError],
) -> bool {
    let refused = errors.iter().any(|e| match e {
        crate::reconcile::StepError::Mysql(m) => m.refused(),
        _ => false,
    });
    observed.read_only.is_none() && !exec.mysqld_exited() && !refused
}

async fn publish(
    agent: &Agent,
    exec: &Executor,
    desired: Option<&Desired>,
    observed: &Observed,
    silent: bool,
    seen: &mut Seen,
) {
    // A dead mysqld (the probe saw it exit) answers nothing: do not spend time asking.
    let (replication, gtid, binlog) = if exec.mysqld_exited() || silent {
        (Ok(None), String::new(), None)
    } else {
        (
            exec.mysql.replication().await,
            exec.mysql.gtid_executed().await.unwrap_or_default(),
            exec.mysql.binlog_position().await.unwrap_or(None),
        )
    };
    match observed.read_only {
        Some(ro) => seen.read_only = Some(ro),
        None if !silent => seen.read_only = None,
        None => {}
    }
    let grant_live = exec.grants.may_still_run();
    // A silent server whose read_only this agent never read (it started while mysqld
    // hung) may be writable: only a read back read_only = 1, or the process gone, says
    // it is not.
    let possibly_writable =
        observed.read_only == Some(false) || grant_live || (silent && seen.read_only != Some(true));
    // A hung server that may be writable: the wake task waits for its answer (and makes
    // it read-only then, unless this host is to be the writer); nothing else queues SQL
    // behind it meanwhile.
    let hung_writable = silent && possibly_writable;
    exec.grants.set_hung_writable(hung_writable);
    let wanted = desired.is_some_and(|d| d.writable) && exec.lease.writer_wanted();
    // What keeps clients from it whatever it runs when it wakes up: no writer VIP here;
    // without a writer VIP at all, its address closed to the network (docs/fencing.md).
    // And no lift of read_only that can still take effect.
    let fence_holds = match exec.writer_vips.is_empty() {
        false => observed
            .vips
            .iter()
            .all(|ip| !exec.writer_vips.contains(ip)),
        true if hung_writable && !wanted => exec.guards.raise_host_fence(),
        true => false,
    };
    if exec.guards.host_fence_raised()
        && (wanted || (observed.read_only == Some(true) && !grant_live))
    {
        exec.guards.lower_host_fence();
    }
    let stall_fenced = hung_writable && !wanted && fence_holds && !grant_live;
    let matches = desired.is_some_and(|d| plan(d, observed, &agent.scope).is_empty());
    agent.status.send_modify(|s| {
        s.server = Some(seen.kind);
        s.mysql_up = observed.read_only.is_some();
        s.read_only = observed.read_only;
        if observed.read_only.is_some() {
            s.answered = Some(std::time::Instant::now());
        }
        s.possibly_writable = possibly_writable;
        s.stall_fenced = stall_fenced;
        s.held_vips = observed.vips.iter().copied().collect();
        s.replication = replication.unwrap_or(None);
        s.gtid_executed = gtid;
        s.binlog = binlog;
        // The epoch is reported only once the host really is in that state.
        s.applied_epoch = match desired {
            Some(d) if matches && s.fenced_reason.is_empty() => d.epoch,
            _ => 0,
        };
    });
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("host {0:?} is not in the config")]
    UnknownHost(String),
    #[error("reading the agent user's password")]
    Secret(#[from] mmm_common::config::SecretError),
    #[error("listening for the monitor on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
