//! Frames over an async byte stream, every wait bounded. Shared by the agent's server
//! and the monitor's agent links; the handshake order is theirs.

use super::frame::{FrameBuffer, FrameError, RawFrame};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("peer closed the connection")]
    Closed,
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads the next frame: `Err(Timeout)` when none completes within `timeout`,
/// `Err(Closed)` at a clean end of stream, `Err(Frame(Truncated))` when the stream ends
/// inside a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut FrameBuffer,
    timeout: Duration,
) -> Result<RawFrame, ConnError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = buf.next_frame()? {
            return Ok(frame);
        }
        let n = tokio::time::timeout_at(deadline, reader.read(&mut chunk))
            .await
            .map_err(|_elapsed| ConnError::Timeout(timeout))?
            .map_err(|source| ConnError::Io {
                op: "reading from the peer",
                source,
            })?;
        if n == 0 {
            buf.finish()?;
            return Err(ConnError::Closed);
        }
        buf.push(&chunk[..n]);
    }
}

/// Writes whole frames, bounded by `timeout`.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ConnError> {
    tokio::time::timeout(timeout, writer.write_all(bytes))
        .await
        .map_err(|_elapsed| ConnError::Timeout(timeout))?
        .map_err(|source| ConnError::Io {
            op: "writing to the peer",
            source,
        })
}
