//! The monitor's decision logic: a pure state machine. `Cluster::handle(now, Event)`
//! returns the actions to take; it reads no clock, opens no socket and spawns nothing,
//! so every behaviour (MMM's, and the fixes docs/failure-detection.md lists) is a test of this module.
//!
//! Detection is separate from the decision to act: checks and agent reports update
//! per-host evidence ([`health`]); [`Cluster::evaluate`] turns evidence into MMM's host
//! states; role distribution and the promotion state machine ([`promote`]) act on states.

pub mod commands;
pub mod health;
pub mod promote;
pub mod roles;
pub mod show;
pub mod status;

use health::{CheckTrack, Flaps, Verdict};
use mmm_common::config::Config;
use mmm_common::gtid::GtidSet;
use mmm_common::proto::{
    self, ActionOutcome, DesiredState, Position, ProbeEventKind, StatusReport,
};
use mmm_common::types::{CheckKind, Fencing, HostMode, HostState, MonitorMode};
use promote::Promotion;
use roles::RoleTable;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::control::Command;

/// Milliseconds on the monitor's clock (anchored to wall time at start, monotonic after),
/// so that flap history survives a restart.
pub type Millis = u64;

/// Replication failures are ignored this long after the source came ONLINE, while the
/// IO thread reconnects. MMM used 60 s, MySQL's default master-connect-retry; the agent
/// re-points with MASTER_CONNECT_RETRY = 1, so 10 s leaves a wide margin.
pub const SOURCE_SETTLE: Millis = 10_000;

/// How often the GTID sets of hosts waiting in AWAITING_RECOVERY are asked for again.
const RECOVERING_REFRESH: Millis = 2000;

fn ms(d: Duration) -> Millis {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// One check's result as the IO shell reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    /// `refused`: the server actively refused (TCP RST), as opposed to a timeout.
    Failed {
        message: String,
        refused: bool,
    },
    /// Neither: e.g. MySQL error 1040 (too many connections) means alive but busy.
    Unknown {
        message: String,
    },
}

/// What an agent's heartbeat tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentView {
    pub applied_epoch: u32,
    pub uptime_s: u32,
    pub mysql_up: bool,
    pub read_only: bool,
    pub self_fenced: bool,
    pub held_vips: Vec<Ipv4Addr>,
    pub source: Option<(Ipv4Addr, u16)>,
    /// Both replication threads run.
    pub replicating: bool,
    pub probe: proto::ProbeState,
}

impl AgentView {
    /// Equal in everything a decision reads (the uptime is read only at transitions).
    pub fn same_but_uptime(&self, other: &AgentView) -> bool {
        let AgentView {
            applied_epoch,
            uptime_s: _,
            mysql_up,
            read_only,
            self_fenced,
            held_vips,
            source,
            replicating,
            probe,
        } = self;
        *applied_epoch == other.applied_epoch
            && *mysql_up == other.mysql_up
            && *read_only == other.read_only
            && *self_fenced == other.self_fenced
            && *held_vips == other.held_vips
            && *source == other.source
            && *replicating == other.replicating
            && *probe == other.probe
    }

