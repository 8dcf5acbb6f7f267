//! The desired state the monitor sends a host, and the agent's account of applying it.

use crate::proto::frame::FrameError;
use crate::proto::wire::{Reader, Writer};
use crate::types::HostState;
use std::net::Ipv4Addr;

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

impl DesiredState {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.epoch);
        w.u8(host_state_code(self.state));
        w.str8("active_master", &self.active_master)?;
        w.bool(self.writable);
        w.count8("roles", self.roles.len())?;
        for (role, ip) in &self.roles {
            w.str8("role", role)?;
            w.ipv4(*ip);
        }
        w.count8("parked", self.parked.len())?;
        for ip in &self.parked {
            w.ipv4(*ip);
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
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
        Ok(DesiredState {
            epoch,
            state,
            active_master,
            writable,
            roles,
            parked,
        })
    }
}

impl Applied {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.epoch);
        w.count8("failures", self.failures.len())?;
        for f in &self.failures {
            w.str16("failure", f)?;
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let epoch = r.u32("epoch")?;
        let n = r.u8("failures")?;
        let mut failures = Vec::with_capacity(n.into());
        for _ in 0..n {
            failures.push(r.str16("failure")?);
        }
        Ok(Applied { epoch, failures })
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
