//! What the agent's eBPF probe reports: its state, carried in heartbeats and status
//! reports, and its events, sent the moment they happen.

use crate::proto::frame::FrameError;
use crate::proto::wire::{Reader, Writer};

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

/// agent -> monitor, unsolicited, the moment the probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEvent {
    pub kind: ProbeEventKind,
    pub tgid: u32,
    pub port: u16,
    /// CLOCK_MONOTONIC nanoseconds in the kernel when it happened.
    pub ktime_ns: u64,
}

impl ProbeState {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let code = r.u8("probe")?;
        ProbeState::from_u8(code).ok_or_else(|| r.malformed(format!("unknown probe state {code}")))
    }
}

impl ProbeEvent {
    pub(super) fn encode(&self, w: &mut Writer<'_>) {
        w.u8(self.kind as u8);
        w.u32(self.tgid);
        w.u16(self.port);
        w.u64(self.ktime_ns);
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let code = r.u8("kind")?;
        let kind = ProbeEventKind::from_u8(code)
            .ok_or_else(|| r.malformed(format!("unknown probe event {code}")))?;
        Ok(ProbeEvent {
            kind,
            tgid: r.u32("tgid")?,
            port: r.u16("port")?,
            ktime_ns: r.u64("ktime_ns")?,
        })
    }
}