    pub fn from_heartbeat(hb: &proto::AgentHeartbeat) -> AgentView {
        use proto::hb_flags as f;
        AgentView {
            applied_epoch: hb.applied_epoch,
            uptime_s: hb.uptime_s,
            mysql_up: hb.flags & f::MYSQL_UP != 0,
            read_only: hb.flags & f::READ_ONLY != 0,
            self_fenced: hb.flags & f::SELF_FENCED != 0,
            held_vips: hb.held_vips.clone(),
            source: hb.source,
            replicating: hb.flags & f::IO_RUNNING != 0 && hb.flags & f::SQL_RUNNING != 0,
            probe: hb.probe,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed: traps, leases, deadlines and auto_set_online are looked at.
    Tick,
    Check {
        host: String,
        check: CheckKind,
        result: CheckResult,
    },
    /// The agent's eBPF probe saw mysqld's process exit or its listening socket change.
    Probe {
        host: String,
        kind: ProbeEventKind,
    },
    AgentHeartbeat {
        host: String,
        view: AgentView,
    },
    /// No heartbeat answer for agent_timeout, or the connection failed.
    AgentUnreachable {
        host: String,
        reason: String,
    },
    AgentStatus {
        host: String,
        report: StatusReport,
    },
    Applied {
        host: String,
        epoch: u32,
        failures: Vec<String>,
    },
    ActionDone {
        host: String,
        id: u64,
        outcome: ActionOutcome,
        detail: String,
        position: Option<Position>,
    },
    KillHostDone {
        host: String,
        ok: bool,
        output: String,
    },
    /// Whether any of ping_ips answers (MMM's network guard).
    Network {
        ok: bool,
    },
    Command {
        reply: u64,
        command: Command,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendDesired {
        host: String,
        desired: DesiredState,
    },
    AgentAction {
        host: String,
        id: u64,
        action: proto::Action,
        deadline: Duration,
    },
    QueryStatus {
        host: String,
    },
    /// Stop heartbeats to this agent and drop its connection (abortively, discarding
    /// queued frames): from now on its lease runs out.
    Disconnect {
        host: String,
    },
    /// As Disconnect, and stay disconnected until Release: the writer's lease runs out
    /// while trap_period is still being counted (its agent and ping are both silent).
    Isolate {
        host: String,
    },
    /// End an Isolate: the host answers again before anything was decided.
    Release {
        host: String,
    },
    KillHost {
        host: String,
        ping_ok: bool,
    },
    Persist(status::StatusRecord),
    /// A state transition or a failover step, logged once.
    Notify {
        host: Option<String>,
        message: String,
    },
    Reply {
        id: u64,
        text: String,
    },
}

/// Everything the monitor knows about one host.
#[derive(Debug, Clone)]
pub struct HostRec {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mode: HostMode,
    pub peer: Option<String>,
    pub mysql_port: u16,
    pub state: HostState,
    pub since: Millis,
    pub reason: String,
    pub checks: [CheckTrack; 4],
    /// The probe saw mysqld die and no sign of life came since.
    pub probe_dead: bool,
    pub agent_up: bool,
    pub agent_seen: Option<Millis>,
    pub view: Option<AgentView>,
    /// Agent uptime when the host left ONLINE (MMM's last_uptime).
    pub uptime_at_failure: Option<u32>,
    pub flaps: Flaps,
    pub flapping: bool,
    pub errant: Option<String>,
    pub gtid: Option<GtidSet>,
    /// Why the last reported GTID set cannot be compared (the agent could not read it,
    /// or it does not parse): the host is then judged to have errant transactions.
    pub gtid_unknown: Option<String>,
    pub last_sent: Option<DesiredState>,
    pub online_since: Millis,
    /// Which master this slave was last told to replicate from, and when.
    pub repointed: Option<(Ipv4Addr, Millis)>,
    /// When its full status (GTID set) was last asked for, and last received.
    pub status_asked: Option<Millis>,
    pub gtid_at: Option<Millis>,
    /// Since when its link is held down (Isolate): a promotion counts its lease from here.
    pub isolated_since: Option<Millis>,
}

impl HostRec {
    fn check(&self, c: CheckKind) -> &CheckTrack {
        &self.checks[c as usize]
    }
}

fn check_index(c: CheckKind) -> usize {
    match c {
        CheckKind::Ping => 0,
        CheckKind::Mysql => 1,
        CheckKind::RepThreads => 2,
        CheckKind::RepBacklog => 3,
    }
}

pub struct Cluster {
    config: Arc<Config>,
    mode: MonitorMode,
    passive_cause: String,
    hosts: Vec<HostRec>,
    roles: RoleTable,
    network_ok: bool,
    /// The monitor host's offset from UTC, seconds: `checks` prints local time as MMM
    /// did. Told by the shell (the core reads no clock and no timezone).
    utc_offset_s: i64,
    epoch: u32,
    promotion: Option<Promotion>,
    /// A promotion was refused; retried after this time. The reason is shown.
    blocked: Option<(Millis, String)>,
    next_id: u64,
    last_persisted: Option<status::StatusRecord>,
    /// When the monitor entered WAIT mode.
    wait_since: Millis,
    /// A writer that lost its role while no host could take over: fenced first when a
    /// promotion starts.
    pending_fence: Option<String>,
    /// Replicas of an isolated writer whose IO threads were stopped early (their
    /// semi-sync STOP waits for the vanished master): restarted if the writer comes back.
    early_stopped: std::collections::BTreeSet<String>,
    /// State transitions so far: a handler that made one judges every host again.
    pub(crate) transitions: u64,
    /// Hosts set online (or returning) while a promotion ran: rejoined when it ends.
    pub(crate) rejoin_after_promotion: std::collections::BTreeSet<String>,
    /// The status record is written at the end of the event.
    persist_due: bool,
    /// When the last Tick was handled, and the next deadline after it.
    last_tick: Millis,
    timer: Option<Millis>,
    /// Host name -> index into `hosts`: events name hosts, and clusters have hundreds.
    index: std::collections::HashMap<String, usize>,
}

impl Cluster {
    /// A cluster as the config describes it, every host AWAITING_RECOVERY until it is
    /// set online or a stored status record says otherwise (see [`Cluster::restore`]).
    pub fn new(config: Arc<Config>, now: Millis) -> Cluster {
        let hosts = config
            .hosts
            .iter()
            .map(|h| HostRec {
                name: h.name.clone(),
                ip: h.ip,
                mode: h.mode,
                peer: h.peer.clone(),
                mysql_port: h.mysql_port,
                state: HostState::AwaitingRecovery,
                since: now,
                reason: "monitor started".into(),
                checks: Default::default(),
                probe_dead: false,
                agent_up: false,
                agent_seen: None,
                view: None,
                uptime_at_failure: None,
                flaps: Flaps::default(),
                flapping: false,
                errant: None,
                gtid: None,
                gtid_unknown: None,
                last_sent: None,
                online_since: now,
                repointed: None,
                status_asked: None,
                gtid_at: None,
                isolated_since: None,
            })
            .collect();
        Cluster {
            roles: RoleTable::new(&config),
            mode: config.monitor.mode,
            passive_cause: String::new(),
            hosts,
            network_ok: true,
            utc_offset_s: 0,
            epoch: 0,
            promotion: None,
            blocked: None,
            next_id: 1,
            last_persisted: None,
            wait_since: now,
            pending_fence: None,
            early_stopped: Default::default(),
            transitions: 0,
            rejoin_after_promotion: Default::default(),
            persist_due: false,
            last_tick: 0,
            timer: None,
            index: config
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.name.clone(), i))
                .collect(),
            config,
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Every host, in config order (a read-only view for the shell).
    pub fn hosts(&self) -> &[HostRec] {
        &self.hosts
    }

    pub fn roles(&self) -> &RoleTable {
        &self.roles
    }

    /// When the promotion under way started, if one is.
    pub fn promotion_started(&self) -> Option<Millis> {
        self.promotion.as_ref().map(|p| p.started)
    }

    /// Passive from the start: the stored status cannot be trusted. The cause is shown.
    pub fn go_passive(&mut self, cause: String) {
        self.mode = MonitorMode::Passive;
        self.passive_cause = cause;
    }

    /// The monitor host's offset from UTC now (it changes with daylight saving time).
    pub fn set_utc_offset(&mut self, seconds: i64) {
        self.utc_offset_s = seconds;
    }

    pub fn host(&self, name: &str) -> Option<&HostRec> {
        self.index.get(name).map(|i| &self.hosts[*i])
    }

    pub(crate) fn host_mut(&mut self, name: &str) -> Option<&mut HostRec> {
        self.index.get(name).map(|i| &mut self.hosts[*i])
    }

    fn trap(&self, c: CheckKind) -> Millis {
        ms(self.config.checks.get(c).trap_period)
    }

    /// MMM's `$checks->X($host)`: the check counts as passing.
    pub fn check_ok(&self, h: &HostRec, c: CheckKind, now: Millis) -> bool {
        h.check(c).ok(now, self.trap(c))
    }

    pub fn verdict(&self, h: &HostRec, c: CheckKind, now: Millis) -> Verdict {
        h.check(c).verdict(now, self.trap(c))
    }

    /// Whether the host is alive as far as the decision logic is concerned.
    fn alive(&self, h: &HostRec, now: Millis) -> bool {
        !h.probe_dead
            && self.check_ok(h, CheckKind::Ping, now)
            && self.check_ok(h, CheckKind::Mysql, now)
    }

    pub fn active_master(&self) -> Option<&str> {
        self.roles.writer_holder()
    }

    /// Eligible for roles: ONLINE and its agent reachable (MMM's agent_down check).
    /// May take a role: ONLINE, its agent heard, and that agent able to reach its mysqld
    /// (else every action of a promotion would fail).
    pub(crate) fn eligible(&self, name: &str) -> bool {
        self.host(name).is_some_and(|h| {
            h.state == HostState::Online
                && h.agent_up
                && h.errant.is_none()
                && h.view.as_ref().is_some_and(|v| v.mysql_up)
        })
    }

    /// The single entry point: one event in, the actions it calls for out.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        // Cheap to keep: promotions are rare and small.
        let promotion_before = self.promotion.clone();
        let writer_before = self.roles.writer_holder().map(str::to_string);
        let transitions_before = self.transitions;
        // Hosts whose evidence changed: evaluated now, never left for a later Tick.
        let mut evaluate: Vec<String> = Vec::new();
        let tick = event == Event::Tick;
        let quiet_kind = matches!(event, Event::AgentHeartbeat { .. } | Event::Check { .. });
        match event {
            Event::Tick => {
                self.evaluate_all(now, &mut out);
            }
            Event::Check {
                host,
                check,
                result,
            } => {
                let trap = self.trap(check);
                let agent_up = self.host(&host).is_some_and(|h| h.agent_up);
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                let track = &mut h.checks[check_index(check)];
                let before = track.verdict(now, trap);
                match result {
                    CheckResult::Ok => {
                        track.record_ok(now, trap);
                        if check == CheckKind::Mysql {
                            h.probe_dead = false;
                        }
                    }
                    // Overload is not death: the server answered, it is alive.
                    CheckResult::Unknown { .. } => {}
                    CheckResult::Failed { message, refused } => {
                        // Refused while the agent answers: mysqld is not there. Definitive.
                        let definitive = refused && check == CheckKind::Mysql && agent_up;
                        track.record_failure(now, message, definitive);
                    }
                }
                if track.verdict(now, trap) != before {
                    evaluate.push(host);
                }
            }
            Event::Probe { host, kind } => {
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                match kind {
                    ProbeEventKind::ProcessExit | ProbeEventKind::ListenClose => {
                        if !h.probe_dead {
                            h.probe_dead = true;
                            let what = if kind == ProbeEventKind::ProcessExit {
                                "mysqld process exited"
                            } else {
                                "mysqld stopped listening"
                            };
                            h.checks[check_index(CheckKind::Mysql)].record_failure(
                                now,
                                format!("{what} (probe)"),
                                true,
                            );
                            evaluate.push(host);
                        }
                    }
                    ProbeEventKind::ListenOpen => h.probe_dead = false,
                }
            }
            Event::AgentHeartbeat { host, view } => {
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                let was_up = h.agent_up;
                h.agent_up = true;
                h.agent_seen = Some(now);
                // What it reports changed (it replicates again, mysqld came up...): judged
                // now. Its uptime alone changes every second and decides nothing by itself.
                let changed = h.view.as_ref().is_none_or(|v| !v.same_but_uptime(&view));
                h.view = Some(view);
                if changed && was_up {
                    evaluate.push(host.clone());
                }
                if !was_up {
                    out.push(Action::Notify {
                        host: Some(host.clone()),
                        message: format!("Agent on host '{host}' is reachable again"),
                    });
                    // It needs to hear its desired state again on the new connection.
                    h.last_sent = None;
                    evaluate.push(host.clone());
                }
                self.promotion_on_heartbeat(now, &host, &mut out);
            }
            Event::AgentUnreachable { host, reason } => {
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                if h.agent_up || h.agent_seen.is_none() {
                    h.agent_up = false;
                    out.push(Action::Notify {
                        host: Some(host.clone()),
                        message: format!("Can't reach agent on host '{host}': {reason}"),
                    });
                    evaluate.push(host);
                }
            }
            Event::AgentStatus { host, report } => {
                if let Some(h) = self.host_mut(&host) {
                    match report.gtid_set() {
                        Ok(set) => {
                            h.gtid = Some(set);
                            h.gtid_unknown = None;
                        }
                        // Fail closed: an unknown set is not an empty one.
                        Err(e) => {
                            h.gtid = None;
                            h.gtid_unknown = Some(e.to_string());
                        }
                    }
                    h.gtid_at = Some(now);
                }
                self.check_errant(now, &host, &mut out);
                self.promotion_on_status(now, &host, &report, &mut out);
                // A fresh GTID set may let a waiting host rejoin or come online: the
                // host's own, or the writer's for every host waiting.
                if self.active_master() == Some(host.as_str()) {
                    evaluate.extend(
                        self.hosts
                            .iter()
                            .filter(|h| h.state == HostState::AwaitingRecovery)
                            .map(|h| h.name.clone()),
                    );
                }
                evaluate.push(host);
            }
            Event::Applied {
                host,
                epoch,
                failures,
            } => {
                if !failures.is_empty() {
                    out.push(Action::Notify {
                        host: Some(host.clone()),
                        message: format!(
                            "Agent on '{host}' could not apply state {epoch}: {}",
                            failures.join("; ")
                        ),
                    });
                }
                self.promotion_on_applied(now, &host, epoch, &failures, &mut out);
            }
            Event::ActionDone {
                host,
                id,
                outcome,
                detail,
                position,
            } => {
                self.promotion_on_action(now, &host, id, outcome, &detail, position, &mut out);
            }
            Event::KillHostDone { host, ok, output } => {
                out.push(Action::Notify {
                    host: Some(host.clone()),
                    message: if ok {
                        format!(
                            "kill_host_bin for '{host}' succeeded{}",
                            if output.is_empty() {
                                String::new()
                            } else {
                                format!(": {output}")
                            }
                        )
                    } else {
                        format!("Could not kill host '{host}' - kill_host_bin failed: {output}")
                    },
                });
                self.promotion_on_kill_host(now, &host, ok, &mut out);
            }
            Event::Network { ok } => {
                if ok != self.network_ok {
                    self.network_ok = ok;
                    out.push(Action::Notify {
                        host: None,
                        message: if ok {
                            "Network is reachable again: state changes resume".into()
                        } else {
                            "No ping_ips answer: network guard holds every state as it is".into()
                        },
                    });
                    if ok {
                        self.evaluate_all(now, &mut out);
                    }
                }
            }
            Event::Command { reply, command } => {
                let text = self.command(now, reply, command, &mut out);
                if let Some(text) = text {
                    out.push(Action::Reply { id: reply, text });
                }
            }
        }
        self.isolate_silent_writer(now, &mut out);
        if !evaluate.is_empty() {
            for host in &evaluate {
                self.evaluate_host(now, host, &mut out);
            }
            self.after_changes(now, &mut out);
        } else if promotion_before != self.promotion
            || self.roles.writer_holder() != writer_before.as_deref()
        {
            // A promotion moved on (or ended): send what it decided, persist it.
            self.after_changes(now, &mut out);
        }
        self.settle(now, transitions_before, writer_before, &mut out);
        if std::mem::take(&mut self.persist_due) {
            self.persist(now, &mut out);
        }
        if tick {
            self.last_tick = now;
        }
        // A heartbeat or check result that changed nothing (nearly all of them: hundreds
        // a second) moves no deadline: the timer is not recomputed, which costs O(hosts).
        let quiet = quiet_kind
            && out.is_empty()
            && evaluate.is_empty()
            && promotion_before == self.promotion;
        if !quiet {
            self.timer = self.compute_next_deadline(self.last_tick);
        }
        out
    }

    /// A host's state depends on others' (a replica's source went down, the writer moved):
    /// after any transition every host is judged again until nothing changes, so nothing
    /// waits for a later Tick. Bounded: each pass needs a new transition to continue.
    fn settle(
        &mut self,
        now: Millis,
        mut transitions: u64,
        mut writer: Option<String>,
        out: &mut Vec<Action>,
    ) {
        for _ in 0..8 {
            let moved = self.roles.writer_holder() != writer.as_deref();
            if self.transitions == transitions && !moved {
                return;
            }
            transitions = self.transitions;
            writer = self.roles.writer_holder().map(str::to_string);
            self.evaluate_all(now, out);
        }
    }

    /// Re-evaluates every host, then distributes roles and advances the promotion.
    fn evaluate_all(&mut self, now: Millis, out: &mut Vec<Action>) {
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        for name in &names {
            self.evaluate_host(now, name, out);
        }
        self.after_changes(now, out);
    }

    /// Mode changes, role distribution, promotion progress, desired states, persistence.
    pub(crate) fn after_changes(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.wait_mode(now, out);
        self.distribute(now, out);
        self.promotion_tick(now, out);
        self.send_desired(out);
        if self.promotion.is_none() && !self.rejoin_after_promotion.is_empty() {
            for host in std::mem::take(&mut self.rejoin_after_promotion) {
                let back = self.host(&host).is_some_and(|h| {
                    h.agent_up && matches!(h.state, HostState::Online | HostState::AwaitingRecovery)
                });
                if back {
                    self.rejoin_replication(now, &host, out);
                }
            }
        }
        self.fix_slave_sources(now, out);
        self.refresh_recovering(now, out);
        // Written once, when the event is done: one record per event, however many
        // passes it took.
        self.persist_due = true;
    }

    /// Hosts waiting in AWAITING_RECOVERY may gain errant transactions while they wait
    /// (a SUPER user writing): their GTID sets and the writer's are asked for again
    /// every few seconds, so `show` and set_online judge a recent picture.
    fn refresh_recovering(&mut self, now: Millis, out: &mut Vec<Action>) {
        const EVERY: Millis = RECOVERING_REFRESH;
        let due: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.state == HostState::AwaitingRecovery && h.agent_up)
            .filter(|h| {
                h.status_asked
                    .is_none_or(|t| now.saturating_sub(t) >= EVERY)
            })
            .map(|h| h.name.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mut ask = due;
        if let Some(w) = self.active_master().map(str::to_string) {
            ask.push(w);
        }
        for name in ask {
            if let Some(h) = self.host_mut(&name) {
                h.status_asked = Some(now);
            }
            out.push(Action::QueryStatus { host: name });
        }
    }

    /// A live slave that replicates from anything but the active master (it was down
    /// while the slaves were re-pointed, or someone changed it) is re-pointed; retried
    /// after promotion_timeout if it still is not.
    fn fix_slave_sources(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.promotion.is_some() || self.mode == MonitorMode::Passive || !self.network_ok {
            return;
        }
        let Some(active) = self.active_master().and_then(|a| self.host(a)).cloned() else {
            return;
        };
        let retry = ms(self.config.monitor.promotion_timeout);
        let position = Position::Gtid(
            active
                .gtid
                .as_ref()
                .map(|g| g.position())
                .unwrap_or_default(),
        );
        let due: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| {
                h.mode == HostMode::Slave && h.agent_up && h.errant.is_none() && self.alive(h, now)
            })
            .filter(|h| !matches!(h.state, HostState::AdminOffline | HostState::HardOffline))
            .filter(|h| {
                h.view
                    .as_ref()
                    .is_some_and(|v| v.source != Some((active.ip, active.mysql_port)))
            })
            .filter(|h| {
                h.repointed
                    .is_none_or(|(ip, t)| ip != active.ip || now.saturating_sub(t) >= retry)
            })
            .map(|h| h.name.clone())
            .collect();
        for name in due {
            let id = self.next_id();
            if let Some(h) = self.host_mut(&name) {
                h.repointed = Some((active.ip, now));
            }
            out.push(Action::Notify {
                host: Some(name.clone()),
                message: format!(
                    "Slave '{name}' does not replicate from the active master '{}': re-pointing it",
                    active.name
                ),
            });
            out.push(Action::AgentAction {
                host: name,
                id,
                action: proto::Action::ChangeMaster {
                    host: active.ip,
                    port: active.mysql_port,
                    position: position.clone(),
                },
                deadline: Duration::from_millis(retry),
            });
        }
    }

    fn set_state(
        &mut self,
        now: Millis,
        name: &str,
        to: HostState,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        let flap_window = ms(self.config.monitor.flap_duration);
        let flap_count = self.config.monitor.flap_count;
        let Some(h) = self.host(name) else { return };
        if h.state == to {
            return;
        }
        self.transitions += 1;
        let Some(h) = self.host_mut(name) else { return };
        let from = h.state;
        if from == HostState::Online {
            h.uptime_at_failure = h.view.as_ref().map(|v| v.uptime_s);
            if h.flaps.depart(now, flap_window, flap_count) && !h.flapping {
                h.flapping = true;
                out.push(Action::Notify {
                    host: Some(name.into()),
                    message: format!("Host '{name}' is flapping!"),
                });
            }
        }
        if to == HostState::Online {
            h.online_since = now;
        }
        h.state = to;
        h.since = now;
        h.reason = reason.clone();
        out.push(Action::Notify {
            host: Some(name.into()),
            message: format!(
                "State of host '{name}' changed from {from} to {to}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        });
        // Roles live only on ONLINE hosts; MMM kept them in manual mode.
        if to != HostState::Online
            && !matches!(
                self.mode,
                MonitorMode::Manual | MonitorMode::Wait | MonitorMode::Passive
            )
        {
            self.clear_roles(now, name, out);
        }
    }

    pub(crate) fn clear_roles(&mut self, now: Millis, name: &str, out: &mut Vec<Action>) {
        if self.promotion.as_ref().is_some_and(|p| p.to == name) {
            self.abort_promotion(now, format!("'{name}' is no longer ONLINE"), out);
        }
        if self.roles.clear_host(name) {
            out.push(Action::Notify {
                host: Some(name.into()),
                message: format!(
                    "Removed the {} role from host '{name}'",
                    self.roles.writer_role
                ),
            });
            self.writer_lost(now, name, out);
        }
    }

    /// The writer's agent and its ping both silent: its lease starts now, in parallel with
    /// trap_period, by holding its link down (nothing can renew the lease until Release).
    /// If trap_period then fails the host, the promotion counts the lease from here instead
    /// of waiting it out afterwards. If ping answers again first, the link is released: a
    /// blip costs the writer at most a self-fence and its undoing, never a failover.
    fn isolate_silent_writer(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.config.agent.fencing != Fencing::Lease || self.promotion.is_some() {
            return;
        }
        let Some(w) = self.roles.writer_holder().map(str::to_string) else {
            return;
        };
        let network_ok = self.network_ok;
        let Some(h) = self.host_mut(&w) else {
            return;
        };
        let ping_failing = h.checks[check_index(CheckKind::Ping)].failing.is_some();
        match h.isolated_since {
            None if network_ok && !h.agent_up && h.agent_seen.is_some() && ping_failing => {
                h.isolated_since = Some(now);
                out.push(Action::Isolate { host: w.clone() });
                out.push(Action::Notify {
                    host: Some(w.clone()),
                    message: format!("Agent and ping of writer '{w}' are silent: its link is held down, so its lease runs out while trap_period is counted"),
                });
                // Their STOP SLAVE would wait for the vanished master (semi-sync's
                // kill-connection): start it now too, in parallel with trap_period.
                let stopped = self.stop_io_threads_of(&w, out);
                self.early_stopped.extend(stopped);
            }
            Some(_) if !ping_failing => {
                h.isolated_since = None;
                out.push(Action::Release { host: w.clone() });
                out.push(Action::Notify {
                    host: Some(w.clone()),
                    message: format!("Writer '{w}' answers ping again: its link is released"),
                });
                let deadline = Duration::from_millis(ms(self.config.monitor.promotion_timeout));
                for s in std::mem::take(&mut self.early_stopped) {
                    let id = self.next_id();
                    out.push(Action::AgentAction {
                        host: s,
                        id,
                        action: proto::Action::StartReplication,
                        deadline,
                    });
                }
            }
            _ => {}
        }
    }

    /// MMM's _check_host_states for one host, with evidence grading: definitive failures
    /// are already `Failed` without waiting trap_period (see [`health::CheckTrack`]).
    fn evaluate_host(&mut self, now: Millis, name: &str, out: &mut Vec<Action>) {
        if !self.network_ok {
            return;
        }
        let Some(h) = self.host(name).cloned() else {
            return;
        };
        if h.state == HostState::AdminOffline {
            return;
        }
        let pending = [CheckKind::Ping, CheckKind::Mysql]
            .iter()
            .any(|c| self.verdict(&h, *c, now) == Verdict::Pending);
        if pending && !h.probe_dead {
            return;
        }
        let ping = self.check_ok(&h, CheckKind::Ping, now);
        let mysql = !h.probe_dead && self.check_ok(&h, CheckKind::Mysql, now);
        let alive = ping && mysql;
        let rep_threads = self.check_ok(&h, CheckKind::RepThreads, now);
        let rep_backlog = self.check_ok(&h, CheckKind::RepBacklog, now);
        let active = self.active_master().map(str::to_string);
        let is_active = active.as_deref() == Some(name)
            || self.promotion.as_ref().is_some_and(|p| p.to == name);
        // A master replicates from its peer; a slave from the active master.
        let source = h.peer.clone().or_else(|| {
            if h.mode == HostMode::Slave {
                active.clone()
            } else {
                None
            }
        });
        let source_rec = source.as_deref().and_then(|s| self.host(s)).cloned();
        let source_online = source_rec
            .as_ref()
            .is_some_and(|s| s.state == HostState::Online);
        let source_alive = source_rec.as_ref().is_some_and(|s| self.alive(s, now));
        let source_recent = source_rec.as_ref().is_some_and(|s| {
            s.state == HostState::Online && now.saturating_sub(s.online_since) < SOURCE_SETTLE
        });
        // The cause is part of the reason: "mysqld process exited (probe)" and the like.
        let why_dead = || {
            format!(
                "ping: {}, mysql: {}{}",
                if ping { "OK" } else { "not OK" },
                if mysql { "OK" } else { "not OK" },
                if mysql {
                    String::new()
                } else {
                    format!(" - {}", h.check(CheckKind::Mysql).message)
                }
            )
        };
        match h.state {
            HostState::Online => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                // Replication failures of the active master do not matter.
                if is_active || source_recent {
                    return;
                }
                if !rep_threads && source_online && source_alive {
                    self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                } else if !rep_backlog && rep_threads && source_online && source_alive {
                    self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                }
            }
            HostState::AwaitingRecovery => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                if h.errant.is_some() {
                    return;
                }
                // Never online by itself before its GTID set was compared with the
                // writer's since it came back, nor (a master) before it replicates from
                // the active master again.
                let checked = h.gtid_at.is_some_and(|t| t >= h.since);
                let active_rec = active.as_deref().and_then(|a| self.host(a)).cloned();
                let follows = h.view.as_ref().is_some_and(|v| {
                    v.replicating
                        && active_rec
                            .as_ref()
                            .is_some_and(|a| v.source == Some((a.ip, a.mysql_port)))
                });
                // A returning master with nothing errant is rejoined to the writer (GTID),
                // as MMM brought masters back by itself; it then follows auto_set_online
                // like a slave.
                if let Some(a) = active_rec
                    .as_ref()
                    .filter(|_| h.mode == HostMode::Master && checked && !follows && h.agent_up)
                {
                    let retry = ms(self.config.monitor.promotion_timeout);
                    let due = h
                        .repointed
                        .is_none_or(|(ip, t)| ip != a.ip || now.saturating_sub(t) >= retry);
                    if due {
                        out.push(Action::Notify {
                            host: Some(name.into()),
                            message: format!("Rejoining '{name}' to the active master '{}': its GTID set holds nothing the writer lacks", a.name),
                        });
                        self.rejoin_replication(now, name, out);
                        if let Some(r) = self.host_mut(name) {
                            r.repointed = Some((a.ip, now));
                        }
                    }
                    return;
                }
                if !(rep_backlog && rep_threads) {
                    return;
                }
                if active.is_some() && (!checked || (h.mode == HostMode::Master && !follows)) {
                    return;
                }
                let in_state = now.saturating_sub(h.since);
                let auto = self.config.monitor.auto_set_online.map(ms);
                if h.flapping {
                    let quiet = now.saturating_sub(h.flaps.departures.last().copied().unwrap_or(0));
                    if auto.is_some() && quiet >= ms(self.config.monitor.flap_duration) {
                        let reason = format!("flapping host, auto_set_online and flap_duration passed without another failure, after {}s in AWAITING_RECOVERY", in_state / 1000);
                        self.set_state(now, name, HostState::Online, reason, out);
                    }
                    return;
                }
                if let (Some(before), Some(view)) = (h.uptime_at_failure, h.view.as_ref()) {
                    let diff = i64::from(view.uptime_s) - i64::from(before);
                    if before > 0 && diff > 0 && diff < 60 {
                        self.set_state(
                            now,
                            name,
                            HostState::Online,
                            format!("it was down for only {diff} seconds"),
                            out,
                        );
                        return;
                    }
                }
                if let Some(a) = auto {
                    if in_state >= a {
                        let reason = format!(
                            "auto_set_online({}s), it was in AWAITING_RECOVERY for {}s",
                            a / 1000,
                            in_state / 1000
                        );
                        self.set_state(now, name, HostState::Online, reason, out);
                    }
                }
            }
            HostState::HardOffline => {
                if !alive {
                    return;
                }
                let can_be_master = self
                    .roles
                    .role_hosts(&self.roles.writer_role.clone())
                    .contains(&h.name);
                // A master comes back through AWAITING_RECOVERY: its replication must be
                // rejoined to the writer (set_online does it) and its GTID set checked.
                if (active.is_some() || !can_be_master) && h.mode == HostMode::Slave {
                    if !rep_threads {
                        self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                        return;
                    }
                    if !rep_backlog {
                        self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                        return;
                    }
                }
                self.set_state(now, name, HostState::AwaitingRecovery, String::new(), out);
                // Before it may rejoin: does it hold transactions the writer lacks?
                out.push(Action::QueryStatus { host: name.into() });
                if let Some(w) = active {
                    out.push(Action::QueryStatus { host: w });
                }
            }
            HostState::ReplicationFail | HostState::ReplicationDelay => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                if h.state == HostState::ReplicationFail && !rep_backlog && rep_threads {
                    self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                    return;
                }
                if h.state == HostState::ReplicationDelay && !rep_threads {
                    self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                    return;
                }
                if (rep_backlog && rep_threads) || !source_online {
                    if h.flapping {
                        self.set_state(
                            now,
                            name,
                            HostState::AwaitingRecovery,
                            "because it's flapping".into(),
                            out,
                        );
                    } else {
                        self.set_state(now, name, HostState::Online, String::new(), out);
                    }
                }
            }
            HostState::AdminOffline => {}
        }
    }

    /// A host's GTID set compared with the writer's: one holding transactions the writer
    /// lacks must not rejoin (an errant transaction).
    fn check_errant(&mut self, _now: Millis, name: &str, out: &mut Vec<Action>) {
        let Some(writer) = self.active_master().map(str::to_string) else {
            return;
        };
        let targets: Vec<String> = if name == writer {
            self.hosts
                .iter()
                .filter(|h| h.state == HostState::AwaitingRecovery)
                .map(|h| h.name.clone())
                .collect()
        } else {
            vec![name.to_string()]
        };
        // A set that was reported but cannot be compared (unreadable, unparseable) keeps
        // the host waiting, with the reason: it might hold errant transactions.
        let wset = match self.host(&writer) {
            Some(w) => match (&w.gtid, &w.gtid_unknown) {
                (_, Some(why)) => Err(format!(
                    "possible errant transactions (the GTID set of the writer {writer} cannot be compared: {why})"
                )),
                (Some(set), None) => Ok(set.clone()),
                (None, None) => return,
            },
            None => return,
        };
        for t in targets {
            let Some(h) = self.host(&t) else { continue };
            if h.state != HostState::AwaitingRecovery {
                continue;
            }
            let errant = match (&wset, &h.gtid, &h.gtid_unknown) {
                (_, _, Some(why)) => Some(format!(
                    "possible errant transactions (its GTID set cannot be compared with the writer's: {why})"
                )),
                (Err(why), _, None) => Some(why.clone()),
                (Ok(wset), Some(set), None) => {
                    let missing = set.missing_from(wset);
                    (!wset.contains(set))
                        .then(|| format!("errant transactions {missing} not on the writer {writer}"))
                }
                (Ok(_), None, None) => continue,
            };
            let h = self.host_mut(&t).expect("host exists");
            if h.errant != errant {
                if let Some(reason) = &errant {
                    out.push(Action::Notify {
                        host: Some(t.clone()),
                        message: format!("Host '{t}' stays AWAITING_RECOVERY: {reason}"),
                    });
                    h.reason = reason.clone();
                }
                h.errant = errant;
            }
        }
    }

    /// MMM's WAIT mode: act like manual until both masters are ONLINE, or one has been
    /// ONLINE for wait_for_other_master.
    fn wait_mode(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.mode != MonitorMode::Wait {
            return;
        }
        let masters = self.roles.role_hosts(&self.roles.writer_role.clone());
        let online: Vec<&HostRec> = masters
            .iter()
            .filter_map(|m| self.host(m))
            .filter(|h| h.state == HostState::Online)
            .collect();
        let wait = ms(self.config.monitor.wait_for_other_master);
        let switch = if online.len() >= 2 {
            Some(format!(
                "Nodes {} are ONLINE, switching from mode 'WAIT' to 'ACTIVE'.",
                masters.join(" and ")
            ))
        } else if wait > 0
            && online.len() == 1
            && now.saturating_sub(online[0].online_since.max(self.wait_since)) >= wait
        {
            Some(format!("The other master did not come online for {}s (wait_for_other_master). Switching from mode 'WAIT' to 'ACTIVE'", wait / 1000))
        } else {
            None
        };
        if let Some(message) = switch {
            self.mode = MonitorMode::Active;
            out.push(Action::Notify {
                host: None,
                message,
            });
            self.cleanup_offline_roles(now, out);
        }
    }

    /// Removes roles from hosts that are not ONLINE (on entering active mode).
    pub(crate) fn cleanup_offline_roles(&mut self, now: Millis, out: &mut Vec<Action>) {
        let names: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.state != HostState::Online)
            .map(|h| h.name.clone())
            .collect();
        for n in names {
            self.clear_roles(now, &n, out);
        }
    }

