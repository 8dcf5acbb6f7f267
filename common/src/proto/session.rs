//! Authentication: the mutual challenge-response at connect and the MAC on every frame.
//!
//! Keys come from the pre-shared cluster key with BLAKE3's key derivation, one key per
//! direction and phase, so a frame can never be reflected back at its sender:
//!
//! ```text
//! monitor                                         agent
//!   Hello{nonce_m, names, term}  seq 0, K_hs(m->a) ──>   MAC fails: WrongKey
//!   <── Challenge{echo nonce_m, nonce_a}  seq 0, K_hs(a->m)
//!   Auth{echo nonce_a}           seq 1, K_hs(m->a) ──>
//!   <── Welcome                  seq 1, K_s(a->m) = KDF(key, nonce_m, nonce_a, term)
//!   Heartbeat ...                seq 2, K_s(m->a)
//! ```
//! Each side proves it holds the key by MACing the other's fresh nonce; the session keys
//! depend on both nonces, so frames of an earlier connection do not verify in a new one.
//!
//! The term (a monitor fleet's leadership term with its epoch, `Term::NONE` without a
//! fleet) is part of the session keys: every frame of the session is authenticated under
//! it, so no frame can be moved into a session of another term or epoch, and an agent that
//! refuses a term refuses every frame sent under it.
//!
//! Versions are negotiated in the same exchange: the Hello goes out in the monitor's
//! newest version (its layout is frozen), the agent answers in the lower of that and its
//! own, and every later frame of both directions carries that version, authenticated by
//! its MAC like the rest of the header. A monitor whose Hello an agent of the previous
//! release drops (it refuses a frame of any other version) tries once more in the
//! previous version: `monitor/src/agents/client.rs`.

use super::frame::{
    FrameError, Header, RawFrame, FLAG_CONTINUED, HEADER_LEN, MAC_LEN, MAX_MESSAGE, MAX_PAYLOAD,
    MIN_VERSION, VERSION,
};
use super::message::{Auth, Challenge, Hello, Message, MessageType, Nonce, Welcome, NONCE_LEN};
use crate::config::ClusterKey;
use crate::epoch::Term;

const HS_M2A: &str = "mmm v1 2026-11 handshake monitor->agent";
const HS_A2M: &str = "mmm v1 2026-11 handshake agent->monitor";
const S_M2A: &str = "mmm v1 2026-11 session monitor->agent";
const S_A2M: &str = "mmm v1 2026-11 session agent->monitor";

type Key = [u8; 32];

fn derive(context: &str, cluster: &ClusterKey, nonces: Option<(&Nonce, &Nonce, Term)>) -> Key {
    let mut material = cluster.as_bytes().to_vec();
    if let Some((m, a, term)) = nonces {
        material.extend_from_slice(m);
        material.extend_from_slice(a);
        material.extend_from_slice(&term.rev.to_be_bytes());
        material.extend_from_slice(&term.epoch.to_be_bytes());
    }
    blake3::derive_key(context, &material)
}

fn mac(key: &Key, authenticated: &[u8]) -> [u8; MAC_LEN] {
    let hash = blake3::keyed_hash(key, authenticated);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&hash.as_bytes()[..MAC_LEN]);
    out
}

/// Compares without an early exit, so timing does not reveal how much of a MAC matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random nonce.
pub fn fresh_nonce() -> Result<Nonce, getrandom::Error> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)?;
    Ok(n)
}

/// The sending half of a direction: its key, protocol version and next sequence number.
#[derive(Debug)]
pub struct Sealer {
    key: Key,
    version: u8,
    seq: Option<u32>,
}

impl Sealer {
    fn new(key: Key, version: u8) -> Self {
        Sealer {
            key,
            version,
            seq: Some(0),
        }
    }

