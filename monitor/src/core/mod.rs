//! The monitor's decision logic: a pure state machine. `Cluster::handle(now, Event)`
//! returns the actions to take; it reads no clock, opens no socket and spawns nothing,
//! so every behaviour (MMM's, and the fixes docs/failure-detection.md lists) is a test of this module.
//!
//! Detection is separate from the decision to act: checks and agent reports update
//! per-host evidence ([`health`]); [`Cluster::evaluate`] turns evidence into MMM's host
//! states; role distribution and the promotion state machine ([`promote`]) act on states.

mod assign;
pub mod commands;
pub mod health;
pub mod history;
pub mod observed;
mod park;
mod permitless;
pub mod promote;
pub mod roles;
pub mod show;
mod startup;
mod states;
pub mod status;
mod timers;

use health::{CheckTrack, Flaps, Verdict};
use mmm_common::config::Config;
use mmm_common::gtid::GtidSet;
use mmm_common::proto::{
    self, ActionOutcome, DesiredState, Position, ProbeEventKind, StatusReport,
};
use mmm_common::timing::Timing;
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

/// The monitor fleet in `show`:
/// `# monitor fleet: leader NAME (term N, epoch E), standby NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetShow {
    pub leader: String,
    pub term: u64,
    /// The epoch the leader wrote at `<prefix>/cluster` (mmm_common::epoch).
    pub epoch: u64,
    pub standbys: Vec<String>,
    /// The last recent failure of an etcd member this monitor used, named.
    pub etcd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed: traps, leases, deadlines and auto_set_online are looked at.
    Tick,
    Check {
        host: String,
        check: CheckKind,
        result: CheckResult,
        /// When the attempt started (attempts may overlap; a late result of an older one
        /// is ignored).
        started: Millis,
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
        /// When the agent last answered, if this link ever heard it (heartbeats reach
        /// the core only when they change something, so the core's own record is coarse).
        last_heard: Option<Millis>,
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
    /// In a fleet: the host's agent holds no writer permit any more (its etcd lease
    /// expired, or was revoked and a whole TTL has passed since), after an `EndLease`.
    LeaseEnded {
        host: String,
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
    /// In a fleet the agent renews its own writer permit (an etcd lease): end it (wait
    /// for etcd to expire it, revoke it if it is still renewed) and report `LeaseEnded`.
    EndLease {
        host: String,
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
    /// Since when its agent, heard all along, reports itself self-fenced (it holds no
    /// writer permit): see `permitless`.
    pub self_fenced_since: Option<Millis>,
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
    /// The fencing bounds, derived from `config` once.
    timing: Timing,
    mode: MonitorMode,
    passive_cause: String,
    hosts: Vec<HostRec>,
    roles: RoleTable,
    network_ok: bool,
    /// When the monitor could observe again (the network guard lifted, or it resumed from
    /// a stall): silence from before then is not evidence.
    network_back: Millis,
    /// When the network guard last started holding.
    network_lost_at: Millis,
    /// When the last event was handled: a long quiet means the monitor itself stalled.
    last_event: Option<Millis>,
    /// The monitor host's offset from UTC, seconds: `checks` prints local time as MMM
    /// did. Told by the shell (the core reads no clock and no timezone).
    utc_offset_s: i64,
    /// The monitor fleet as `show` prints it (none without `[coordination]`). Told by
    /// the shell, like the UTC offset: nothing is decided on it.
    fleet: Option<FleetShow>,
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
    /// The host parking the writer VIP ([`park`]), as its desired state says.
    parked: Option<String>,
    /// Replicas of an isolated writer whose IO threads were stopped early (their
    /// semi-sync STOP waits for the vanished master): restarted if the writer comes back.
    /// `None` until they are.
    early_stopped: Option<std::collections::BTreeSet<String>>,
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
    /// Recent transitions and failovers, for `show --json`.
    history: history::History,
    /// What the checks read of each host's replication, for `show --json` (host name ->
    /// reading). Told by the shell, like the UTC offset: nothing is decided on it.
    observed: observed::Observed,
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
                self_fenced_since: None,
            })
            .collect();
        Cluster {
            timing: Timing::from_config(&config),
            roles: RoleTable::new(&config),
            mode: config.monitor.mode,
            passive_cause: String::new(),
            hosts,
            network_ok: true,
            network_back: 0,
            network_lost_at: 0,
            last_event: None,
            utc_offset_s: 0,
            fleet: None,
            epoch: 0,
            promotion: None,
            blocked: None,
            next_id: 1,
            last_persisted: None,
            wait_since: now,
            pending_fence: None,
            parked: None,
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
            history: Default::default(),
            observed: Default::default(),
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

    /// Who leads the monitor fleet and who stands by, for `show`.
    pub fn set_fleet(&mut self, fleet: Option<FleetShow>) {
        self.fleet = fleet;
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
        self.verdict(h, c, now) != Verdict::Failed
    }

    pub fn verdict(&self, h: &HostRec, c: CheckKind, now: Millis) -> Verdict {
        h.check(c)
            .verdict_from(now, self.trap(c), Self::trap_start(h, c, self.network_back))
    }

    /// Events arrive at least every ping pace (agent_timeout / 3 per host): a longer quiet
    /// means the monitor did not run (swapped out, throttled, stopped), and the silence
    /// it then sees in every host is its own. Counted from now, as after the network
    /// guard.
    fn notice_stall(&mut self, now: Millis, out: &mut Vec<Action>) {
        let limit = ms(self.timing.stall_after);
        let quiet = self.last_event.map_or(0, |t| now.saturating_sub(t));
        self.last_event = Some(now);
        if quiet > limit && !self.hosts.is_empty() {
            self.blind_for(now, quiet);
            out.push(Action::Notify {
                host: None,
                message: format!("The monitor heard nothing for {quiet} ms (it did not run): silence before now is not held against any host"),
            });
        }
    }

    /// The monitor could not observe for `paused` until `now`: trap_period pauses for that
    /// long (a failure counts only the time it was seen from a working monitor), and
    /// silence counts from now.
    fn blind_for(&mut self, now: Millis, paused: Millis) {
        self.network_back = self.network_back.max(now);
        for h in &mut self.hosts {
            for c in &mut h.checks {
                if let Some(f) = &mut c.failing {
                    f.since = (f.since + paused).min(now);
                }
            }
        }
    }

    /// Since when the host has answered nothing at all: neither its agent nor a ping.
    /// `None` while its agent answers, if it never did, or if pings tell nothing (the
    /// monitor cannot ping). Silence while the monitor could not observe (the network
    /// guard held, or the monitor itself stalled) counts only from when it could again.
    fn silent_since(h: &HostRec, network_back: Millis) -> Option<Millis> {
        let ping = h.check(CheckKind::Ping);
        if h.agent_up || ping.unknown {
            return None;
        }
        h.agent_seen
            .map(|a| a.max(ping.last_ok.unwrap_or(0)).max(network_back))
    }

    /// A failing ping of a host whose agent is silent too counts its trap from the
    /// silence: the host has been gone that long, not just since the first ping timed
    /// out (up to a check period plus the check's timeout later). A link blip shorter
    /// than trap_period still fails nothing: the first ping after it answers.
    fn trap_start(h: &HostRec, c: CheckKind, network_back: Millis) -> Option<Millis> {
        (c == CheckKind::Ping)
            .then(|| Self::silent_since(h, network_back))
            .flatten()
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
        self.notice_stall(now, &mut out);
        match event {
            Event::Tick => {
                self.evaluate_all(now, &mut out);
            }
            Event::Check {
                host,
                check,
                result,
                started,
            } => {
                let trap = self.trap(check);
                let back = self.network_back;
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                let agent_up = h.agent_up;
                let judged = |h: &HostRec| {
                    let from = Self::trap_start(h, check, back);
                    let track = h.check(check);
                    (
                        track.verdict_from(now, trap, from),
                        track.trap_expires(trap, from),
                    )
                };
                let before = judged(h);
                let track = &mut h.checks[check_index(check)];
                match result {
                    // Older than a newer result, or asked while the network guard held.
                    _ if track.stale(started) || started < back => {}
                    CheckResult::Ok => {
                        track.record_ok(now, started, trap);
                        if check == CheckKind::Mysql {
                            h.probe_dead = false;
                        }
                    }
                    // Overload is not death: the server answered, it is alive.
                    CheckResult::Unknown { .. } => track.record_unknown(started),
                    CheckResult::Failed { message, refused } => {
                        // Refused while the agent answers: mysqld is not there. Definitive.
                        let definitive = refused && check == CheckKind::Mysql && agent_up;
                        track.record_failure(now, started, message, definitive);
                    }
                }
                // A changed verdict, or a changed deadline: a failure that turned
                // definitive just as its trap ran out has no Tick announced any more.
                if judged(h) != before {
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
                h.self_fenced_since = match (view.self_fenced, h.self_fenced_since) {
                    (false, _) => None,
                    (true, since) => since.or(Some(now)),
                };
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
            Event::AgentUnreachable {
                host,
                reason,
                last_heard,
            } => {
                let Some(h) = self.host_mut(&host) else {
                    return out;
                };
                let news = h.agent_up || h.agent_seen.is_none();
                // What a silent agent's server does is not known: not its self-fence either.
                h.self_fenced_since = None;
                if let Some(t) = last_heard {
                    h.agent_seen = Some(h.agent_seen.map_or(t, |s| s.max(t)));
                }
                if news {
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
            Event::LeaseEnded { host } => {
                self.promotion_on_lease_ended(now, &host, &mut out);
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
                    if !ok {
                        self.network_lost_at = now;
                    }
                    out.push(Action::Notify {
                        host: None,
                        message: if ok {
                            "Network is reachable again: state changes resume".into()
                        } else {
                            "No ping_ips answer: network guard holds every state as it is".into()
                        },
                    });
                    if ok {
                        // While the monitor was cut off, trap_period was paused: a failure
                        // counts only the time it was seen from a working network (a guard
                        // that flaps delays a failover by its outages, never forever).
                        let paused = now.saturating_sub(self.network_lost_at);
                        self.blind_for(now, paused);
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
        self.fail_permitless_writer(now, &mut out);
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

    /// Mode changes, role distribution, promotion progress, desired states, persistence.
    pub(crate) fn after_changes(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.wait_mode(now, out);
        self.distribute(now, out);
        self.promotion_tick(now, out);
        self.update_parking(now, out);
        self.send_desired(out);
        // Only once there is a writer to rejoin to (a refused promotion leaves none: the
        // hosts wait for the next one).
        if self.promotion.is_none()
            && self.active_master().is_some()
            && !self.rejoin_after_promotion.is_empty()
        {
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

    pub fn fencing(&self) -> Fencing {
        self.config.agent.fencing
    }
}

#[cfg(test)]
mod tests;
