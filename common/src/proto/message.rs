//! The messages monitor and agent exchange, and their payload encodings.

use super::frame::{FrameError, MAX_MESSAGE};
use super::wire::{Reader, Writer};
use crate::gtid::{GtidError, GtidSet};
use crate::types::HostState;
use std::net::Ipv4Addr;

pub const NONCE_LEN: usize = 16;
pub type Nonce = [u8; NONCE_LEN];

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v = $n),+ }
        impl $name {
            pub fn from_u8(v: u8) -> Option<Self> {
                match v { $($n => Some($name::$v),)+ _ => None }
            }
        }
    };
}

wire_enum!(
    /// The `type` byte of the header.
    MessageType {
        Hello = 0x01,
        Challenge = 0x02,
        Auth = 0x03,
        Welcome = 0x04,
        Heartbeat = 0x10,
        AgentHeartbeat = 0x11,
        Consent = 0x12,
        DesiredState = 0x20,
        Applied = 0x21,
        StatusQuery = 0x30,
        StatusReport = 0x31,
        Action = 0x40,
        ActionResult = 0x41,
        ProbeEvent = 0x50,
        Error = 0x7f,
    }
);

wire_enum!(
    /// What the agent's eBPF probe is doing.
    ProbeState {
        /// Not loaded (`probe = "off"`, or not loadable under `probe = "auto"`).
        Off = 0,
        /// Loaded; mysqld's process not yet known.
        Searching = 1,
        /// Loaded and watching mysqld's process and listening socket.
        Watching = 2,
    }
);

// wire_enum! derives no Default; the probe is off until an agent says otherwise.
#[allow(clippy::derivable_impls)]
impl Default for ProbeState {
    fn default() -> Self {
        ProbeState::Off
    }
}

wire_enum!(
    /// What the probe saw.
    ProbeEventKind {
        /// mysqld's whole process (thread group) exited.
        ProcessExit = 1,
        /// mysqld's listening socket on mysql_port closed.
        ListenClose = 2,
        /// A process started listening on mysql_port (mysqld is (re)started).
        ListenOpen = 3,
    }
);

wire_enum!(
    ActionOutcome {
        Ok = 0,
        Failed = 1,
        TimedOut = 2,
        /// The action needs a replica and the server is none (a catch-up on a server
        /// that replicates from nobody has nothing to wait for).
        NotReplica = 3,
    }
);

wire_enum!(
    /// Which server family the agent talks to; decides GTID flavour and read-only knobs.
    ServerKind {
        Unknown = 0,
        MariaDb = 1,
        MySql = 2,
    }
);

/// monitor -> agent, first frame: the monitor's nonce and who it thinks it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub nonce: Nonce,
    pub monitor: String,
    /// The host name the monitor expects this agent to serve.
    pub agent: String,
    /// The monitor fleet's leadership term, with its epoch (protocol version 6);
    /// `Term::NONE` for a monitor without a fleet.
    pub term: crate::epoch::Term,
}

/// agent -> monitor: proves knowledge of the key over the monitor's fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub echo: Nonce,
    pub nonce: Nonce,
    pub agent: String,
}

/// monitor -> agent: proves knowledge of the key over the agent's fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub echo: Nonce,
}

/// agent -> monitor, first frame under the session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub agent_version: String,
}

/// monitor -> agent, every `heartbeat_interval`; renews the writer's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Epoch of the newest desired state the monitor has sent.
    pub epoch: u32,
}

/// Bits of [`AgentHeartbeat::flags`].
pub mod hb_flags {
    pub const READ_ONLY: u8 = 0x01;
    pub const IO_RUNNING: u8 = 0x02;
    pub const SQL_RUNNING: u8 = 0x04;
    /// The agent demoted itself because the monitor's heartbeats stopped (lease expired).
    pub const SELF_FENCED: u8 = 0x08;
    /// mysqld answered the agent's last query.
    pub const MYSQL_UP: u8 = 0x10;
    /// In a fleet: the agent's own etcd lease was renewed lately (protocol version 7).
    /// A monitor vouches for a failsafe only while every agent says it cannot.
    pub const ETCD_OK: u8 = 0x20;
    pub const ALL: u8 = 0x3f;
}

