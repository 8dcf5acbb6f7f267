//! The handshake: nonces that each side proves the cluster key over, before any frame
//! travels under the session keys (the state machine is in `proto::session`).

use crate::proto::frame::FrameError;
use crate::proto::wire::{Reader, Writer};

pub const NONCE_LEN: usize = 16;
pub type Nonce = [u8; NONCE_LEN];

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

impl Hello {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.bytes(&self.nonce);
        w.str8("monitor", &self.monitor)?;
        w.str8("agent", &self.agent)?;
        w.u64(self.term.rev);
        w.u64(self.term.epoch);
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Hello {
            nonce: r.array("nonce")?,
            monitor: r.str8("monitor")?,
            agent: r.str8("agent")?,
            term: crate::epoch::Term {
                rev: r.u64("term")?,
                epoch: r.u64("epoch")?,
            },
        })
    }
}

impl Challenge {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.bytes(&self.echo);
        w.bytes(&self.nonce);
        w.str8("agent", &self.agent)
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Challenge {
            echo: r.array("echo")?,
            nonce: r.array("nonce")?,
            agent: r.str8("agent")?,
        })
    }
}

impl Auth {
    pub(super) fn encode(&self, w: &mut Writer<'_>) {
        w.bytes(&self.echo);
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Auth {
            echo: r.array("echo")?,
        })
    }
}

impl Welcome {
    pub(super) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.str8("agent_version", &self.agent_version)
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(Welcome {
            agent_version: r.str8("agent_version")?,
        })
    }
}
