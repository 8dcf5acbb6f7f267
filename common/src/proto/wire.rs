//! Byte-level payload writer and reader. The reader never panics: every shortfall is a
//! `Malformed` error naming the field.

use super::frame::FrameError;
use super::message::MessageType;
use std::net::Ipv4Addr;

pub(crate) struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
    pub msg_type: MessageType,
}

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
    pub fn ipv4(&mut self, v: Ipv4Addr) {
        self.bytes(&v.octets());
    }
    fn too_long(&self, field: &str, len: usize, max: usize) -> FrameError {
        FrameError::Encode {
            msg_type: self.msg_type,
            reason: format!("{field} is {len} bytes, at most {max} fit"),
        }
    }
    /// A string of at most 255 bytes (names).
    pub fn str8(&mut self, field: &str, v: &str) -> Result<(), FrameError> {
        let len = u8::try_from(v.len()).map_err(|_overflow| self.too_long(field, v.len(), 255))?;
        self.u8(len);
        self.bytes(v.as_bytes());
        Ok(())
    }
    /// A string of at most 65535 bytes (messages, GTID sets).
    pub fn str16(&mut self, field: &str, v: &str) -> Result<(), FrameError> {
        let len =
            u16::try_from(v.len()).map_err(|_overflow| self.too_long(field, v.len(), 65535))?;
        self.u16(len);
        self.bytes(v.as_bytes());
        Ok(())
    }
    /// A string of at most [`MAX_MESSAGE`](super::frame::MAX_MESSAGE) bytes (GTID sets,
    /// which may need several frames).
    pub fn str32(&mut self, field: &str, v: &str) -> Result<(), FrameError> {
        let max = super::frame::MAX_MESSAGE;
        let len = u32::try_from(v.len())
            .ok()
            .filter(|_| v.len() <= max)
            .ok_or_else(|| self.too_long(field, v.len(), max))?;
        self.u32(len);
        self.bytes(v.as_bytes());
        Ok(())
    }
    /// A list length of at most 255 items.
    pub fn count8(&mut self, field: &str, n: usize) -> Result<(), FrameError> {
        let n = u8::try_from(n).map_err(|_overflow| FrameError::Encode {
            msg_type: self.msg_type,
            reason: format!("{field} has {n} items, at most 255 fit"),
        })?;
        self.u8(n);
        Ok(())
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub msg_type: MessageType,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], msg_type: MessageType) -> Self {
        Reader { buf, msg_type }
    }
    pub fn malformed(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            msg_type: self.msg_type,
            reason: reason.into(),
        }
    }
    pub fn take(&mut self, field: &str, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(self.malformed(format!("{field} needs {n} bytes, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(field, N)?);
        Ok(a)
    }
    pub fn u8(&mut self, field: &str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &str) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &str) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub fn bool(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.malformed(format!("{field} is {v}, not a boolean"))),
        }
    }
    pub fn ipv4(&mut self, field: &str) -> Result<Ipv4Addr, FrameError> {
        Ok(Ipv4Addr::from(self.array::<4>(field)?))
    }
    fn utf8(&self, field: &str, b: &[u8]) -> Result<String, FrameError> {
        String::from_utf8(b.to_vec())
            .map_err(|e| self.malformed(format!("{field} is not UTF-8: {e}")))
    }
    /// A count byte, then that many addresses, all named `field`.
    pub fn ipv4_list(&mut self, field: &str) -> Result<Vec<Ipv4Addr>, FrameError> {
        let n = self.u8(field)?;
        (0..n).map(|_| self.ipv4(field)).collect()
    }
    pub fn str8(&mut self, field: &str) -> Result<String, FrameError> {
        let n = self.u8(field)?;
        let b = self.take(field, n.into())?;
        self.utf8(field, b)
    }
    pub fn str16(&mut self, field: &str) -> Result<String, FrameError> {
        let n = self.u16(field)?;
        let b = self.take(field, n.into())?;
        self.utf8(field, b)
    }
    pub fn str32(&mut self, field: &str) -> Result<String, FrameError> {
        let n = self.u32(field)?;
        let n = usize::try_from(n).map_err(|e| self.malformed(format!("{field} length: {e}")))?;
        let b = self.take(field, n)?;
        self.utf8(field, b)
    }
    pub fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} trailing bytes", self.buf.len())))
        }
    }
}
