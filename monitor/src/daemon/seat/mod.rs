//! Where this monitor sits while it drives the agents: alone with its status file
//! ([`alone::Alone`]), or as the leader of one term of a monitor fleet in etcd
//! ([`leader::Leader`]). The event loop (`super::lead`) asks its seat for all in which
//! the two differ, and never which one it has.
//!
//! A fleet's monitor stands by and leads in turn (standby.rs); to lead it is elected and
//! settles the prefix and the status (campaign.rs); standing by or leading, it passes
//! control commands on to the leader or runs them (forward.rs).

pub mod alone;
pub mod campaign;
pub mod forward;
pub mod leader;
pub mod roster;
pub mod sealed;
pub mod standby;

use super::{persist, DaemonError, Process};
use crate::control::ControlCommand;
use crate::core::status::StatusRecord;
use crate::core::{Event, FleetShow};
use mmm_common::config::Config;
use std::future::Future;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot, watch};

/// What the event loop needs of where this monitor sits.
pub trait Seat: Send {
    /// This monitor's name, as its links tell the agents (Hello).
    fn name(&self) -> &str;

    /// The term its links tell the agents (Hello): an agent refuses a term older than one
    /// it has seen, and one of an epoch its own read of etcd does not show. `Term::NONE`
    /// alone: an agent without a fleet knows no terms.
    fn term(&self) -> mmm_common::epoch::Term;

    /// Whether the seat is lost (a fleet's term is over): nothing may be decided any more.
    fn is_deposed(&self) -> bool;

    /// Resolves once the seat is lost; never, alone.
    fn deposition(&self) -> Deposition;

    /// Whether a monitor that hears no agent at all gives way, being most likely the one
    /// cut off: a fleet's leader does, to a monitor that may reach them; alone there is
    /// nobody to give way to.
    fn gives_way_unheard(&self) -> bool;

    /// Keeps the status record (newest wins); returns at once.
    fn persist(&self, record: StatusRecord);

    /// Keeps `record` as the last one, on a clean stop. Bounded: the disk or etcd may be
    /// what stops us.
    fn persist_last(self, record: StatusRecord) -> impl Future<Output = ()> + Send
    where
        Self: Sized;

    /// The writer now (host, address, port): a fleet publishes it for clients.
    fn publish_writer(&self, writer: Option<(String, Ipv4Addr, u16)>);

    /// Ends `host`'s writer permit where the seat holds it (a fleet's agents hold theirs
    /// in etcd), then reports `LeaseEnded` on `events`.
    fn end_lease(&self, host: String, events: mpsc::Sender<Event>);

    /// The fleet's line of `show`; none alone.
    fn show(&self) -> Option<FleetShow>;

    /// From now on, hears the commands given to other monitors (a fleet's standbys) for
    /// this one to run.
    fn hear_forwarded(&mut self) -> impl Future<Output = ()> + Send;

    /// The next command given to another monitor, verified, and its id; one refused is
    /// answered here. Never resolves alone. Cancel-safe: no command is lost when another
    /// event comes first.
    fn forwarded(&mut self) -> impl Future<Output = (ControlCommand, String)> + Send;

    /// Where the answer to forwarded command `id` goes.
    fn answer_to(&self, id: String) -> oneshot::Sender<String>;
}

/// Resolves once a seat is lost.
pub struct Deposition(Option<watch::Receiver<bool>>);

impl Deposition {
    /// A seat that cannot be lost.
    pub fn never() -> Deposition {
        Deposition(None)
    }

    /// Lost once `deposed` turns true (or its sender is gone).
    pub fn of(deposed: watch::Receiver<bool>) -> Deposition {
        Deposition(Some(deposed))
    }

    pub async fn lost(&mut self) {
        match &mut self.0 {
            Some(deposed) => {
                let _ = deposed.wait_for(|d| *d).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Where this process sits for its whole life: alone, holding its status file, or in a
/// fleet, standing by and leading in turn.
pub enum Place {
    Alone(persist::StatusLock),
    Fleet,
}

impl Place {
    /// A second monitor on the same status file refuses here, before touching anything
    /// (in a fleet, etcd decides who acts; the status lives there).
    pub fn claim(config: &Config) -> Result<Place, DaemonError> {
        Ok(match config.coordination {
            None => Place::Alone(persist::StatusLock::acquire(&config.monitor.status_path)?),
            Some(_) => Place::Fleet,
        })
    }

    /// Runs the monitor until it stops.
    pub async fn run(self, process: &mut Process, name: String) -> Result<(), DaemonError> {
        match self {
            // The status file stays claimed until the monitor stops.
            Place::Alone(_lock) => alone::run(process, name).await,
            Place::Fleet => standby::run(process, name).await,
        }
    }
}