    /// MMM's _distribute_roles: orphans, preferences (only with failback), balance.
    fn distribute(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.mode == MonitorMode::Passive || !self.network_ok {
            return;
        }
        // A set: balancing asks about every host of a role, and roles span hundreds.
        let eligible: std::collections::HashSet<String> = self
            .hosts
            .iter()
            .filter(|h| self.eligible(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let is_eligible = |n: &str| eligible.contains(n);
        for (role, ip, host) in self.roles.assign_orphans(&is_eligible) {
            out.push(Action::Notify {
                host: Some(host.clone()),
                message: format!("Orphaned role '{role}({ip})' has been assigned to '{host}'"),
            });
        }
        for (role, ip, from, to) in self.roles.balance(&is_eligible) {
            out.push(Action::Notify {
                host: Some(to.clone()),
                message: format!("Moving role '{role}({ip})' from host '{from}' to host '{to}'"),
            });
        }
        // The writer: orphaned -> promote the eligible host; with failback, back to prefer.
        if self.promotion.is_none() && self.mode == MonitorMode::Active {
            let blocked = self.blocked.as_ref().is_some_and(|(until, _)| now < *until);
            match self.active_master().map(str::to_string) {
                None if !blocked => {
                    let writer = self.roles.writer_role.clone();
                    if let Some(to) = self.roles.eligible_host(&writer, &is_eligible) {
                        self.start_promotion(
                            now,
                            None,
                            to,
                            "the writer role is orphaned".into(),
                            None,
                            out,
                        );
                    }
                }
                Some(current) if self.config.monitor.failback && !blocked => {
                    let prefer = self.roles.writer().and_then(|r| r.prefer.clone());
                    if let Some(p) = prefer.filter(|p| *p != current && is_eligible(p)) {
                        self.start_promotion(
                            now,
                            Some(current),
                            p.clone(),
                            format!("failback to preferred host '{p}'"),
                            None,
                            out,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    pub(crate) fn send_desired_now(&mut self, out: &mut Vec<Action>) {
        self.send_desired(out);
    }

    /// Emits the desired state of every host whose desired state changed.
    fn send_desired(&mut self, out: &mut Vec<Action>) {
        if self.mode == MonitorMode::Passive || !self.network_ok {
            return;
        }
        let writer = self.active_master().map(str::to_string).unwrap_or_default();
        let mut changed = Vec::new();
        for h in &self.hosts {
            let roles = self.roles.host_roles(&h.name);
            let writable = writer == h.name;
            let same = h.last_sent.as_ref().is_some_and(|d| {
                d.roles == roles
                    && d.writable == writable
                    && d.state == h.state
                    && d.active_master == writer
            });
            if !same {
                changed.push((h.name.clone(), roles, writable, h.state));
            }
        }
        if changed.is_empty() {
            return;
        }
        self.epoch += 1;
        for (name, roles, writable, state) in changed {
            let desired = DesiredState {
                epoch: self.epoch,
                state,
                active_master: writer.clone(),
                writable,
                roles,
            };
            if let Some(h) = self.host_mut(&name) {
                h.last_sent = Some(desired.clone());
            }
            out.push(Action::SendDesired {
                host: name,
                desired,
            });
        }
    }

    fn persist(&mut self, now: Millis, out: &mut Vec<Action>) {
        let record = self.status_record(now);
        if self
            .last_persisted
            .as_ref()
            .is_some_and(|r| r.same_content(&record))
        {
            return;
        }
        self.last_persisted = Some(record.clone());
        out.push(Action::Persist(record));
    }

    /// The earliest time after the last Tick at which a Tick could decide something: the
    /// daemon's timer. Every decision the core takes on a Tick without a new event is
    /// listed here (the simulator in the tests fails when a Tick acts unannounced), so
    /// the daemon sleeps until then instead of ticking every host ten times a second.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timer
    }

    /// The earliest deadline later than `after` (the last Tick), over every host.
    fn compute_next_deadline(&self, after: Millis) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| {
            if t > after && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        let auto = self.config.monitor.auto_set_online.map(ms);
        let flap = ms(self.config.monitor.flap_duration);
        let retry = ms(self.config.monitor.promotion_timeout);
        for h in &self.hosts {
            for c in CheckKind::ALL {
                if let Some(t) = h.check(*c).trap_expires(self.trap(*c)) {
                    at(t);
                }
            }
            // Replication failures count again once a source has settled.
            if h.state == HostState::Online {
                at(h.online_since + SOURCE_SETTLE);
            }
            if h.state == HostState::AwaitingRecovery {
                if let Some(a) = auto {
                    at(h.since + a);
                }
                if h.flapping {
                    at(h.flaps.departures.last().copied().unwrap_or(0) + flap);
                }
                if let Some(t) = h.status_asked {
                    at(t + RECOVERING_REFRESH);
                }
            }
            if let Some((_, t)) = h.repointed {
                at(t + retry);
            }
        }
        if let Some(p) = &self.promotion {
            for t in p.deadlines() {
                at(t);
            }
        }
        if let Some((until, _)) = &self.blocked {
            at(*until);
        }
        if self.mode == MonitorMode::Wait {
            let wait = ms(self.config.monitor.wait_for_other_master);
            for h in &self.hosts {
                if h.state == HostState::Online {
                    at(h.online_since.max(self.wait_since) + wait);
                }
            }
        }
        next
    }

    pub fn fencing(&self) -> Fencing {
        self.config.agent.fencing
    }

    /// The start-up vote (MMM's careful_startup, made explicit): who is the writer, from
    /// the stored status and what each reachable agent reports (writer VIP held, server
    /// writable, slaves replicating from it). One clear answer is adopted; conflicting
    /// answers put the monitor in passive mode with careful_startup (an operator decides
    /// with set_ip / set_active), or keep the stored writer and demote the others without
    /// it. Hosts holding VIPs they may hold keep them, so a monitor restart moves nothing.
    pub fn startup(&mut self, now: Millis, reports: &[(String, AgentView)]) -> Vec<Action> {
        let mut out = Vec::new();
        let writer_ip = self.roles.writer().map(|r| r.ip);
        let masters = self.roles.role_hosts(&self.roles.writer_role.clone());
        let stored = self.active_master().map(str::to_string);
        let mut claims: Vec<String> = Vec::new();
        for (host, view) in reports {
            if let Some(h) = self.host_mut(host) {
                h.view = Some(view.clone());
                h.agent_up = true;
                h.agent_seen = Some(now);
            }
            let holds_vip = writer_ip.is_some_and(|ip| view.held_vips.contains(&ip));
            let writable = view.mysql_up && !view.read_only;
            if masters.contains(host) && (holds_vip || writable) {
                claims.push(host.clone());
            }
        }
        // Slaves replicating from a master are a vote for it.
        let votes = |m: &str, c: &Cluster| {
            let Some(mh) = c.host(m) else { return 0 };
            reports
                .iter()
                .filter(|(_, v)| v.source.is_some_and(|(ip, _)| ip == mh.ip))
                .count()
        };
        let decided: Option<String> = match claims.as_slice() {
            [] => stored.clone(),
            [one] => Some(one.clone()),
            many => {
                let names = many.join(" and ");
                if self.config.monitor.careful_startup {
                    self.mode = MonitorMode::Passive;
                    self.passive_cause = format!("the {} role is claimed by {names} at startup (careful_startup): check them, then use set_ip and set_active", self.roles.writer_role);
                    out.push(Action::Notify {
                        host: None,
                        message: format!("Switching to passive mode: {}", self.passive_cause),
                    });
                    None
                } else {
                    let best = stored
                        .filter(|s| many.contains(s))
                        .or_else(|| many.iter().max_by_key(|m| votes(m, self)).cloned());
                    out.push(Action::Notify {
                        host: None,
                        message: format!(
                            "The {} role is claimed by {names} at startup; keeping it on {}",
                            self.roles.writer_role,
                            best.clone().unwrap_or_default()
                        ),
                    });
                    best
                }
            }
        };
        if self.mode != MonitorMode::Passive {
            self.roles.set_writer_holder(decided.clone());
            // Reader VIPs where they are, if the table has no holder for them.
            for (host, view) in reports {
                for ip in &view.held_vips {
                    if let Some(i) = self.roles.find_ip(*ip) {
                        let r = &mut self.roles.ips[i];
                        if r.role != self.roles.writer_role
                            && r.holder.is_none()
                            && r.hosts.contains(host)
                        {
                            r.holder = Some(host.clone());
                        }
                    }
                }
            }
            // A host that holds roles and reports in order is ONLINE, whatever the file said.
            for (host, _) in reports {
                let has_roles = !self.roles.host_roles(host).is_empty();
                if let Some(h) = self.host_mut(host) {
                    if has_roles && h.state == HostState::AwaitingRecovery {
                        h.state = HostState::Online;
                        h.reason = "holds roles at monitor start".into();
                        h.since = now;
                        h.online_since = now;
                    }
                }
            }
        }
        self.after_changes(now, &mut out);
        if std::mem::take(&mut self.persist_due) {
            self.persist(now, &mut out);
        }
        self.timer = self.compute_next_deadline(self.last_tick);
        out
    }
}

#[cfg(test)]
mod tests;