    /// Appends the frames for `msg` to `out`: one (header, payload, MAC) for a payload that
    /// fits [`MAX_PAYLOAD`], several flagged [`FLAG_CONTINUED`] but the last for one up to
    /// [`MAX_MESSAGE`]. Nothing is appended, and no sequence number used, on an error.
    pub fn seal_into(
        &mut self,
        msg: &Message,
        request_id: u32,
        flags: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let seq = self.seq.ok_or(FrameError::SequenceExhausted)?;
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        if let Err(e) = msg.encode_payload(self.version, out) {
            out.truncate(start);
            return Err(e);
        }
        let payload_len = out.len() - start - HEADER_LEN;
        if payload_len <= MAX_PAYLOAD {
            self.finish_frame(msg.msg_type(), flags, request_id, seq, out, start);
            self.seq = seq.checked_add(1);
            return Ok(());
        }
        // The rare large message: re-emitted in pieces, each a frame of its own.
        let payload = out.split_off(start + HEADER_LEN);
        out.truncate(start);
        let parts = payload.len().div_ceil(MAX_PAYLOAD);
        let last_seq = u32::try_from(parts - 1)
            .ok()
            .and_then(|n| seq.checked_add(n));
        if payload.len() > MAX_MESSAGE || last_seq.is_none() {
            return Err(FrameError::TooLarge {
                msg_type: msg.msg_type(),
                len: payload.len(),
                max: MAX_MESSAGE,
            });
        }
        let mut seq = seq;
        for (i, piece) in payload.chunks(MAX_PAYLOAD).enumerate() {
            let more = if i + 1 < parts { FLAG_CONTINUED } else { 0 };
            let at = out.len();
            out.extend_from_slice(&[0u8; HEADER_LEN]);
            out.extend_from_slice(piece);
            self.finish_frame(msg.msg_type(), flags | more, request_id, seq, out, at);
            self.seq = seq.checked_add(1);
            seq = seq.wrapping_add(1);
        }
        Ok(())
    }

    /// Writes the header of the frame that starts at `out[start]` (its payload follows
    /// it to the end of `out`) and appends its MAC.
    fn finish_frame(
        &self,
        msg_type: MessageType,
        flags: u8,
        request_id: u32,
        seq: u32,
        out: &mut Vec<u8>,
        start: usize,
    ) {
        let len = out.len() - start - HEADER_LEN;
        let header = Header {
            version: self.version,
            msg_type,
            flags,
            len: u16::try_from(len).expect("pieces are cut at MAX_PAYLOAD"),
            request_id,
            seq,
        };
        out[start..start + HEADER_LEN].copy_from_slice(&header.encode());
        let tag = mac(&self.key, &out[start..]);
        out.extend_from_slice(&tag);
    }

    pub fn seal(
        &mut self,
        msg: &Message,
        request_id: u32,
        flags: u8,
    ) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(64);
        self.seal_into(msg, request_id, flags, &mut out)?;
        Ok(out)
    }
}

/// The receiving half of a direction: its key, the protocol version every frame must
/// carry, the sequence number it expects, and the pieces of a message that goes on in
/// later frames.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    version: u8,
    expected: u32,
    handshake: bool,
    pending: Option<Pending>,
}

/// The frames of one message received so far ([`FLAG_CONTINUED`]).
#[derive(Debug)]
struct Pending {
    msg_type: MessageType,
    request_id: u32,
    payload: Vec<u8>,
}

impl Opener {
    fn new(key: Key, version: u8, handshake: bool) -> Self {
        Opener {
            key,
            version,
            expected: 0,
            handshake,
            pending: None,
        }
    }

    /// Verifies a frame's MAC and sequence number, then decodes its payload. For a
    /// message that must come whole in one frame (the handshake's).
    pub fn open(&mut self, frame: &RawFrame) -> Result<Message, FrameError> {
        match self.open_part(frame)? {
            Some(m) => Ok(m),
            None => Err(FrameError::Unexpected {
                msg_type: frame.header.msg_type,
                state: "in more than one frame here",
            }),
        }
    }

