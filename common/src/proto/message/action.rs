//! The actions the monitor orders during a promotion or a demotion, their results, and
//! the replication positions both carry.

use crate::proto::frame::FrameError;
use crate::proto::wire::{Reader, Writer};
use std::net::Ipv4Addr;

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

impl ActionRequest {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.deadline_ms);
        match &self.action {
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
                        p.encode(w)?;
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
                position.encode(w)?;
            }
            Action::Demote => w.u8(7),
            Action::StopIoThread { source } => {
                w.u8(8);
                w.ipv4(*source);
            }
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let deadline_ms = r.u32("deadline_ms")?;
        let action = match r.u8("action")? {
            1 => Action::SetReadOnly { on: r.bool("on")? },
            2 => Action::KillSessions,
            3 => Action::CatchUp {
                target: match r.u8("target")? {
                    0 => None,
                    1 => Some(Position::decode(r)?),
                    v => return Err(r.malformed(format!("target tag {v}"))),
                },
            },
            4 => Action::StopReplication,
            5 => Action::StartReplication,
            6 => Action::ChangeMaster {
                host: r.ipv4("host")?,
                port: r.u16("port")?,
                position: Position::decode(r)?,
            },
            7 => Action::Demote,
            8 => Action::StopIoThread {
                source: r.ipv4("source")?,
            },
            v => return Err(r.malformed(format!("unknown action {v}"))),
        };
        Ok(ActionRequest {
            action,
            deadline_ms,
        })
    }
}

impl ActionResult {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u8(self.outcome as u8);
        w.str16("detail", &self.detail)?;
        match &self.position {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                p.encode(w)?;
            }
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let code = r.u8("outcome")?;
        let outcome = ActionOutcome::from_u8(code)
            .ok_or_else(|| r.malformed(format!("unknown outcome {code}")))?;
        let detail = r.str16("detail")?;
        let position = match r.u8("position")? {
            0 => None,
            1 => Some(Position::decode(r)?),
            v => return Err(r.malformed(format!("position tag {v}"))),
        };
        Ok(ActionResult {
            outcome,
            detail,
            position,
        })
    }
}

impl Position {
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        match self {
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

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
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
}
