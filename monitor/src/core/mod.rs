//! The monitor's decision logic: a pure state machine. `Cluster::handle(now, Event)`
//! returns the actions to take; it reads no clock, opens no socket and spawns nothing,
//! so every behaviour (MMM's, and the fixes docs/failure-detection.md lists) is a test of this module.
//!
//! Detection is separate from the decision to act: checks and agent reports update
//! per-host evidence ([`events`], [`health`]); [`states`] turns evidence into MMM's host
//! states; role distribution ([`assign`]) and the promotion state machine ([`promote`])
//! act on states.
//!
//! `Cluster` is made of components that own their fields and the rules over them:
//! [`Hosts`] (records, evidence, every state transition and flap), [`RoleTable`] (who
//! holds which role IP), [`Promotion`] (the state machine moving the writer role, with
//! its phase deadlines), [`Isolation`] (the silent writer's hold), [`Parking`] (the
//! writer VIP parked on its successor) and [`Mode`]. Each registers its deadlines in one
//! timer table ([`timers`]). `Cluster::handle` hands an event to the component it
//! concerns, then runs the same pipeline every time: judge, distribute, settle, persist,
//! set the timer.

mod assign;
pub mod commands;
mod events;
pub mod health;
pub mod history;
pub mod hosts;
mod isolation;
mod mode;
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

use events::Evaluate;
use hosts::Hosts;
use isolation::Isolation;
use mmm_common::config::Config;
use mmm_common::proto::{
    self, ActionOutcome, DesiredState, Position, ProbeEventKind, StatusReport,
};
use mmm_common::timing::Timing;
use mmm_common::types::{CheckKind, Fencing, HostState};
use mode::Mode;
use park::Parking;
use promote::Promotion;
use roles::RoleTable;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::control::ControlCommand;
pub use hosts::HostRec;

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
    /// The IO thread runs (or connects): a backup's safe-slave stop leaves it running.
    pub io_running: bool,
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
            io_running,
            probe,
        } = self;
        *applied_epoch == other.applied_epoch
            && *mysql_up == other.mysql_up
            && *read_only == other.read_only
            && *self_fenced == other.self_fenced
            && *held_vips == other.held_vips
            && *source == other.source
            && *replicating == other.replicating
            && *io_running == other.io_running
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
            io_running: hb.flags & f::IO_RUNNING != 0,
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
        command: ControlCommand,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreAction {
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

/// How a writer the monitor cannot reach is fenced. Given by the daemon, which knows
/// whether this monitor is alone or one of a fleet; the core never reads that itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencingMethod {
    /// `fencing = "none"`: only kill_host_bin can fence.
    None,
    /// The agent demotes itself when this monitor's heartbeats stop for `lease`: the
    /// monitor counts the lease out itself.
    MonitorLease,
    /// In a fleet: the agent's writer permit is its own etcd lease, which no monitor
    /// renews; the daemon ends it (`EndLease`) and reports `LeaseEnded`.
    EtcdLease,
}

impl FencingMethod {
    /// A monitor alone: the lease its heartbeats renew.
    pub fn alone(fencing: Fencing) -> FencingMethod {
        match fencing {
            Fencing::Lease => FencingMethod::MonitorLease,
            Fencing::None => FencingMethod::None,
        }
    }

    /// A leader of a monitor fleet: the agents' etcd leases.
    pub fn in_fleet(fencing: Fencing) -> FencingMethod {
        match fencing {
            Fencing::Lease => FencingMethod::EtcdLease,
            Fencing::None => FencingMethod::None,
        }
    }

    /// The agent demotes itself when its lease runs out (`fencing = "lease"`).
    pub fn lease(self) -> bool {
        self != FencingMethod::None
    }
}

pub struct Cluster {
    config: Arc<Config>,
    /// How an unreachable writer is fenced.
    fencing: FencingMethod,
    /// The fencing bounds, derived from `config` once.
    timing: Timing,
    mode: Mode,
    hosts: Hosts,
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
    /// A writer that lost its role while no host could take over: fenced first when a
    /// promotion starts.
    pending_fence: Option<String>,
    /// The host parking the writer VIP ([`park`]).
    parking: Parking,
    /// The silent writer's hold ([`isolation`]).
    isolation: Isolation,
    /// Hosts set online (or returning) while a promotion ran: rejoined when it ends.
    pub(crate) rejoin_after_promotion: std::collections::BTreeSet<String>,
    /// The status record is written at the end of the event.
    persist_due: bool,
    /// When the last Tick was handled, and the next deadline after it.
    last_tick: Millis,
    timer: Option<Millis>,
    /// Recent transitions and failovers, for `show --json`.
    history: history::History,
    /// What the checks read of each host's replication, for `show --json` (host name ->
    /// reading). Told by the shell, like the UTC offset: nothing is decided on it.
    observed: observed::Observed,
}