    /// Verifies a frame's MAC and sequence number; returns the message it completes, or
    /// None when the message goes on in the next frame ([`FLAG_CONTINUED`]). A frame of
    /// another message inside a continued one, or a message over [`MAX_MESSAGE`], is an
    /// error: the sender never makes either.
    pub fn open_part(&mut self, frame: &RawFrame) -> Result<Option<Message>, FrameError> {
        self.verify(frame)?;
        let h = frame.header;
        let continued = h.flags & FLAG_CONTINUED != 0;
        let Some(mut p) = self.pending.take() else {
            if !continued {
                return Message::decode_payload(h.version, h.msg_type, frame.payload()).map(Some);
            }
            self.pending = Some(Pending {
                msg_type: h.msg_type,
                request_id: h.request_id,
                payload: frame.payload().to_vec(),
            });
            return Ok(None);
        };
        if p.msg_type != h.msg_type || p.request_id != h.request_id {
            return Err(FrameError::Malformed {
                msg_type: p.msg_type,
                reason: format!(
                    "a {:?} frame (request {}) came inside this message (request {}), which was not finished",
                    h.msg_type, h.request_id, p.request_id
                ),
            });
        }
        let len = p.payload.len() + frame.payload().len();
        if len > MAX_MESSAGE {
            return Err(FrameError::Oversized {
                len,
                max: MAX_MESSAGE,
            });
        }
        p.payload.extend_from_slice(frame.payload());
        if continued {
            self.pending = Some(p);
            return Ok(None);
        }
        Message::decode_payload(self.version, p.msg_type, &p.payload).map(Some)
    }

    fn verify(&mut self, frame: &RawFrame) -> Result<(), FrameError> {
        let tag = mac(&self.key, frame.authenticated_part());
        if !ct_eq(&tag, frame.mac()) {
            return Err(if self.handshake {
                FrameError::WrongKey
            } else {
                FrameError::Forged {
                    seq: frame.header.seq,
                }
            });
        }
        // The sender sealed another version than the session's: never a frame of ours.
        if frame.header.version != self.version {
            return Err(FrameError::VersionMismatch {
                found: frame.header.version,
                expected: self.version,
            });
        }
        let seq = frame.header.seq;
        if seq < self.expected {
            return Err(FrameError::Replayed {
                seq,
                expected: self.expected,
            });
        }
        if seq > self.expected {
            return Err(FrameError::Reordered {
                seq,
                expected: self.expected,
            });
        }
        self.expected = self
            .expected
            .checked_add(1)
            .ok_or(FrameError::SequenceExhausted)?;
        Ok(())
    }

    fn rekey(&mut self, key: Key) {
        self.key = key;
        self.handshake = false;
    }
}

/// An authenticated connection's two directions.
#[derive(Debug)]
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
    /// The peer's name as it announced itself.
    pub peer: String,
    /// The monitor's leadership term (`Term::NONE`: no fleet); bound into the session keys.
    pub term: Term,
    /// The protocol version both sides speak in this session, carried by every frame.
    pub version: u8,
}

fn unexpected(msg: &Message, state: &'static str) -> FrameError {
    FrameError::Unexpected {
        msg_type: msg.msg_type(),
        state,
    }
}

/// The monitor's side of the handshake.
#[derive(Debug)]
pub struct MonitorHandshake {
    cluster: ClusterKey,
    /// The version of the Hello: the newest the agent may answer in.
    version: u8,
    nonce: Nonce,
    term: Term,
    agent: String,
    sealer: Sealer,
    opener: Opener,
}

impl MonitorHandshake {
    /// Starts a handshake with the agent of host `agent` under `term` (`Term::NONE`: no
    /// fleet) in this side's newest version; returns the Hello frame to send.
    pub fn start(
        cluster: &ClusterKey,
        monitor: &str,
        agent: &str,
        term: Term,
        nonce: Nonce,
    ) -> Result<(Self, Vec<u8>), FrameError> {
        MonitorHandshake::start_in(cluster, monitor, agent, term, nonce, VERSION)
    }

