//! The agent's side of the protocol: the accept loop, each monitor connection's handshake
//! and its reader and writer, and the dispatch of what a monitor sends. The agent's state
//! (`Agent`) is built and its tasks started here.
//!
//! In a fleet (`[coordination]`) each handshake is judged by the monitor's term
//! (`crate::authority`) before the Challenge goes out, and the lease is renewed by the agent's
//! own etcd lease (`crate::etcd`), not by the monitor.
//!
//! Tasks: one accept loop; per monitor connection a reader and a writer; one reconciler
//! (`crate::reconciler`) that alone changes VIPs and read_only (so two desired states never
//! interleave); the lease's task, which fences without SQL, and the wake task, which waits
//! on a hung mysqld that may be writable and makes it read-only the moment it answers
//! (`crate::fence`). Heartbeats are answered by the connection's reader from the status
//! snapshot (`crate::status`) at once, never waiting on SQL or netlink; actions run in
//! `crate::actions`.

//!
//! Here: the agent's shared state and what its tasks ask of it. `start` wires the state and
//! its tasks together; `session` accepts monitors, runs each handshake and decodes frames;
//! `dispatch` answers each message.

use crate::authority::Authority;
use crate::garp::GarpSender;
use crate::lease::Lease;
use crate::mysql::{Mysql, SemiSyncHold};
use crate::reconcile::Scope;
use crate::reconciler::ReconcilerCommand;
use crate::status::Status;
use crate::vip::Netlink;
use mmm_common::config::{ClusterKey, Config, Host};
use mmm_common::proto::{hb_flags, AgentHeartbeat, DesiredState, ProbeEvent, ProbeState};
use mmm_common::timing::Timing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

mod dispatch;
mod session;
mod start;

/// Bound on each handshake step: a peer that does not answer in time is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the status snapshot is refreshed from the kernel and the server.
pub(crate) const REFRESH: Duration = Duration::from_millis(500);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How a monitor connection ended without an error.
pub(crate) enum ConnectionEnded {
    Disconnected,
    /// Its term was refused (already logged, once per term).
    Refused,
}

/// Everything the agent's tasks share.
pub struct Agent {
    pub config: Config,
    /// The fencing bounds, derived from `config` once.
    pub(crate) timing: Timing,
    pub host: Host,
    pub(crate) key: ClusterKey,
    pub(crate) scope: Scope,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) lease: Arc<Lease>,
    /// Whether a monitor may drive this host: the highest monitor term seen (a fleet's
    /// leadership term; 0 without a fleet), etcd's election in a fleet, and the lease's
    /// sessions.
    pub(crate) authority: Authority,
    /// The probe saw mysqld exit and no new one listening yet (see Executor).
    pub(crate) mysqld_exited: Arc<std::sync::atomic::AtomicBool>,
    /// Lifts of read_only whose outcome is unknown, and whether the server hung while it
    /// may be writable (shared with the Executor and the task that acts when it wakes).
    pub(crate) grants: Arc<crate::mysql::Grants>,
    /// The last desired state followed: the same one re-sent keeps its plan going.
    pub(crate) followed: std::sync::Mutex<Option<DesiredState>>,
    pub(crate) commands: mpsc::Sender<ReconcilerCommand>,
    pub(crate) actions_mysql: Mysql,
    /// For status queries: promotion decisions need the server's state now, not the
    /// snapshot of up to REFRESH ago, and must not wait behind a long action.
    pub(crate) status_mysql: Mysql,
    /// The probe's seam: events sent here reach every connected monitor at once.
    pub(crate) probe_events: broadcast::Sender<ProbeEvent>,
    pub(crate) semi_sync: SemiSyncHold,
    /// Held for the whole of an action that changes replication: a re-point is several
    /// statements (STOP, CHANGE, START), and two of them interleaved fail with "you have
    /// a running slave" or leave the server following the wrong source.
    pub(crate) replication_changes: tokio::sync::Mutex<()>,
    /// Prohibit routes to a vanished source while its IO thread is stopped.
    pub(crate) routes: crate::route::Routes,
    /// In a fleet: the monitors' consents and the leader's vouch (crate::failsafe).
    pub(crate) failsafe: crate::witness::FailsafeState,
    /// Actions done, by kind and outcome (`/metrics`).
    pub(crate) counters: crate::http::metrics::Counters,
}

/// The kernel resources opened at start (the last two while capabilities allowed it).
pub struct Resources {
    pub netlink: Netlink,
    pub garp: Option<GarpSender>,
    pub rst: Option<crate::rst::Rst>,
}

impl crate::probe::ProbeSink for Agent {
    /// Each monitor connection forwards the events unasked, ahead of anything queued
    /// behind them.
    fn event(&self, event: ProbeEvent) {
        let _ = self.probe_events.send(event);
    }

    fn probe_state(&self, state: ProbeState) {
        self.set_probe_state(state);
    }

    fn mysqld_exited(&self, exited: bool) {
        self.mysqld_exited
            .store(exited, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Agent {
    /// Records the probe's state for heartbeats and status reports.
    pub fn set_probe_state(&self, state: ProbeState) {
        self.status.send_modify(|s| s.probe = Some(state));
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The answer to a heartbeat: the status snapshot, and whether etcd renews this
    /// agent's lease (a monitor vouches for a failsafe only while no agent says so).
    pub(crate) fn heartbeat(&self) -> AgentHeartbeat {
        let mut hb = self.status.borrow().heartbeat();
        if self.etcd_ok() {
            hb.flags |= hb_flags::ETCD_OK;
        }
        hb
    }

    /// In a fleet: etcd renewed this agent's own lease within two keepalive periods.
    pub(crate) fn etcd_ok(&self) -> bool {
        self.timing
            .etcd
            .is_some_and(|e| self.lease.etcd_renewed_within(e.keepalive_every * 2))
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn timing(&self) -> &Timing {
        &self.timing
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The probe saw mysqld's process exit and no new one listening yet.
    pub(crate) fn mysqld_exited(&self) -> bool {
        self.mysqld_exited
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("host {0:?} is not in the config")]
    UnknownHost(String),
    #[error("reading the agent user's password")]
    Secret(#[from] mmm_common::config::SecretError),
    #[error("listening for the monitor on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
