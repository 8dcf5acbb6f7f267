//! The heartbeat exchange that keeps a writer's lease alive: the monitor's heartbeat,
//! the agent's compact answer, and the consent a monitor cut off from etcd adds to it.

use super::ProbeState;
use crate::proto::frame::FrameError;
use crate::proto::wire::{Reader, Writer};
use std::net::Ipv4Addr;

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

impl Heartbeat {
    pub(super) fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.epoch);
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Heartbeat {
            epoch: r.u32("epoch")?,
        })
    }
}

impl AgentHeartbeat {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.applied_epoch);
        w.u32(self.uptime_s);
        w.u8(self.flags);
        w.u8(self.probe as u8);
        let (ip, port) = self.source.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
        w.ipv4(ip);
        w.u16(port);
        w.count8("held_vips", self.held_vips.len())?;
        for ip in &self.held_vips {
            w.ipv4(*ip);
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let applied_epoch = r.u32("applied_epoch")?;
        let uptime_s = r.u32("uptime_s")?;
        let flags = r.u8("flags")?;
        if flags & !hb_flags::ALL != 0 {
            return Err(r.malformed(format!("unknown flag bits 0x{flags:02x}")));
        }
        let probe = ProbeState::decode(r)?;
        let ip = r.ipv4("source ip")?;
        let port = r.u16("source port")?;
        let source = (!ip.is_unspecified()).then_some((ip, port));
        let held_vips = r.ipv4_list("held_vips")?;
        Ok(AgentHeartbeat {
            applied_epoch,
            uptime_s,
            flags,
            probe,
            source,
            held_vips,
        })
    }
}

impl Consent {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.u32(self.echo);
        w.u64(self.known.rev);
        w.u64(self.known.epoch);
        w.u64(self.vouch.rev);
        w.u64(self.vouch.epoch);
        w.count8("roster", self.roster.len())?;
        for name in &self.roster {
            w.str8("roster name", name)?;
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
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
        Ok(Consent {
            echo,
            known,
            vouch,
            roster,
        })
    }
}