    /// As [`MonitorHandshake::start`], offering at most `version` (from [`MIN_VERSION`]):
    /// the retry for an agent of the previous release, which drops a later Hello.
    pub fn start_in(
        cluster: &ClusterKey,
        monitor: &str,
        agent: &str,
        term: Term,
        nonce: Nonce,
        version: u8,
    ) -> Result<(Self, Vec<u8>), FrameError> {
        let version = version.clamp(MIN_VERSION, VERSION);
        let mut sealer = Sealer::new(derive(HS_M2A, cluster, None), version);
        let hello = sealer.seal(
            &Message::Hello(Hello {
                nonce,
                monitor: monitor.into(),
                agent: agent.into(),
                term,
            }),
            0,
            0,
        )?;
        let hs = MonitorHandshake {
            cluster: cluster.clone(),
            version,
            nonce,
            term,
            agent: agent.into(),
            sealer,
            opener: Opener::new(derive(HS_A2M, cluster, None), version, true),
        };
        Ok((hs, hello))
    }

    /// Takes the agent's Challenge; returns the session and the Auth frame to send. The
    /// session's first received message must then be the agent's Welcome. The agent's
    /// answer names the session's version: any this side speaks up to the Hello's.
    pub fn on_challenge(mut self, frame: &RawFrame) -> Result<(Session, Vec<u8>), FrameError> {
        let version = frame.header.version;
        if !(MIN_VERSION..=self.version).contains(&version) {
            return Err(FrameError::VersionMismatch {
                found: version,
                expected: self.version,
            });
        }
        self.opener.version = version;
        self.sealer.version = version;
        let msg = self.opener.open(frame)?;
        if let Message::Error(e) = msg {
            return Err(FrameError::PeerRejected { message: e.message });
        }
        let Message::Challenge(ch) = msg else {
            return Err(unexpected(&msg, "from an agent before its Challenge"));
        };
        if !ct_eq(&ch.echo, &self.nonce) {
            return Err(FrameError::StaleNonce);
        }
        if ch.agent != self.agent {
            return Err(FrameError::WrongPeer {
                expected: self.agent,
                found: ch.agent,
            });
        }
        let auth = self
            .sealer
            .seal(&Message::Auth(Auth { echo: ch.nonce }), 0, 0)?;
        let nonces = Some((&self.nonce, &ch.nonce, self.term));
        self.sealer.key = derive(S_M2A, &self.cluster, nonces);
        self.opener.rekey(derive(S_A2M, &self.cluster, nonces));
        Ok((
            Session {
                sealer: self.sealer,
                opener: self.opener,
                peer: ch.agent,
                term: self.term,
                version,
            },
            auth,
        ))
    }
}

/// The agent's side of the handshake.
#[derive(Debug)]
pub struct AgentHandshake {
    cluster: ClusterKey,
    /// The newest version this side speaks ([`VERSION`] but in tests of older peers).
    max_version: u8,
    /// The session's version once the Hello is read (the lower of the two sides'),
    /// `max_version` until then.
    version: u8,
    agent: String,
    nonce: Nonce,
    /// The monitor's nonce, name and term, from its Hello.
    peer_nonce: Option<(Nonce, String, Term)>,
    sealer: Sealer,
    opener: Opener,
}

impl AgentHandshake {
    pub fn new(cluster: &ClusterKey, agent: &str, nonce: Nonce) -> Self {
        AgentHandshake::speaking(cluster, agent, nonce, VERSION)
    }

    /// An agent whose newest version is `max_version`: it stands in for an agent of an
    /// earlier release in the protocol's tests.
    pub(crate) fn speaking(
        cluster: &ClusterKey,
        agent: &str,
        nonce: Nonce,
        max_version: u8,
    ) -> Self {
        AgentHandshake {
            cluster: cluster.clone(),
            max_version,
            version: max_version,
            agent: agent.into(),
            nonce,
            peer_nonce: None,
            sealer: Sealer::new(derive(HS_A2M, cluster, None), max_version),
            opener: Opener::new(derive(HS_M2A, cluster, None), max_version, true),
        }
    }