/// agent -> monitor, the answer to every heartbeat. Small by design: about 50 bytes on
/// the wire with two VIPs held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHeartbeat {
    /// Epoch of the desired state the agent has applied.
    pub applied_epoch: u32,
    /// Seconds since the host booted (MMM's reboot detection).
    pub uptime_s: u32,
    pub flags: u8,
    pub probe: ProbeState,
    /// Replication source as IP and port; `None` when the server replicates from nobody.
    pub source: Option<(Ipv4Addr, u16)>,
    pub held_vips: Vec<Ipv4Addr>,
}

/// monitor -> agent (protocol version 7), after an [`AgentHeartbeat`], only while the
/// monitor cannot reach etcd: it consents to the writer's failsafe and promises to end no
/// writer's permit by waiting before `failsafe_ttl` after sending this. The leader of the
/// agent's current term adds its vouch: the monitors whose consents the failsafe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// The request id of the [`Heartbeat`] whose answer this follows. The agent counts
    /// the consent from when it sent that answer, on its own clock, so neither a late
    /// frame nor another host's clock can stretch it.
    pub echo: u32,
    /// The newest term the consenting monitor knows of (led, or read at
    /// `<prefix>/cluster`): a consent counts only toward a failsafe of that very term. A
    /// monitor that knows a later term (it led one, or saw one elected) may have listed
    /// monitors the vouch does not name.
    pub known: crate::epoch::Term,
    /// The vouching leader's term (`Term::NONE`: a consent alone).
    pub vouch: crate::epoch::Term,
    /// With a vouch: every monitor of the fleet's roster, the voucher included.
    pub roster: Vec<String>,
}

/// monitor -> agent: everything the host should be, applied idempotently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    pub epoch: u32,
    pub state: HostState,
    /// Host name of the active master (empty when there is none).
    pub active_master: String,
    /// Whether this host should accept writes (read_only = 0).
    pub writable: bool,
    /// (role, IP) pairs this host should hold.
    pub roles: Vec<(String, Ipv4Addr)>,
    /// Writer VIPs this host should park (protocol version 5): answer TCP to them with RST
    /// and announce them, without taking the address or writing. The old writer is gone
    /// and fenced, and this host is next: clients stop waiting for the dead host's MAC.
    pub parked: Vec<Ipv4Addr>,
}

/// agent -> monitor: the result of applying a desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub epoch: u32,
    /// One line per part that could not be applied, naming it and its cause.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub source_host: String,
    pub source_port: u16,
    pub io_running: bool,
    pub sql_running: bool,
    /// `None` is MySQL's NULL (SQL thread stopped or IO thread disconnected).
    pub seconds_behind: Option<u32>,
    pub last_error: String,
}

/// agent -> monitor: the full picture, on request (start-up vote, promotion decisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub applied_epoch: u32,
    pub uptime_s: u32,
    pub server: ServerKind,
    pub mysql_up: bool,
    pub read_only: bool,
    pub held_vips: Vec<Ipv4Addr>,
    pub replication: Option<Replication>,
    /// Executed GTID set as the server prints it (MariaDB gtid_current_pos / MySQL
    /// gtid_executed); empty without GTID. The monitor parses it: text that is not a
    /// GTID set is refused there, never taken for an empty set.
    pub gtid_executed: String,
    /// Why the agent could not read the GTID set (a failed query), empty when it could.
    /// When set, `gtid_executed` means nothing: the set is unknown, not empty, and every
    /// check that compares sets must refuse (see [`StatusReport::gtid_set`]).
    pub gtid_unreadable: String,
    /// Binary log position of this server (file, pos), for non-GTID re-pointing.
    pub binlog: Option<(String, u64)>,
    pub probe: ProbeState,
    /// Why the agent fenced itself, empty if it did not.
    pub fenced_reason: String,
}

