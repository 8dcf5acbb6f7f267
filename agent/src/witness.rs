//! Witness sessions: how every fleet monitor's word reaches the writer's failsafe.
//!
//! A fleet monitor, leader or standby, keeps a session of its own to each agent under
//! `Term::WITNESS` (protocol version 7). It takes no orders and enters no term: it only
//! heartbeats, and while the monitor cannot reach etcd it follows each answer with a
//! [`Consent`] (and, from the leader of the agent's current term, its vouch). The failsafe
//! itself, and why it is safe, is `crate::failsafe`.

use crate::clock::Boot;
use crate::failsafe::{Counted, Failsafe};
use crate::server::{Agent, ConnectionEnded, HANDSHAKE_TIMEOUT};
use mmm_common::proto::io::{read_frame, write_frames, ConnError};
use mmm_common::proto::{
    AgentHandshake, Consent, ErrorMessage, FrameBuffer, Message, FLAG_RESPONSE,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The agent's failsafe bookkeeping.
#[derive(Default)]
pub struct FailsafeState {
    failsafe: Mutex<Failsafe>,
    /// Witness sessions are numbered apart (their own space, for `Failsafe::answered`).
    next: AtomicU64,
    /// The failsafe holds the permit now: its start and end are logged once each.
    holds: AtomicBool,
}

impl FailsafeState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Failsafe> {
        self.failsafe.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's halves and read buffer, handed over after the Hello.
pub struct Io {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
    pub buf: FrameBuffer,
}

/// Finishes the handshake of a witness and serves it until it leaves.
pub(crate) async fn serve(
    agent: &Arc<Agent>,
    mut hs: AgentHandshake,
    challenge: Vec<u8>,
    mut io: Io,
    handshake: crate::admission::Slot,
    monitor: String,
) -> Result<ConnectionEnded, ConnError> {
    let Some(etcd) = agent.timing().etcd else {
        if let Some(bytes) = hs.reject(
            "a witness session is for a monitor fleet, and this agent has no [coordination]",
        ) {
            let _ = write_frames(&mut io.writer, &bytes, HANDSHAKE_TIMEOUT).await;
        }
        return Ok(ConnectionEnded::Refused);
    };
    write_frames(&mut io.writer, &challenge, HANDSHAKE_TIMEOUT).await?;
    let auth = read_frame(&mut io.reader, &mut io.buf, HANDSHAKE_TIMEOUT).await?;
    let (session, welcome) = hs.on_auth(&auth, env!("CARGO_PKG_VERSION"))?;
    write_frames(&mut io.writer, &welcome, HANDSHAKE_TIMEOUT).await?;
    handshake.authenticated();
    let id = agent.failsafe.next.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%monitor, "witness session open");
    let mmm_common::proto::Session {
        mut sealer,
        mut opener,
        ..
    } = session;
    let idle = agent.timing().agent_idle;
    let write_timeout = agent.timing().agent_write_timeout;
    let mut out = Vec::with_capacity(128);
    let result = loop {
        let frame = match read_frame(&mut io.reader, &mut io.buf, idle).await {
            Ok(f) => f,
            Err(ConnError::Closed) => break Ok(()),
            Err(e) => break Err(e),
        };
        let msg = match opener.open_part(&frame) {
            Ok(Some(m)) => m,
            // A message in several frames comes out with its last.
            Ok(None) => continue,
            Err(e) => break Err(e.into()),
        };
        let request = frame.header.request_id;
        out.clear();
        match msg {
            Message::Heartbeat(_) => {
                let hb = agent.heartbeat();
                // Taken before the answer leaves: a consent never counts from later.
                agent.failsafe.lock().answered(id, request, Boot::now());
                if let Err(e) = sealer.seal_into(
                    &Message::AgentHeartbeat(hb),
                    request,
                    FLAG_RESPONSE,
                    &mut out,
                ) {
                    break Err(e.into());
                }
            }
            Message::Consent(c) => consent(agent, id, &monitor, c, etcd.ttl),
            Message::Error(e) => {
                tracing::info!(%monitor, message = %e.message, "witness left with an error");
                break Ok(());
            }
            other => {
                let refusal = ErrorMessage {
                    message: format!(
                        "a witness session takes no orders ({:?} refused)",
                        other.msg_type()
                    ),
                };
                tracing::warn!(%monitor, "{}", refusal.message);
                let _ = sealer.seal_into(&Message::Error(refusal), request, 0, &mut out);
                let _ = write_frames(&mut io.writer, &out, write_timeout).await;
                break Ok(());
            }
        }
        if !out.is_empty() {
            if let Err(e) = write_frames(&mut io.writer, &out, write_timeout).await {
                break Err(e);
            }
        }
    };
    agent.failsafe.lock().closed(id);
    result.map(|()| ConnectionEnded::Disconnected)
}

/// A monitor's consent (and vouch): extends the writer's permit when the failsafe now
/// allows it and etcd does not renew this agent's lease.
fn consent(agent: &Arc<Agent>, session: u64, monitor: &str, c: Consent, ttl: std::time::Duration) {
    let current = agent.authority().highest();
    let counted = agent.failsafe.lock().consent(
        session, monitor, c.echo, c.known, c.vouch, &c.roster, current, ttl,
    );
    let until = match counted {
        Counted::Counted { until } => until,
        Counted::OtherTerm => {
            tracing::debug!(%monitor, known = %c.known, vouch = %c.vouch, %current, "failsafe consent or vouch of another term than the one this agent follows: not taken");
            None
        }
        Counted::Unknown => None,
    };
    let holds = &agent.failsafe.holds;
    if agent.etcd_ok() {
        if holds.swap(false, Ordering::Relaxed) {
            tracing::info!("etcd renews this agent's lease again: the failsafe is over");
        }
        return;
    }
    let Some(until) = until else {
        return;
    };
    match agent.lease().failsafe_until(until) {
        Some(left) => {
            if !holds.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    ?left,
                    completed_by = %monitor,
                    "etcd does not renew this agent's lease and every monitor of the fleet says it cannot reach etcd either: the failsafe keeps the writer permit running, renewed by their consents"
                );
            }
        }
        None => {
            if agent.lease().left().is_none() && holds.swap(false, Ordering::Relaxed) {
                tracing::warn!("the failsafe ended with the writer permit");
            }
        }
    }
}
