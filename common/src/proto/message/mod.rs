//! The messages monitor and agent exchange, and their payload encodings: one module per
//! family, each type with its own `encode` and `decode`; [`Message`] ties them together
//! and is the one place that knows the protocol version.

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

mod action;
mod desired;
mod handshake;
mod heartbeat;
mod probe;
mod status;

pub use action::{Action, ActionOutcome, ActionRequest, ActionResult, Position};
pub use desired::{Applied, DesiredState};
pub use handshake::{Auth, Challenge, Hello, Nonce, Welcome, NONCE_LEN};
pub use heartbeat::{hb_flags, AgentHeartbeat, Consent, Heartbeat};
pub use probe::{ProbeEvent, ProbeEventKind, ProbeState};
pub use status::{Replication, ServerKind, StatusReport};

use super::frame::FrameError;
use super::wire::{Reader, Writer};

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

    /// Appends the payload, as protocol `version` lays it out, to `out`.
    pub fn encode_payload(&self, version: u8, out: &mut Vec<u8>) -> Result<(), FrameError> {
        // Versions 8 and 9 lay out every payload alike: a later change branches on
        // `version` here and in `decode_payload`, nowhere else.
        debug_assert!(version >= super::frame::MIN_VERSION, "version {version}");
        let mut w = Writer {
            out,
            msg_type: self.msg_type(),
        };
        match self {
            Message::Hello(m) => m.encode(&mut w)?,
            Message::Challenge(m) => m.encode(&mut w)?,
            Message::Auth(m) => m.encode(&mut w),
            Message::Welcome(m) => m.encode(&mut w)?,
            Message::Heartbeat(m) => m.encode(&mut w),
            Message::AgentHeartbeat(m) => m.encode(&mut w)?,
            Message::Consent(m) => m.encode(&mut w)?,
            Message::DesiredState(m) => m.encode(&mut w)?,
            Message::Applied(m) => m.encode(&mut w)?,
            Message::StatusQuery => {}
            Message::StatusReport(m) => m.encode(&mut w)?,
            Message::Action(m) => m.encode(&mut w)?,
            Message::ActionResult(m) => m.encode(&mut w)?,
            Message::ProbeEvent(m) => m.encode(&mut w),
            Message::Error(m) => w.str16("message", &m.message)?,
        }
        Ok(())
    }

    /// Decodes a payload of the given type, as protocol `version` lays it out; rejects
    /// short, long and ill-valued input.
    pub fn decode_payload(
        version: u8,
        msg_type: MessageType,
        payload: &[u8],
    ) -> Result<Message, FrameError> {
        debug_assert!(version >= super::frame::MIN_VERSION, "version {version}");
        let mut r = Reader::new(payload, msg_type);
        let msg = match msg_type {
            MessageType::Hello => Message::Hello(Hello::decode(&mut r)?),
            MessageType::Challenge => Message::Challenge(Challenge::decode(&mut r)?),
            MessageType::Auth => Message::Auth(Auth::decode(&mut r)?),
            MessageType::Welcome => Message::Welcome(Welcome::decode(&mut r)?),
            MessageType::Heartbeat => Message::Heartbeat(Heartbeat::decode(&mut r)?),
            MessageType::AgentHeartbeat => Message::AgentHeartbeat(AgentHeartbeat::decode(&mut r)?),
            MessageType::Consent => Message::Consent(Consent::decode(&mut r)?),
            MessageType::DesiredState => Message::DesiredState(DesiredState::decode(&mut r)?),
            MessageType::Applied => Message::Applied(Applied::decode(&mut r)?),
            MessageType::StatusQuery => Message::StatusQuery,
            MessageType::StatusReport => Message::StatusReport(StatusReport::decode(&mut r)?),
            MessageType::Action => Message::Action(ActionRequest::decode(&mut r)?),
            MessageType::ActionResult => Message::ActionResult(ActionResult::decode(&mut r)?),
            MessageType::ProbeEvent => Message::ProbeEvent(ProbeEvent::decode(&mut r)?),
            MessageType::Error => Message::Error(ErrorMessage {
                message: r.str16("message")?,
            }),
        };
        r.finish()?;
        Ok(msg)
    }
}