impl StatusReport {
    /// The executed GTID set, or why it cannot be compared with another: the agent could
    /// not read it, or the text is not a GTID set. Never an empty set in place of an
    /// unknown one, so errant-transaction and "slave ahead" checks fail closed.
    pub fn gtid_set(&self) -> Result<GtidSet, GtidError> {
        if !self.gtid_unreadable.is_empty() {
            return Err(GtidError::Unreadable {
                reason: self.gtid_unreadable.clone(),
            });
        }
        GtidSet::parse(&self.gtid_executed)
    }

    /// Makes the report fit one message ([`MAX_MESSAGE`], however many frames it takes):
    /// a GTID set too large even for that becomes unknown, with `gtid_unreadable` saying
    /// why, so the status reply still goes out (and the monitor refuses what needs the
    /// set, naming the cause) instead of the link failing.
    pub fn fit_message(&mut self) {
        let mut scratch = Vec::new();
        let len = match Message::StatusReport(self.clone()).encode_payload(&mut scratch) {
            Ok(()) if scratch.len() <= MAX_MESSAGE => return,
            Ok(()) => scratch.len(),
            // Only the set can outgrow its length bound: count it whole.
            Err(_) => scratch.len() + self.gtid_executed.len(),
        };
        self.gtid_unreadable = format!(
            "the status report with a GTID set of {} bytes is {len} bytes, over the message limit of {MAX_MESSAGE}",
            self.gtid_executed.len()
        );
        self.gtid_executed.clear();
    }
}

/// A replication position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A GTID set in the server's own notation. A server with transactions of its own
    /// offers its whole history (MariaDB current_pos) so errant ones surface as errors.
    Gtid(String),
    /// Resume from what this server applied through replication (MariaDB slave_pos,
    /// MySQL auto-position): for the active master's link back to the passive master,
    /// which must not ask the passive for the active's own newest transactions.
    GtidSlavePos,
    FilePos {
        file: String,
        pos: u64,
    },
}

/// What the monitor asks an agent to do, each bounded by the request's deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetReadOnly {
        on: bool,
    },
    KillSessions,
    /// Wait until the relay log is applied up to `target`, or fully when `None`.
    CatchUp {
        target: Option<Position>,
    },
    StopReplication,
    StartReplication,
    ChangeMaster {
        host: Ipv4Addr,
        port: u16,
        position: Position,
    },
    /// Remove the writer VIP, then read_only, then kill sessions (docs/fencing.md).
    Demote,
    /// Stop only the IO thread: the SQL thread goes on applying what was received. Sent
    /// to slaves of a dead master at once, so that re-pointing them later is quick (a
    /// STOP SLAVE waits while the IO thread reconnects to a vanished master). `source` is
    /// the vanished master (protocol version 5): the agent refuses connections to it while
    /// the IO thread stops, if the server still replicates from it.
    StopIoThread {
        source: Ipv4Addr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    pub action: Action,
    /// How long the agent may take, in milliseconds.
    pub deadline_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResult {
    pub outcome: ActionOutcome,
    pub detail: String,
    /// The server's position after the action (e.g. a promoted master's).
    pub position: Option<Position>,
}

/// agent -> monitor, unsolicited, the moment the probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEvent {
    pub kind: ProbeEventKind,
    pub tgid: u32,
    pub port: u16,
    /// CLOCK_MONOTONIC nanoseconds in the kernel when it happened.
    pub ktime_ns: u64,
}

/// Either direction, just before closing, so the peer can log why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Challenge(Challenge),
    Auth(Auth),
    Welcome(Welcome),
    Heartbeat(Heartbeat),
    AgentHeartbeat(AgentHeartbeat),
    Consent(Consent),
    DesiredState(DesiredState),
    Applied(Applied),
    StatusQuery,
    StatusReport(StatusReport),
    Action(ActionRequest),
    ActionResult(ActionResult),
    ProbeEvent(ProbeEvent),
    Error(ErrorMessage),
}

