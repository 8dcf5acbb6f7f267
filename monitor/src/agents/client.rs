//! One authenticated connection to one agent: handshake, then requests matched to
//! their responses by request id, every wait bounded. Unsolicited frames (probe events)
//! that arrive while a response is awaited are kept for [`AgentLink::take_events`].

use mmm_common::config::ClusterKey;
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
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

/// The monitor's one client of the agent protocol: the daemon's links run their heartbeat
/// loop on it ([`AgentLink::queue`], [`AgentLink::flush`], [`AgentLink::recv`]), tests
/// and benches use its request/response calls. Both go through the same handshake and
/// framing.
pub struct AgentLink {
    agent: String,
    agent_version: String,
    /// The protocol version of the session.
    protocol: u8,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: FrameBuffer,
    /// Read buffer on the heap: a read future holding 4 KiB inline is copied whenever
    /// the future moves, hundreds of times a second per link.
    chunk: Vec<u8>,
    sealer: Sealer,
    opener: Opener,
    next_id: u32,
    events: VecDeque<Message>,
    out: Vec<u8>,
}

/// How one handshake failed: the connection closed before any answer to the Hello (an
/// agent of the previous release drops a Hello of a later version), or otherwise.
enum Attempt {
    HelloDropped(LinkError),
    Failed(LinkError),
}

impl Attempt {
    fn into_error(self) -> LinkError {
        match self {
            Attempt::HelloDropped(e) | Attempt::Failed(e) => e,
        }
    }
}

impl From<LinkError> for Attempt {
    fn from(e: LinkError) -> Self {
        Attempt::Failed(e)
    }
}

/// The agent closed or reset the connection without a word: how an agent of the previous
/// release drops a Hello of a version it does not speak. (A refusal it means, such as
/// a term, comes as an Error frame.)
fn hello_dropped(e: &ConnError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match e {
        ConnError::Closed => true,
        ConnError::Io { source, .. } => {
            matches!(
                source.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe
            )
        }
        _ => false,
    }
}

/// One message from the agent, with the request it answers (0: unsolicited).
#[derive(Debug)]
pub struct Received {
    pub request_id: u32,
    pub response: bool,
    pub message: Message,
}

impl AgentLink {
    /// Connects and authenticates; every step bounded by `timeout`. The connection closes
    /// abortively when dropped (SO_LINGER 0): a dropped link must not deliver queued
    /// heartbeats later, which could renew a lease the monitor counts as running out.
    pub async fn connect(
        addr: SocketAddr,
        key: &ClusterKey,
        monitor: &str,
        agent: &str,
        timeout: Duration,
    ) -> Result<AgentLink, LinkError> {
        AgentLink::connect_in_term(addr, key, monitor, agent, Term::NONE, timeout).await
    }

    /// As [`AgentLink::connect`], for a fleet's leader: every frame of the session is
    /// authenticated under `term`, and an agent that has seen a later term refuses it, as
    /// it refuses a term of an epoch that etcd does not show.
    ///
    /// The Hello offers this release's protocol version. An agent of the previous release
    /// drops a Hello of any version but its own, closing the connection before any
    /// answer: then the handshake is tried once more at once, offering the previous
    /// version (one more round trip per connect while such an agent runs).
    pub async fn connect_in_term(
        addr: SocketAddr,
        key: &ClusterKey,
        monitor: &str,
        agent: &str,
        term: Term,
        timeout: Duration,
    ) -> Result<AgentLink, LinkError> {
        let newest = frame::VERSION;
        match Self::handshake(addr, key, monitor, agent, term, timeout, newest).await {
            Err(Attempt::HelloDropped(e)) if newest > frame::MIN_VERSION => {
                tracing::debug!(error = %crate::error_chain(&e), "the agent dropped a version {newest} Hello: offering {}", newest - 1);
                Self::handshake(addr, key, monitor, agent, term, timeout, newest - 1)
                    .await
                    .map_err(Attempt::into_error)
            }
            r => r.map_err(Attempt::into_error),
        }
    }

