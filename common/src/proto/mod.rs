//! The monitor <-> agent wire protocol (docs/design.md), sans-IO: frames are built into and
//! parsed from byte buffers; sockets belong to the daemons.

pub mod frame;
#[cfg(feature = "io")]
pub mod io;
pub mod message;
pub mod session;
mod wire;

pub use crate::epoch::Term;
pub use frame::{
    FrameBuffer, FrameError, Header, RawFrame, DEFAULT_MAX_PAYLOAD, FLAG_CONTINUED, FLAG_RESPONSE,
    HEADER_LEN, MAC_LEN, MAX_MESSAGE, MAX_PAYLOAD,
};
pub use message::{
    hb_flags, Action, ActionOutcome, ActionRequest, ActionResult, AgentHeartbeat, Applied, Auth,
    Challenge, Consent, DesiredState, ErrorMessage, Heartbeat, Hello, Message, MessageType, Nonce,
    Position, ProbeEvent, ProbeEventKind, ProbeState, Replication, ServerKind, StatusReport,
    Welcome, NONCE_LEN,
};
pub use session::{fresh_nonce, AgentHandshake, MonitorHandshake, Opener, Sealer, Session};

#[cfg(test)]
mod tests;