impl Cluster {
    /// A cluster as the config describes it, every host AWAITING_RECOVERY until it is
    /// set online or a stored status record says otherwise (see [`Cluster::restore`]).
    pub fn new(config: Arc<Config>, fencing: FencingMethod, now: Millis) -> Cluster {
        Cluster {
            timing: Timing::from_config(&config),
            fencing,
            roles: RoleTable::new(&config),
            mode: Mode::new(config.monitor.mode, now),
            hosts: Hosts::new(&config, now),
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
            pending_fence: None,
            parking: Parking::default(),
            isolation: Isolation::default(),
            rejoin_after_promotion: Default::default(),
            persist_due: false,
            last_tick: 0,
            timer: None,
            history: Default::default(),
            observed: Default::default(),
            config,
        }
    }

    /// Takes a config re-read on SIGHUP. It differs from the running one only in keys the
    /// core reads at each use (`mmm_common::config::reload::MONITOR_RELOADS`): hosts, roles
    /// and the fencing timing stay what they were.
    pub fn reload(&mut self, config: Arc<Config>) {
        debug_assert_eq!(Timing::from_config(&config), self.timing);
        self.config = config;
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Every host, in config order (a read-only view for the shell).
    pub fn hosts(&self) -> &[HostRec] {
        self.hosts.all()
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
        self.mode.go_passive(cause);
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
        self.hosts.get(name)
    }

    pub(crate) fn host_mut(&mut self, name: &str) -> Option<&mut HostRec> {
        self.hosts.get_mut(name)
    }

    pub fn active_master(&self) -> Option<&str> {
        self.roles.writer_holder()
    }

    /// The single entry point: one event in, the actions it calls for out. Each event
    /// updates what it concerns; then the fixed pipeline: the silent or permitless
    /// writer, hosts judged, roles and promotion moved on, states settled, the status
    /// persisted, the timer set.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<CoreAction> {
        let mut out = Vec::new();
        // Cheap to keep: promotions are rare and small.
        let promotion_before = self.promotion.clone();
        let writer_before = self.roles.writer_holder().map(str::to_string);
        let transitions_before = self.hosts.transitions();
        let mut evaluate = Evaluate::new();
        let tick = event == Event::Tick;
        let quiet_kind = matches!(event, Event::AgentHeartbeat { .. } | Event::Check { .. });
        self.notice_stall(now, &mut out);
        let ev = &mut evaluate;
        let o = &mut out;
        let known = match event {
            Event::Tick => self.on_tick(now, o),
            Event::Check {
                host,
                check,
                result,
                started,
            } => self.on_check(now, host, check, result, started, ev),
            Event::Probe { host, kind } => self.on_probe(now, host, kind, ev),
            Event::AgentHeartbeat { host, view } => self.on_heartbeat(now, host, view, ev, o),
            Event::AgentUnreachable {
                host,
                reason,
                last_heard,
            } => self.on_unreachable(host, reason, last_heard, ev, o),
            Event::AgentStatus { host, report } => self.on_status(now, host, report, ev, o),
            Event::Applied {
                host,
                epoch,
                failures,
            } => self.on_applied(now, host, epoch, failures, o),
            Event::ActionDone {
                host,
                id,
                outcome,
                detail,
                ..
            } => self.on_action_done(now, host, id, outcome, detail, o),
            Event::LeaseEnded { host } => self.on_lease_ended(now, host, o),
            Event::KillHostDone { host, ok, output } => {
                self.on_kill_host_done(now, host, ok, output, o)
            }
            Event::Network { ok } => self.on_network(now, ok, o),
            Event::Command { reply, command } => self.on_command(now, reply, command, o),
        };
        if known.is_none() {
            return out;
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
        let promoting_before = promotion_before.is_some();
        self.settle(
            now,
            transitions_before,
            writer_before,
            promoting_before,
            &mut out,
        );
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
    pub(crate) fn after_changes(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
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

    pub fn fencing(&self) -> FencingMethod {
        self.fencing
    }
}

#[cfg(test)]
mod tests;