    async fn handshake(
        addr: SocketAddr,
        key: &ClusterKey,
        monitor: &str,
        agent: &str,
        term: Term,
        timeout: Duration,
        version: u8,
    ) -> Result<AgentLink, Attempt> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_elapsed) => return Err(LinkError::ConnectTimeout { addr, timeout }.into()),
            Ok(Err(source)) => return Err(LinkError::Connect { addr, source }.into()),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        // (The deprecation is about a non-zero linger blocking on drop; zero never blocks.)
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        let (mut reader, mut writer) = stream.into_split();
        let conn = |source: ConnError| LinkError::Conn {
            agent: agent.into(),
            source,
        };
        let nonce = fresh_nonce().map_err(|e| LinkError::Nonce {
            agent: agent.into(),
            reason: e.to_string(),
        })?;
        let (hs, hello) = MonitorHandshake::start_in(key, monitor, agent, term, nonce, version)
            .map_err(|e| conn(e.into()))?;
        let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        let sent = write_frames(&mut writer, &hello, timeout).await;
        let challenge = match sent {
            Ok(()) => read_frame(&mut reader, &mut buf, timeout).await,
            Err(e) => Err(e),
        };
        let challenge = match challenge {
            Ok(c) => c,
            Err(e) if hello_dropped(&e) => return Err(Attempt::HelloDropped(conn(e))),
            Err(e) => return Err(conn(e).into()),
        };
        let (session, auth) = hs.on_challenge(&challenge).map_err(|e| conn(e.into()))?;
        write_frames(&mut writer, &auth, timeout)
            .await
            .map_err(conn)?;
        let Session {
            sealer,
            mut opener,
            version: protocol,
            ..
        } = session;
        let welcome = read_frame(&mut reader, &mut buf, timeout)
            .await
            .map_err(conn)?;
        let agent_version = match opener.open(&welcome).map_err(|e| conn(e.into()))? {
            Message::Welcome(w) => w.agent_version,
            Message::Error(e) => {
                return Err(LinkError::Remote {
                    agent: agent.into(),
                    message: e.message,
                }
                .into())
            }
            other => {
                return Err(LinkError::Mismatch {
                    agent: agent.into(),
                    sent: MessageType::Auth,
                    got: other.msg_type(),
                }
                .into())
            }
        };
        Ok(AgentLink {
            agent: agent.into(),
            agent_version,
            protocol,
            reader,
            writer,
            buf,
            chunk: vec![0; 4096],
            sealer,
            opener,
            next_id: 1,
            events: VecDeque::new(),
            out: Vec::with_capacity(256),
        })
    }

    /// The version the agent announced in its Welcome.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// The protocol version the agent and this monitor speak in this session.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// A fresh request id (never 0, which marks unsolicited frames).
    pub fn next_request_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Seals `msg` into the outgoing buffer; [`AgentLink::flush`] sends it.
    pub fn queue(&mut self, msg: &Message, request_id: u32) -> Result<(), LinkError> {
        self.sealer
            .seal_into(msg, request_id, 0, &mut self.out)
            .map_err(|e| LinkError::Conn {
                agent: self.agent.clone(),
                source: e.into(),
            })
    }

    /// Whether queued frames wait for [`AgentLink::flush`].
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Sends what is queued. A few hundred bytes nearly always fit the socket buffer at
    /// once; only when they do not is the write bounded by `timeout` (a timer per write
    /// would cost more than the write itself at a heartbeat every 100 ms).
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), LinkError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sent = match self.writer.try_write(&self.out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(source) => {
                return Err(self.conn(ConnError::Io {
                    op: "writing to the peer",
                    source,
                }))
            }
        };
        if sent < self.out.len() {
            let rest = &self.out[sent..];
            if let Err(e) = write_frames(&mut self.writer, rest, timeout).await {
                return Err(self.conn(e));
            }
        }
        self.out.clear();
        Ok(())
    }

    /// The next message from the agent, waiting as long as it takes: the caller bounds
    /// the wait (the daemon counts silence from its heartbeats). Cancel-safe: dropping the
    /// future loses nothing, so it can sit in a `select!` with timers and commands.
    pub async fn recv(&mut self) -> Result<Received, LinkError> {
        loop {
            let frame = self.buf.next_frame().map_err(|e| LinkError::Conn {
                agent: self.agent.clone(),
                source: e.into(),
            })?;
            if let Some(frame) = frame {
                let opened = self
                    .opener
                    .open_part(&frame)
                    .map_err(|e| self.conn(e.into()));
                // A message in several frames comes out with its last.
                let Some(message) = opened? else {
                    continue;
                };
                return Ok(Received {
                    request_id: frame.header.request_id,
                    response: frame.header.flags & FLAG_RESPONSE != 0,
                    message,
                });
            }
            let n = match self.reader.read(&mut self.chunk).await {
                Ok(n) => n,
                Err(source) => {
                    return Err(self.conn(ConnError::Io {
                        op: "reading from the peer",
                        source,
                    }))
                }
            };
            if n == 0 {
                let cut = self.buf.finish().map_err(ConnError::from).err();
                return Err(self.conn(cut.unwrap_or(ConnError::Closed)));
            }
            self.buf.push(&self.chunk[..n]);
        }
    }

    fn conn(&self, source: ConnError) -> LinkError {
        LinkError::Conn {
            agent: self.agent.clone(),
            source,
        }
    }

    /// Sends `msg` and waits at most `timeout` for the response to it; unsolicited
    /// messages meanwhile are kept for [`AgentLink::take_events`].
    pub async fn request(
        &mut self,
        msg: &Message,
        timeout: Duration,
    ) -> Result<Message, LinkError> {
        let id = self.next_request_id();
        self.queue(msg, id)?;
        self.flush(timeout).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(r) => r?,
                Err(_elapsed) => return Err(self.conn(ConnError::Timeout(timeout))),
            };
            if let Message::Error(e) = &got.message {
                return Err(LinkError::Remote {
                    agent: self.agent.clone(),
                    message: e.message.clone(),
                });
            }
            if got.response && got.request_id == id {
                return Ok(got.message);
            }
            self.events.push_back(got.message);
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

    /// A heartbeat, and the request id its answer came back under (a witness echoes it
    /// in its consent: crate::witness).
    pub async fn heartbeat_with_id(
        &mut self,
        epoch: u32,
        timeout: Duration,
    ) -> Result<(u32, AgentHeartbeat), LinkError> {
        let id = self.next_id;
        let hb = self.heartbeat(epoch, timeout).await?;
        Ok((id.max(1), hb))
    }

    /// Sends `msg`, which has no answer.
    pub async fn send(&mut self, msg: &Message, timeout: Duration) -> Result<(), LinkError> {
        let id = self.next_request_id();
        self.queue(msg, id)?;
        self.flush(timeout).await
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
