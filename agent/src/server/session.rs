//! Monitor sessions: the accept loop, each connection's handshake and term admission,
//! its writer task and the reader that decodes frames into messages.

use crate::authority::Opened;
use crate::reconcile::error_chain;
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::{
    fresh_nonce, AgentHandshake, ErrorMessage, FrameBuffer, Message, Session, DEFAULT_MAX_PAYLOAD,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::{Agent, ConnectionEnded, HANDSHAKE_TIMEOUT, VERSION};

/// Logs a repeated refusal at most once a second, with how many were refused meanwhile.
#[derive(Default)]
struct Throttle {
    last: Option<std::time::Instant>,
    count: u64,
}

impl Throttle {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            log(self.count);
            self.last = Some(std::time::Instant::now());
            self.count = 0;
        }
    }
}

impl Agent {
    /// Accepts monitor connections: only from `agent.monitor_ips` when set, and a bounded
    /// number of handshakes at once, with a budget of their own for addresses that
    /// authenticated before (crate::admission), so a flood of idle connections can neither
    /// exhaust descriptors nor keep a monitor out long enough to fence the writer.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let admission = Arc::new(crate::admission::Admission::new(Some(
            self.config
                .agent
                .state_dir
                .join(format!("{}.monitors", self.host.name)),
        )));
        let allowed = self.config.agent.monitor_ips.clone();
        let mut refusals = Throttle::default();
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if !allowed.is_empty() && !allowed.contains(&peer.ip()) {
                        refusals.warn(|n| tracing::warn!(%peer, refused = n, "connection refused: not one of agent.monitor_ips"));
                        continue;
                    }
                    let permit = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            refusals.warn(
                                |n| tracing::warn!(%peer, refused = n, "connection refused: {why}"),
                            );
                            continue;
                        }
                    };
                    let agent = self.clone();
                    tokio::spawn(
                        async move {
                            match agent.connection(stream, permit).await {
                                Ok(ConnectionEnded::Disconnected) => tracing::info!("monitor disconnected"),
                                Ok(ConnectionEnded::Refused) => {}
                                Err(e) => tracing::warn!(error = %error_chain(&e), "monitor connection dropped"),
                            }
                        }
                        .instrument(tracing::info_span!("monitor", %peer)),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "accepting a monitor connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        handshake: crate::admission::Slot,
    ) -> Result<ConnectionEnded, ConnError> {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        let mut hs = AgentHandshake::new(
            &self.key,
            &self.host.name,
            fresh_nonce().map_err(|e| ConnError::Io {
                op: "reading random bytes for the nonce",
                source: std::io::Error::other(e.to_string()),
            })?,
        );
        let hello = read_frame(&mut reader, &mut buf, HANDSHAKE_TIMEOUT).await?;
        let challenge = match hs.on_hello(&hello) {
            Ok(c) => c,
            Err(e) => {
                if let Some(bytes) = hs.reject(&e.to_string()) {
                    let _ = write_frames(&mut writer, &bytes, HANDSHAKE_TIMEOUT).await;
                }
                return Err(e.into());
            }
        };
        // The term decides before anything else is answered: a refused monitor learns why.
        let (monitor, term) = hs
            .peer()
            .map(|(m, t)| (m.to_string(), t))
            .unwrap_or_default();
        if term.is_witness() {
            let io = crate::witness::Io {
                reader,
                writer,
                buf,
            };
            return crate::witness::serve(&self, hs, challenge, io, handshake, monitor).await;
        }
        // A term of another epoch is judged by what etcd shows now, read by this agent.
        let entry = match self.authority.admit(&monitor, term).await {
            Ok(entry) => entry,
            Err(refused) => {
                // The Challenge sealed by `on_hello` is never sent: the reject goes out
                // as the first frame, and the monitor shows its text.
                if let Some(bytes) = hs.reject(&refused.to_string()) {
                    let _ = write_frames(&mut writer, &bytes, HANDSHAKE_TIMEOUT).await;
                }
                // Logged by `admit`, once per refused term.
                return Ok(ConnectionEnded::Refused);
            }
        };
        write_frames(&mut writer, &challenge, HANDSHAKE_TIMEOUT).await?;
        let auth = read_frame(&mut reader, &mut buf, HANDSHAKE_TIMEOUT).await?;
        let (session, welcome) = hs.on_auth(&auth, VERSION)?;
        let Opened {
            id: session_id,
            closing: mut fenced,
        } = match self.authority.open_session(entry, term) {
            Ok(opened) => opened,
            // A later term was entered during this handshake: the session is already over.
            Err(_overtaken) => {
                tracing::info!(
                    %term,
                    "monitor refused: a later term began during its handshake"
                );
                return Ok(ConnectionEnded::Refused);
            }
        };
        write_frames(&mut writer, &welcome, HANDSHAKE_TIMEOUT).await?;
        handshake.authenticated();
        tracing::info!(monitor = %session.peer, %term, protocol = session.version, "monitor authenticated");
        let Session {
            mut sealer,
            mut opener,
            ..
        } = session;

        // The writer task owns the sealer: every outgoing frame goes through it in order.
        let (out_tx, mut out_rx) = mpsc::channel::<(Message, u32, u8)>(64);
        let write_timeout = self.timing.agent_write_timeout;
        let mut probe_rx = self.probe_events.subscribe();
        let writer_task = tokio::spawn(async move {
            let mut bytes = Vec::with_capacity(256);
            let mut probe_open = true;
            loop {
                let (msg, id, flags) = tokio::select! {
                    biased;
                    event = probe_rx.recv(), if probe_open => match event {
                        Ok(e) => (Message::ProbeEvent(e), 0, 0),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "probe events dropped: the monitor connection is too slow");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            probe_open = false;
                            continue;
                        }
                    },
                    out = out_rx.recv() => match out {
                        Some(o) => o,
                        None => break,
                    },
                };
                bytes.clear();
                if let Err(e) = sealer.seal_into(&msg, id, flags, &mut bytes) {
                    return Err(ConnError::from(e));
                }
                write_frames(&mut writer, &bytes, write_timeout).await?;
            }
            Ok(())
        });
        // A monitor heartbeats every heartbeat_interval; one silent far longer is gone.
        let idle = self.timing.agent_idle;
        let result = loop {
            let read = tokio::select! {
                r = read_frame(&mut reader, &mut buf, idle) => r,
                // Nothing this session sent before the fence may undo it: the monitor
                // must come back on a new connection.
                _ = fenced.changed() => {
                    match self.lease.fenced() {
                        Some(_) => tracing::warn!("closing the monitor connection: the lease fenced this host"),
                        None => tracing::info!(%term, "closing the monitor connection: a monitor of a later term connected"),
                    }
                    break Ok(());
                }
            };
            let frame = match read {
                Ok(f) => f,
                Err(ConnError::Closed) => break Ok(()),
                Err(e) => break Err(e),
            };
            let msg = match opener.open_part(&frame) {
                Ok(Some(m)) => m,
                // A message in several frames comes out with its last.
                Ok(None) => continue,
                Err(e) => {
                    tell_monitor(&out_tx, &e).await;
                    break Err(e.into());
                }
            };
            let id = frame.header.request_id;
            if let Err(e) = self.dispatch(session_id, term, msg, id, &out_tx).await {
                tell_monitor(&out_tx, &e).await;
                break Err(e.into());
            }
        };
        drop(out_tx);
        // Let queued replies (an Error explaining the drop) reach the monitor, bounded.
        let _ = tokio::time::timeout(Duration::from_millis(500), writer_task).await;
        result.map(|()| ConnectionEnded::Disconnected)
    }
}

/// The last frame before the agent closes a connection over a bad frame: what was wrong.
/// Best effort: the connection is ending, a failed send has nobody left to tell.
pub(super) async fn tell_monitor(
    out: &mpsc::Sender<(Message, u32, u8)>,
    e: &impl std::fmt::Display,
) {
    let _ = out
        .send((
            Message::Error(ErrorMessage {
                message: e.to_string(),
            }),
            0,
            0,
        ))
        .await;
}
