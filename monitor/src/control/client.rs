//! The client side of the control socket, as `mmm-control` uses it. Blocking std IO:
//! one request, one answer, every wait bounded.

use crate::control::auth::{self, Part};
use mmm_common::config::{ClusterKey, ControlAddr};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the monitor at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the monitor at {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor at {addr} sent an answer that is not UTF-8")]
    NotText { addr: String },
    #[error("the monitor at {addr} requires the cluster key: run mmm-control with --config")]
    NeedKey { addr: String },
    #[error("the answer from {addr} does not carry the cluster key's MAC: not trusted")]
    Forged { addr: String },
    #[error("the monitor at {addr} sent {got:?} where a challenge was expected")]
    Protocol { addr: String, got: String },
}

/// Reads one line byte by byte (the answer that follows must stay unread).
fn read_line(s: &mut Box<dyn Stream>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 4096 {
        if s.read(&mut b)? == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

trait Stream: Read + Write {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()>;
}
impl Stream for TcpStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}
impl Stream for UnixStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Sends one command line and returns the monitor's whole answer. `timeout` bounds the
/// connect and every read; a `move_role` waits for the switchover, so give it room. Over
/// TCP the command carries the cluster key's MAC (`key`) and so must the answer.
pub fn request(
    addr: &ControlAddr,
    line: &str,
    timeout: Duration,
    key: Option<&ClusterKey>,
) -> Result<String, ClientError> {
    let name = addr.to_string();
    let connect = |source| ClientError::Connect {
        addr: name.clone(),
        source,
    };
    let mut stream: Box<dyn Stream> = match addr {
        ControlAddr::Tcp(a) => Box::new(TcpStream::connect_timeout(a, timeout).map_err(connect)?),
        ControlAddr::Unix(p) => Box::new(UnixStream::connect(p).map_err(connect)?),
    };
    let io = |source| ClientError::Io {
        addr: name.clone(),
        source,
    };
    stream.set_timeouts(timeout).map_err(io)?;
    let Some(key) = addr.keyed().then_some(key) else {
        stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(io)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(io)?;
        return String::from_utf8(answer).map_err(|_not_utf8| ClientError::NotText { addr: name });
    };
    let challenge = read_line(&mut stream).map_err(io)?;
    let Some(nonce) = challenge.strip_prefix(auth::CHALLENGE).map(str::trim) else {
        return Err(ClientError::Protocol {
            addr: name.clone(),
            got: challenge,
        });
    };
    let Some(key) = key else {
        return Err(ClientError::NeedKey { addr: name.clone() });
    };
    let mac = auth::mac(key, nonce, Part::Command, line);
    stream
        .write_all(format!("{}{mac}\n{line}\n", auth::AUTH).as_bytes())
        .map_err(io)?;
    let first = read_line(&mut stream).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let Some(claimed) = first.strip_prefix(auth::ANSWER_MAC) else {
        // The monitor refused before answering (authentication failed): say so as it did.
        let mut text = first;
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&answer));
        return Ok(text);
    };
    let answer = String::from_utf8(answer)
        .map_err(|_not_utf8| ClientError::NotText { addr: name.clone() })?;
    if !auth::verify(key, nonce, Part::Answer, &answer, claimed.trim()) {
        return Err(ClientError::Forged { addr: name });
    }
    Ok(answer)
}
