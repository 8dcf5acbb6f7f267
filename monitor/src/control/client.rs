//! The client side of the control socket, as `mmm-control` uses it. Blocking std IO:
//! one request, one answer, every wait bounded.

use mmm_common::config::ControlAddr;
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
/// connect and every read; a `move_role` waits for the switchover, so give it room.
pub fn request(addr: &ControlAddr, line: &str, timeout: Duration) -> Result<String, ClientError> {
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
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    String::from_utf8(answer).map_err(|_not_utf8| ClientError::NotText { addr: name.clone() })
}
