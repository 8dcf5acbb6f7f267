//! The frame: a fixed 16-byte header, the payload, and a 16-byte MAC.
//!
//! ```text
//!  0      2    3    4     5     6       8            12       16        16+len
//!  | "MM" | ver| typ| flg | rsv | len   | request_id | seq    | payload | mac[16] |
//! ```
//! All integers big-endian. `seq` counts frames per direction from 0; it is carried (not
//! only implied) so that a frame with a valid MAC but an old or future number can be told
//! apart as replayed or reordered rather than merely forged.

use super::message::MessageType;

pub const MAGIC: [u8; 2] = *b"MM";
/// 2: StatusReport carries `gtid_unreadable` (an unreadable GTID set is not an empty one).
/// 3: ActionOutcome::NotReplica (the monitor no longer reads the agent's error text).
/// 4: every session frame is authenticated under the fleet's term.
/// 5: DesiredState carries the writer VIPs to park.
/// 6: the Hello's term carries its epoch (crate::epoch), bound into the session keys too.
/// 7: witness sessions and consents (the fleet's failsafe).
/// 8: a message larger than one frame goes in several ([`FLAG_CONTINUED`]); GTID sets are
///    carried up to [`MAX_MESSAGE`].
pub const VERSION: u8 = 8;
pub const HEADER_LEN: usize = 16;
pub const MAC_LEN: usize = 16;
/// The one bound on a frame's payload, for senders and receivers alike: the most the
/// header's 16-bit length can say. A hostile length costs at most this much buffer.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// The bound on one message, carried in as many frames as it needs. The largest message
/// is a status report (or a re-point's position), dominated by the GTID set: 200 MariaDB
/// domains take about 9 KiB, a MySQL set of 600 server UUIDs with a few intervals each
/// about 40 KiB, and a server that went through thousands of clones and failovers more
/// than one frame holds. Such a set is carried, not refused: 4 MiB is some 50,000 UUIDs.
/// Sealing refuses a larger message naming it; the receiver, agreeing on the bound,
/// never buffers more for one message.
pub const MAX_MESSAGE: usize = 4 << 20;
/// The bound receivers pass to [`FrameBuffer::new`]; the same as [`MAX_PAYLOAD`].
pub const DEFAULT_MAX_PAYLOAD: usize = MAX_PAYLOAD;

