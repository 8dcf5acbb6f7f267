//! The agent's side of the protocol: the accept loop, each monitor connection's handshake
//! and its reader and writer, and the dispatch of what a monitor sends. The agent's state
//! (`Agent`) is built and its tasks started here.
//!
//! In a fleet (`[coordination]`) each handshake is judged by the monitor's term
//! (`crate::term`) before the Challenge goes out, and the lease is renewed by the agent's
//! own etcd lease (`crate::etcd`), not by the monitor.
//!
//! Tasks: one accept loop; per monitor connection a reader and a writer; one reconciler
//! (`crate::reconciler`) that alone changes VIPs and read_only (so two desired states never
//! interleave); the lease's task, which fences without SQL, and the wake task, which waits
//! on a hung mysqld that may be writable and makes it read-only the moment it answers
//! (`crate::fence`). Heartbeats are answered by the connection's reader from the status
//! snapshot (`crate::status`) at once, never waiting on SQL or netlink; actions run in
//! `crate::actions`.

use crate::fence::{lease_task, wake_task};
use crate::garp::GarpSender;
use crate::lease::{Lease, Renewal};
use crate::mysql::{Mysql, SemiSyncHold};
use crate::reconcile::{error_chain, Executor, Scope};
use crate::reconciler::{reconciler, Command};
use crate::status::Status;
use crate::term::{Accepted, Admitted, Shown, Terms};
use crate::vip::Netlink;
use mmm_common::config::{ClusterKey, Config, Host};
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::*;
use mmm_common::timing::Timing;
use mmm_common::types::Fencing;
use std::net::SocketAddr;
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

/// How a monitor connection ended without an error.
pub(crate) enum ConnectionEnded {
    Disconnected,
    /// Its term was refused (already logged, once per term).
    Refused,
}

/// Everything the agent's tasks share.
pub struct Agent {
    pub config: Config,
    /// The fencing bounds, derived from `config` once.
    pub(crate) timing: Timing,
    pub host: Host,
    pub(crate) key: ClusterKey,
    pub(crate) scope: Scope,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) lease: Arc<Lease>,
    /// The highest monitor term seen (a fleet's leadership term; 0 without a fleet).
    pub(crate) terms: Terms,
    /// In a fleet: etcd's election, which a monitor's term must lead to be obeyed.
    pub(crate) election: Option<Arc<crate::election::Election>>,
    /// The probe saw mysqld exit and no new one listening yet (see Executor).
    pub(crate) mysqld_exited: Arc<std::sync::atomic::AtomicBool>,
    /// Lifts of read_only whose outcome is unknown, and whether the server hung while it
    /// may be writable (shared with the Executor and the task that acts when it wakes).
    pub(crate) grants: Arc<crate::mysql::Grants>,
    /// The last desired state followed: the same one re-sent keeps its plan going.
    pub(crate) followed: std::sync::Mutex<Option<DesiredState>>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) actions_mysql: Mysql,
    /// For status queries: promotion decisions need the server's state now, not the
    /// snapshot of up to REFRESH ago, and must not wait behind a long action.
    pub(crate) status_mysql: Mysql,
    /// The probe's seam: events sent here reach every connected monitor at once.
    pub(crate) probe_events: broadcast::Sender<ProbeEvent>,
    pub(crate) semi_sync: SemiSyncHold,
    /// Held for the whole of an action that changes replication: a re-point is several
    /// statements (STOP, CHANGE, START), and two of them interleaved fail with "you have
    /// a running slave" or leave the server following the wrong source.
    pub(crate) replication_changes: tokio::sync::Mutex<()>,
    /// Prohibit routes to a vanished source while its IO thread is stopped.
    pub(crate) routes: crate::route::Routes,
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