impl Message {
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Challenge(_) => MessageType::Challenge,
            Message::Auth(_) => MessageType::Auth,
            Message::Welcome(_) => MessageType::Welcome,
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::AgentHeartbeat(_) => MessageType::AgentHeartbeat,
            Message::Consent(_) => MessageType::Consent,
            Message::DesiredState(_) => MessageType::DesiredState,
            Message::Applied(_) => MessageType::Applied,
            Message::StatusQuery => MessageType::StatusQuery,
            Message::StatusReport(_) => MessageType::StatusReport,
            Message::Action(_) => MessageType::Action,
            Message::ActionResult(_) => MessageType::ActionResult,
            Message::ProbeEvent(_) => MessageType::ProbeEvent,
            Message::Error(_) => MessageType::Error,
        }
    }

    /// Appends the payload to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut w = Writer {
            out,
            msg_type: self.msg_type(),
        };
        match self {
            Message::Hello(m) => {
                w.bytes(&m.nonce);
                w.str8("monitor", &m.monitor)?;
                w.str8("agent", &m.agent)?;
                w.u64(m.term.rev);
                w.u64(m.term.epoch);
            }
            Message::Challenge(m) => {
                w.bytes(&m.echo);
                w.bytes(&m.nonce);
                w.str8("agent", &m.agent)?;
            }
            Message::Auth(m) => w.bytes(&m.echo),
            Message::Welcome(m) => w.str8("agent_version", &m.agent_version)?,
            Message::Heartbeat(m) => w.u32(m.epoch),
            Message::AgentHeartbeat(m) => {
                w.u32(m.applied_epoch);
                w.u32(m.uptime_s);
                w.u8(m.flags);
                w.u8(m.probe as u8);
                let (ip, port) = m.source.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                w.ipv4(ip);
                w.u16(port);
                w.count8("held_vips", m.held_vips.len())?;
                for ip in &m.held_vips {
                    w.ipv4(*ip);
                }
            }
            Message::Consent(m) => {
                w.u32(m.echo);
                w.u64(m.known.rev);
                w.u64(m.known.epoch);
                w.u64(m.vouch.rev);
                w.u64(m.vouch.epoch);
                w.count8("roster", m.roster.len())?;
                for name in &m.roster {
                    w.str8("roster name", name)?;
                }
            }
            Message::DesiredState(m) => {
                w.u32(m.epoch);
                w.u8(host_state_code(m.state));
                w.str8("active_master", &m.active_master)?;
                w.bool(m.writable);
                w.count8("roles", m.roles.len())?;
                for (role, ip) in &m.roles {
                    w.str8("role", role)?;
                    w.ipv4(*ip);
                }
                w.count8("parked", m.parked.len())?;
                for ip in &m.parked {
                    w.ipv4(*ip);
                }
            }
            Message::Applied(m) => {
                w.u32(m.epoch);
                w.count8("failures", m.failures.len())?;
                for f in &m.failures {
                    w.str16("failure", f)?;
                }
            }
            Message::StatusQuery => {}
            Message::StatusReport(m) => {
                w.u32(m.applied_epoch);
                w.u32(m.uptime_s);
                w.u8(m.server as u8);
                w.bool(m.mysql_up);
                w.bool(m.read_only);
                w.count8("held_vips", m.held_vips.len())?;
                for ip in &m.held_vips {
                    w.ipv4(*ip);
                }
                match &m.replication {
                    None => w.u8(0),
                    Some(r) => {
                        w.u8(1);
                        w.str8("source_host", &r.source_host)?;
                        w.u16(r.source_port);
                        w.bool(r.io_running);
                        w.bool(r.sql_running);
                        w.u32(r.seconds_behind.unwrap_or(u32::MAX));
                        w.str16("last_error", &r.last_error)?;
                    }
                }
                w.str32("gtid_executed", &m.gtid_executed)?;
                w.str16("gtid_unreadable", &m.gtid_unreadable)?;
                match &m.binlog {
                    None => w.u8(0),
                    Some((file, pos)) => {
                        w.u8(1);
                        w.str8("binlog file", file)?;
                        w.u64(*pos);
                    }
                }
                w.u8(m.probe as u8);
                w.str16("fenced_reason", &m.fenced_reason)?;
            }
            Message::Action(m) => {
                w.u32(m.deadline_ms);
                match &m.action {
                    Action::SetReadOnly { on } => {
                        w.u8(1);
                        w.bool(*on);
                    }
                    Action::KillSessions => w.u8(2),
                    Action::CatchUp { target } => {
                        w.u8(3);
                        match target {
                            None => w.u8(0),
                            Some(p) => {
                                w.u8(1);
                                put_position(&mut w, p)?;
                            }
                        }
                    }
                    Action::StopReplication => w.u8(4),
                    Action::StartReplication => w.u8(5),
                    Action::ChangeMaster {
                        host,
                        port,
                        position,
                    } => {
                        w.u8(6);
                        w.ipv4(*host);
                        w.u16(*port);
                        put_position(&mut w, position)?;
                    }
                    Action::Demote => w.u8(7),
                    Action::StopIoThread { source } => {
                        w.u8(8);
                        w.ipv4(*source);
                    }
                }
            }
            Message::ActionResult(m) => {
                w.u8(m.outcome as u8);
                w.str16("detail", &m.detail)?;
                match &m.position {
                    None => w.u8(0),
                    Some(p) => {
                        w.u8(1);
                        put_position(&mut w, p)?;
                    }
                }
            }
            Message::ProbeEvent(m) => {
                w.u8(m.kind as u8);
                w.u32(m.tgid);
                w.u16(m.port);
                w.u64(m.ktime_ns);
            }
            Message::Error(m) => w.str16("message", &m.message)?,
        }
        Ok(())
    }

    /// Decodes a payload of the given type; rejects short, long and ill-valued input.
    pub fn decode_payload(msg_type: MessageType, payload: &[u8]) -> Result<Message, FrameError> {
        let mut r = Reader::new(payload, msg_type);
        let msg = match msg_type {
            MessageType::Hello => Message::Hello(Hello {
                nonce: r.array("nonce")?,
                monitor: r.str8("monitor")?,
                agent: r.str8("agent")?,
                term: crate::epoch::Term {
                    rev: r.u64("term")?,
                    epoch: r.u64("epoch")?,
                },
            }),
            MessageType::Challenge => Message::Challenge(Challenge {
                echo: r.array("echo")?,
                nonce: r.array("nonce")?,
                agent: r.str8("agent")?,
            }),
            MessageType::Auth => Message::Auth(Auth {
                echo: r.array("echo")?,
            }),
            MessageType::Welcome => Message::Welcome(Welcome {
                agent_version: r.str8("agent_version")?,
            }),
            MessageType::Heartbeat => Message::Heartbeat(Heartbeat {
                epoch: r.u32("epoch")?,
            }),
            MessageType::AgentHeartbeat => {
                let applied_epoch = r.u32("applied_epoch")?;
                let uptime_s = r.u32("uptime_s")?;
                let flags = r.u8("flags")?;
                if flags & !hb_flags::ALL != 0 {
                    return Err(r.malformed(format!("unknown flag bits 0x{flags:02x}")));
                }
                let probe = probe_state(&mut r)?;
                let ip = r.ipv4("source ip")?;
                let port = r.u16("source port")?;
                let source = (!ip.is_unspecified()).then_some((ip, port));
                let held_vips = ipv4_list(&mut r, "held_vips")?;
                Message::AgentHeartbeat(AgentHeartbeat {
                    applied_epoch,
                    uptime_s,
                    flags,
                    probe,
                    source,
                    held_vips,
                })
            }
            MessageType::Consent => {
                let echo = r.u32("echo")?;
                let known = crate::epoch::Term {
                    rev: r.u64("known term")?,
                    epoch: r.u64("known epoch")?,
                };
                let vouch = crate::epoch::Term {
                    rev: r.u64("vouch term")?,
                    epoch: r.u64("vouch epoch")?,
                };
                let n = r.u8("roster")?;
                let mut roster = Vec::with_capacity(n.into());
                for _ in 0..n {
                    roster.push(r.str8("roster name")?);
                }
                Message::Consent(Consent {
                    echo,
                    known,
                    vouch,
                    roster,
                })
            }
            MessageType::DesiredState => {
                let epoch = r.u32("epoch")?;
                let code = r.u8("state")?;
                let state = host_state_from_code(code)
                    .ok_or_else(|| r.malformed(format!("unknown host state {code}")))?;
                let active_master = r.str8("active_master")?;
                let writable = r.bool("writable")?;
                let n = r.u8("roles")?;
                let mut roles = Vec::with_capacity(n.into());
                for _ in 0..n {
                    roles.push((r.str8("role")?, r.ipv4("role ip")?));
                }
                let n = r.u8("parked")?;
                let mut parked = Vec::with_capacity(n.into());
                for _ in 0..n {
                    parked.push(r.ipv4("parked ip")?);
                }
                Message::DesiredState(DesiredState {
                    epoch,
                    state,
                    active_master,
                    writable,
                    roles,
                    parked,
                })
            }
            MessageType::Applied => {
                let epoch = r.u32("epoch")?;
                let n = r.u8("failures")?;
                let mut failures = Vec::with_capacity(n.into());
                for _ in 0..n {
                    failures.push(r.str16("failure")?);
                }
                Message::Applied(Applied { epoch, failures })
            }
            MessageType::StatusQuery => Message::StatusQuery,
            MessageType::StatusReport => {
                let applied_epoch = r.u32("applied_epoch")?;
                let uptime_s = r.u32("uptime_s")?;
                let code = r.u8("server")?;
                let server = ServerKind::from_u8(code)
                    .ok_or_else(|| r.malformed(format!("unknown server kind {code}")))?;
                let mysql_up = r.bool("mysql_up")?;
                let read_only = r.bool("read_only")?;
                let held_vips = ipv4_list(&mut r, "held_vips")?;
                let replication = match r.u8("replication")? {
                    0 => None,
                    1 => Some(Replication {
                        source_host: r.str8("source_host")?,
                        source_port: r.u16("source_port")?,
                        io_running: r.bool("io_running")?,
                        sql_running: r.bool("sql_running")?,
                        seconds_behind: Some(r.u32("seconds_behind")?).filter(|s| *s != u32::MAX),
                        last_error: r.str16("last_error")?,
                    }),
                    v => return Err(r.malformed(format!("replication tag {v}"))),
                };
                let gtid_executed = r.str32("gtid_executed")?;
                let gtid_unreadable = r.str16("gtid_unreadable")?;
                let binlog = match r.u8("binlog")? {
                    0 => None,
                    1 => Some((r.str8("binlog file")?, r.u64("binlog pos")?)),
                    v => return Err(r.malformed(format!("binlog tag {v}"))),
                };
                let probe = probe_state(&mut r)?;
                let fenced_reason = r.str16("fenced_reason")?;
                Message::StatusReport(StatusReport {
                    applied_epoch,
                    uptime_s,
                    server,
                    mysql_up,
                    read_only,
                    held_vips,
                    replication,
                    gtid_executed,
                    gtid_unreadable,
                    binlog,
                    probe,
                    fenced_reason,
                })
            }
            MessageType::Action => {
                let deadline_ms = r.u32("deadline_ms")?;
                let action = match r.u8("action")? {
                    1 => Action::SetReadOnly { on: r.bool("on")? },
                    2 => Action::KillSessions,
                    3 => Action::CatchUp {
                        target: match r.u8("target")? {
                            0 => None,
                            1 => Some(get_position(&mut r)?),
                            v => return Err(r.malformed(format!("target tag {v}"))),
                        },
                    },
                    4 => Action::StopReplication,
                    5 => Action::StartReplication,
                    6 => Action::ChangeMaster {
                        host: r.ipv4("host")?,
                        port: r.u16("port")?,
                        position: get_position(&mut r)?,
                    },
                    7 => Action::Demote,
                    8 => Action::StopIoThread {
                        source: r.ipv4("source")?,
                    },
                    v => return Err(r.malformed(format!("unknown action {v}"))),
                };
                Message::Action(ActionRequest {
                    action,
                    deadline_ms,
                })
            }
            MessageType::ActionResult => {
                let code = r.u8("outcome")?;
                let outcome = ActionOutcome::from_u8(code)
                    .ok_or_else(|| r.malformed(format!("unknown outcome {code}")))?;
                let detail = r.str16("detail")?;
                let position = match r.u8("position")? {
                    0 => None,
                    1 => Some(get_position(&mut r)?),
                    v => return Err(r.malformed(format!("position tag {v}"))),
                };
                Message::ActionResult(ActionResult {
                    outcome,
                    detail,
                    position,
                })
            }
            MessageType::ProbeEvent => {
                let code = r.u8("kind")?;
                let kind = ProbeEventKind::from_u8(code)
                    .ok_or_else(|| r.malformed(format!("unknown probe event {code}")))?;
                Message::ProbeEvent(ProbeEvent {
                    kind,
                    tgid: r.u32("tgid")?,
                    port: r.u16("port")?,
                    ktime_ns: r.u64("ktime_ns")?,
                })
            }
            MessageType::Error => Message::Error(ErrorMessage {
                message: r.str16("message")?,
            }),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn probe_state(r: &mut Reader<'_>) -> Result<ProbeState, FrameError> {
    let code = r.u8("probe")?;
    ProbeState::from_u8(code).ok_or_else(|| r.malformed(format!("unknown probe state {code}")))
}

fn ipv4_list(r: &mut Reader<'_>, field: &str) -> Result<Vec<Ipv4Addr>, FrameError> {
    let n = r.u8(field)?;
    (0..n).map(|_| r.ipv4(field)).collect()
}

fn put_position(w: &mut Writer<'_>, p: &Position) -> Result<(), FrameError> {
    match p {
        Position::Gtid(set) => {
            w.u8(1);
            w.str32("gtid set", set)
        }
        Position::FilePos { file, pos } => {
            w.u8(2);
            w.str8("binlog file", file)?;
            w.u64(*pos);
            Ok(())
        }
        Position::GtidSlavePos => {
            w.u8(3);
            Ok(())
        }
    }
}

fn get_position(r: &mut Reader<'_>) -> Result<Position, FrameError> {
    match r.u8("position kind")? {
        1 => Ok(Position::Gtid(r.str32("gtid set")?)),
        2 => Ok(Position::FilePos {
            file: r.str8("binlog file")?,
            pos: r.u64("binlog pos")?,
        }),
        3 => Ok(Position::GtidSlavePos),
        v => Err(r.malformed(format!("unknown position kind {v}"))),
    }
}

fn host_state_code(s: HostState) -> u8 {
    match s {
        HostState::Online => 1,
        HostState::AdminOffline => 2,
        HostState::HardOffline => 3,
        HostState::AwaitingRecovery => 4,
        HostState::ReplicationFail => 5,
        HostState::ReplicationDelay => 6,
    }
}

fn host_state_from_code(c: u8) -> Option<HostState> {
    HostState::ALL
        .iter()
        .copied()
        .find(|s| host_state_code(*s) == c)
}