/// Header flag: the frame answers the request with the same request id.
pub const FLAG_RESPONSE: u8 = 0x01;
/// Header flag: the message goes on in the next frame, which has the same type and request
/// id (and is the next in sequence); the receiver joins the payloads and decodes the last.
pub const FLAG_CONTINUED: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_RESPONSE | FLAG_CONTINUED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: MessageType,
    pub flags: u8,
    pub len: u16,
    pub request_id: u32,
    pub seq: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.msg_type as u8;
        b[4] = self.flags;
        b[5] = 0;
        b[6..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..12].copy_from_slice(&self.request_id.to_be_bytes());
        b[12..16].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// Checks everything a header can get wrong on its own, before any payload is read,
    /// so a bad stream is refused at its first 16 bytes.
    pub fn decode(b: &[u8; HEADER_LEN], max_payload: usize) -> Result<Header, FrameError> {
        if b[0..2] != MAGIC {
            return Err(FrameError::BadMagic {
                found: [b[0], b[1]],
            });
        }
        if b[2] != VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: b[2],
                supported: VERSION,
            });
        }
        let msg_type = MessageType::from_u8(b[3]).ok_or(FrameError::UnknownType { found: b[3] })?;
        if b[4] & !KNOWN_FLAGS != 0 || b[5] != 0 {
            return Err(FrameError::ReservedBits {
                flags: b[4],
                reserved: b[5],
            });
        }
        let len = u16::from_be_bytes([b[6], b[7]]);
        if usize::from(len) > max_payload {
            return Err(FrameError::Oversized {
                len: len.into(),
                max: max_payload,
            });
        }
        Ok(Header {
            msg_type,
            flags: b[4],
            len,
            request_id: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            seq: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    pub fn frame_len(&self) -> usize {
        HEADER_LEN + usize::from(self.len) + MAC_LEN
    }
}

/// Everything that makes a frame unacceptable. Each is distinct so that both sides can
/// log exactly why a connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {found:02x?}: not an mmm peer")]
    BadMagic { found: [u8; 2] },
    #[error("unsupported protocol version {found} (this side speaks {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("unknown message type 0x{found:02x}")]
    UnknownType { found: u8 },
    #[error("reserved header bits set (flags 0x{flags:02x}, reserved 0x{reserved:02x})")]
    ReservedBits { flags: u8, reserved: u8 },
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    Oversized { len: usize, max: usize },
    #[error("stream ended inside a frame: {have} of {needed} bytes received")]
    Truncated { needed: usize, have: usize },
    #[error("handshake MAC does not verify: the peer uses a different cluster key")]
    WrongKey,
    #[error("frame MAC does not verify: forged or corrupted frame (seq {seq})")]
    Forged { seq: u32 },
    #[error("replayed frame: seq {seq} already seen, expected {expected}")]
    Replayed { seq: u32, expected: u32 },
    #[error("reordered frame: seq {seq} arrived while {expected} was expected")]
    Reordered { seq: u32, expected: u32 },
    #[error("connected to the agent of {found:?}, expected {expected:?}")]
    WrongPeer { expected: String, found: String },
    #[error("the peer refused the handshake: {message}")]
    PeerRejected { message: String },
    #[error("stale handshake: the peer echoed a nonce this side never sent")]
    StaleNonce,
    #[error("sequence numbers exhausted: the connection must be re-established")]
    SequenceExhausted,
    #[error("{msg_type:?} is not expected {state}")]
    Unexpected {
        msg_type: MessageType,
        state: &'static str,
    },
    #[error("malformed {msg_type:?} payload: {reason}")]
    Malformed {
        msg_type: MessageType,
        reason: String,
    },
    #[error(
        "cannot send {msg_type:?}: its payload of {len} bytes exceeds the frame limit of {max}"
    )]
    TooLarge {
        msg_type: MessageType,
        len: usize,
        max: usize,
    },
    #[error("cannot encode {msg_type:?}: {reason}")]
    Encode {
        msg_type: MessageType,
        reason: String,
    },
}

/// Splits a byte stream into frames. Sans-IO: the caller pushes what it read and pops
/// complete frames; bytes of a partial frame stay buffered.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    max_payload: usize,
}

/// A frame whose header is valid and whose bytes are all present; not yet authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub header: Header,
    /// Header, payload and MAC, as received.
    pub bytes: Vec<u8>,
}

impl RawFrame {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - MAC_LEN]
    }
    pub fn authenticated_part(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - MAC_LEN]
    }
    pub fn mac(&self) -> &[u8] {
        &self.bytes[self.bytes.len() - MAC_LEN..]
    }
}

impl FrameBuffer {
    pub fn new(max_payload: usize) -> FrameBuffer {
        FrameBuffer {
            buf: Vec::with_capacity(HEADER_LEN + 256),
            start: 0,
            max_payload: max_payload.min(MAX_PAYLOAD),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or the reason the
    /// stream is unacceptable (the connection must then be dropped).
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&avail[..HEADER_LEN]);
        let header = Header::decode(&head, self.max_payload)?;
        let n = header.frame_len();
        if avail.len() < n {
            return Ok(None);
        }
        let bytes = avail[..n].to_vec();
        self.start += n;
        if self.start > 4096 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(RawFrame { header, bytes }))
    }

    /// Called at end of stream: an error when it cut a frame short.
    pub fn finish(&self) -> Result<(), FrameError> {
        let have = self.buf.len() - self.start;
        if have == 0 {
            return Ok(());
        }
        let needed = if have >= HEADER_LEN {
            HEADER_LEN
                + usize::from(u16::from_be_bytes([
                    self.buf[self.start + 6],
                    self.buf[self.start + 7],
                ]))
                + MAC_LEN
        } else {
            HEADER_LEN
        };
        Err(FrameError::Truncated { needed, have })
    }

    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}