    /// Takes the monitor's Hello; returns the Challenge frame to send. A Hello of any
    /// version from [`MIN_VERSION`] is read (its layout is frozen, also for versions
    /// after this side's) and the session speaks the lower of its version and this
    /// side's, from the Challenge on.
    pub fn on_hello(&mut self, frame: &RawFrame) -> Result<Vec<u8>, FrameError> {
        let hello_version = frame.header.version;
        if hello_version < MIN_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: hello_version,
                min: MIN_VERSION,
                max: self.max_version,
            });
        }
        self.version = hello_version.min(self.max_version);
        self.opener.version = hello_version;
        let msg = self.opener.open(frame)?;
        self.opener.version = self.version;
        self.sealer.version = self.version;
        let Message::Hello(hello) = msg else {
            return Err(unexpected(&msg, "from a monitor before its Hello"));
        };
        if hello.agent != self.agent {
            return Err(FrameError::WrongPeer {
                expected: self.agent.clone(),
                found: hello.agent,
            });
        }
        let challenge = self.sealer.seal(
            &Message::Challenge(Challenge {
                echo: hello.nonce,
                nonce: self.nonce,
                agent: self.agent.clone(),
            }),
            0,
            0,
        )?;
        self.peer_nonce = Some((hello.nonce, hello.monitor, hello.term));
        Ok(challenge)
    }

    /// The monitor's name and term from its Hello (after [`AgentHandshake::on_hello`]):
    /// the agent decides from the term whether to go on.
    pub fn peer(&self) -> Option<(&str, Term)> {
        self.peer_nonce.as_ref().map(|(_, m, t)| (m.as_str(), *t))
    }

    /// An Error frame under this side's handshake key, telling the monitor why the
    /// handshake failed; a monitor with another key sees it fail as `WrongKey` too. It is
    /// always sealed as the first frame this side sends (sequence 0), also after
    /// [`AgentHandshake::on_hello`] sealed a Challenge that is then never sent (a
    /// refused term): the monitor reads the reason, not a reordered frame.
    pub fn reject(&mut self, reason: &str) -> Option<Vec<u8>> {
        let msg = Message::Error(super::message::ErrorMessage {
            message: reason.into(),
        });
        // In the Hello's version where this side speaks it: an older monitor reads it.
        Sealer::new(derive(HS_A2M, &self.cluster, None), self.version)
            .seal(&msg, 0, 0)
            .ok()
    }

    /// Takes the monitor's Auth; returns the session and the Welcome frame to send.
    pub fn on_auth(
        mut self,
        frame: &RawFrame,
        agent_version: &str,
    ) -> Result<(Session, Vec<u8>), FrameError> {
        let msg = self.opener.open(frame)?;
        let Message::Auth(auth) = msg else {
            return Err(unexpected(&msg, "from a monitor before its Auth"));
        };
        let Some((monitor_nonce, monitor, term)) = self.peer_nonce.take() else {
            return Err(FrameError::Unexpected {
                msg_type: MessageType::Auth,
                state: "before a Hello",
            });
        };
        if !ct_eq(&auth.echo, &self.nonce) {
            return Err(FrameError::StaleNonce);
        }
        let nonces = Some((&monitor_nonce, &self.nonce, term));
        self.sealer.key = derive(S_A2M, &self.cluster, nonces);
        self.opener.rekey(derive(S_M2A, &self.cluster, nonces));
        let welcome = self.sealer.seal(
            &Message::Welcome(Welcome {
                agent_version: agent_version.into(),
            }),
            0,
            0,
        )?;
        Ok((
            Session {
                sealer: self.sealer,
                opener: self.opener,
                peer: monitor,
                term,
                version: self.version,
            },
            welcome,
        ))
    }
}

#[cfg(test)]
#[path = "negotiation_tests.rs"]
mod negotiation_tests;
