//! A monitor alone (no `[coordination]`): its status file is its memory, and no other
//! monitor decides. Its seat is never lost, and it has nobody to give way to.

use super::{Deposition, Seat};
use crate::control::ControlCommand;
use crate::core::status::StatusRecord;
use crate::core::{Cluster, Event, FencingMethod, FleetShow, Millis};
use crate::daemon::{persist, Clock, DaemonError, Process};
use mmm_common::config::Config;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub struct Alone {
    name: String,
    status: persist::Writer,
}

/// Resumes from the status file and drives the agents until the monitor stops.
pub async fn run(process: &mut Process, name: String) -> Result<(), DaemonError> {
    let config = process.config.clone();
    let clock = Clock::new();
    let cluster = restore_from_file(&config, clock.now());
    let seat = Alone {
        name,
        status: persist::Writer::start(config.monitor.status_path.clone()),
    };
    crate::daemon::lead(process, seat, cluster, clock).await?;
    Ok(())
}

/// The cluster as the status file left it, or passive mode (with the cause shown) when
/// the file cannot be trusted.
fn restore_from_file(config: &Arc<Config>, now: Millis) -> Cluster {
    let fencing = FencingMethod::alone(config.agent.fencing);
    let mut cluster = Cluster::new(config.clone(), fencing, now);
    let path = &config.monitor.status_path;
    match persist::read(path, now) {
        Ok(Some(record)) => match cluster.restore(&record) {
            Ok(()) => tracing::info!(path = %path.display(), "resuming from the status file"),
            Err(e) => {
                let cause = format!("status file {} unusable: {e}", path.display());
                tracing::error!("{cause}");
                cluster.go_passive(cause);
            }
        },
        Ok(None) => {
            tracing::info!(path = %path.display(), "no status file: first start, hosts AWAITING_RECOVERY")
        }
        Err(e) => {
            let cause = format!(
                "{}: starting passive rather than guessing",
                crate::error_chain(&e)
            );
            tracing::error!("{cause}");
            cluster.go_passive(cause);
        }
    }
    cluster
}

impl Seat for Alone {
    fn name(&self) -> &str {
        &self.name
    }

    fn term(&self) -> mmm_common::epoch::Term {
        mmm_common::epoch::Term::NONE
    }

    fn is_deposed(&self) -> bool {
        false
    }

    fn deposition(&self) -> Deposition {
        Deposition::never()
    }

    fn gives_way_unheard(&self) -> bool {
        false
    }

    fn persist(&self, record: StatusRecord) {
        self.status.save(record)
    }

    async fn persist_last(self, record: StatusRecord) {
        self.status.finish(record).await
    }

    /// Nobody reads the writer from a monitor alone but `show` and the metrics.
    fn publish_writer(&self, _writer: Option<(String, Ipv4Addr, u16)>) {}

    /// The core asks this only of a fleet: alone, a writer's permit is the link's lease.
    fn end_lease(&self, host: String, _events: mpsc::Sender<Event>) {
        tracing::error!(%host, "EndLease without a fleet: ignored")
    }

    fn show(&self) -> Option<FleetShow> {
        None
    }

    async fn hear_forwarded(&mut self) {}

    async fn forwarded(&mut self) -> (ControlCommand, String) {
        std::future::pending().await
    }

    /// Never asked: nothing is forwarded to a monitor alone.
    fn answer_to(&self, _id: String) -> oneshot::Sender<String> {
        oneshot::channel().0
    }
}
