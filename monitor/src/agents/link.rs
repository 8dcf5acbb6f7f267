//! One authenticated connection to one agent: handshake, then requests matched to
//! their responses by request id, every wait bounded. Unsolicited frames (probe events)
//! that arrive while a response is awaited are kept for [`AgentLink::take_events`].

use mmm_common::config::ClusterKey;
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting to the agent at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the agent at {addr}: no answer within {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("agent {agent}")]
    Conn {
        agent: String,
        #[source]
        source: ConnError,
    },
    #[error("agent {agent} reports: {message}")]
    Remote { agent: String, message: String },
    #[error("agent {agent} answered {got:?} to a {sent:?}")]
    Mismatch {
        agent: String,
        sent: MessageType,
        got: MessageType,
    },
    #[error("agent {agent}: reading random bytes for the nonce: {reason}")]
    Nonce { agent: String, reason: String },
}

pub struct AgentLink {
    agent: String,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: FrameBuffer,
    sealer: Sealer,
    opener: Opener,
    next_id: u32,
    events: VecDeque<Message>,
    out: Vec<u8>,
}

impl AgentLink {
    /// Connects and authenticates; every step bounded by `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        key: &ClusterKey,
        monitor: &str,
        agent: &str,
        timeout: Duration,
    ) -> Result<AgentLink, LinkError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_elapsed) => return Err(LinkError::ConnectTimeout { addr, timeout }),
            Ok(Err(source)) => return Err(LinkError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let conn = |source: ConnError| LinkError::Conn {
            agent: agent.into(),
            source,
        };
        let nonce = fresh_nonce().map_err(|e| LinkError::Nonce {
            agent: agent.into(),
            reason: e.to_string(),
        })?;
        let (hs, hello) =
            MonitorHandshake::start(key, monitor, agent, nonce).map_err(|e| conn(e.into()))?;
        write_frames(&mut writer, &hello, timeout)
            .await
            .map_err(conn)?;
        let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        let challenge = read_frame(&mut reader, &mut buf, timeout)
            .await
            .map_err(conn)?;
        let (session, auth) = hs.on_challenge(&challenge).map_err(|e| conn(e.into()))?;
        write_frames(&mut writer, &auth, timeout)
            .await
            .map_err(conn)?;
        let Session {
            sealer, mut opener, ..
        } = session;
        let welcome = read_frame(&mut reader, &mut buf, timeout)
            .await
            .map_err(conn)?;
        match opener.open(&welcome).map_err(|e| conn(e.into()))? {
            Message::Welcome(_) => {}
            Message::Error(e) => {
                return Err(LinkError::Remote {
                    agent: agent.into(),
                    message: e.message,
                })
            }
            other => {
                return Err(LinkError::Mismatch {
                    agent: agent.into(),
                    sent: MessageType::Auth,
                    got: other.msg_type(),
                })
            }
        }
        Ok(AgentLink {
            agent: agent.into(),
            reader,
            writer,
            buf,
            sealer,
            opener,
            next_id: 1,
            events: VecDeque::new(),
            out: Vec::with_capacity(256),
        })
    }

    fn conn(&self, source: ConnError) -> LinkError {
        LinkError::Conn {
            agent: self.agent.clone(),
            source,
        }
    }

    /// Sends `msg` and waits at most `timeout` for the response to it.
    pub async fn request(
        &mut self,
        msg: &Message,
        timeout: Duration,
    ) -> Result<Message, LinkError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.out.clear();
        self.sealer
            .seal_into(msg, id, 0, &mut self.out)
            .map_err(|e| LinkError::Conn {
                agent: self.agent.clone(),
                source: e.into(),
            })?;
        write_frames(&mut self.writer, &self.out, timeout)
            .await
            .map_err(|e| self.conn(e))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = read_frame(&mut self.reader, &mut self.buf, left)
                .await
                .map_err(|e| self.conn(e))?;
            let reply = self.opener.open(&frame).map_err(|e| self.conn(e.into()))?;
            if let Message::Error(e) = &reply {
                return Err(LinkError::Remote {
                    agent: self.agent.clone(),
                    message: e.message.clone(),
                });
            }
            if frame.header.flags & FLAG_RESPONSE != 0 && frame.header.request_id == id {
                return Ok(reply);
            }
            self.events.push_back(reply);
        }
    }

    /// Unsolicited messages received so far (probe events).
    pub fn take_events(&mut self) -> Vec<Message> {
        self.events.drain(..).collect()
    }

    fn mismatch(&self, sent: MessageType, got: &Message) -> LinkError {
        LinkError::Mismatch {
            agent: self.agent.clone(),
            sent,
            got: got.msg_type(),
        }
    }

    pub async fn heartbeat(
        &mut self,
        epoch: u32,
        timeout: Duration,
    ) -> Result<AgentHeartbeat, LinkError> {
        match self
            .request(&Message::Heartbeat(Heartbeat { epoch }), timeout)
            .await?
        {
            Message::AgentHeartbeat(hb) => Ok(hb),
            other => Err(self.mismatch(MessageType::Heartbeat, &other)),
        }
    }

    pub async fn apply(
        &mut self,
        desired: DesiredState,
        timeout: Duration,
    ) -> Result<Applied, LinkError> {
        match self
            .request(&Message::DesiredState(desired), timeout)
            .await?
        {
            Message::Applied(a) => Ok(a),
            other => Err(self.mismatch(MessageType::DesiredState, &other)),
        }
    }

    pub async fn status(&mut self, timeout: Duration) -> Result<StatusReport, LinkError> {
        match self.request(&Message::StatusQuery, timeout).await? {
            Message::StatusReport(s) => Ok(s),
            other => Err(self.mismatch(MessageType::StatusQuery, &other)),
        }
    }

    /// Runs an action with `deadline` on the agent; waits a little longer than that.
    pub async fn action(
        &mut self,
        action: Action,
        deadline: Duration,
    ) -> Result<ActionResult, LinkError> {
        let req = ActionRequest {
            action,
            deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
        };
        match self
            .request(&Message::Action(req), deadline + Duration::from_secs(2))
            .await?
        {
            Message::ActionResult(r) => Ok(r),
            other => Err(self.mismatch(MessageType::Action, &other)),
        }
    }
}
