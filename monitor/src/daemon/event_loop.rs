//! The one owner of the `Cluster` while this monitor drives the agents.

use super::checks;
use super::localtime;
use super::reload;
use super::seat::Seat;
use super::shell::Shell;
use super::{DaemonError, LeadEnded, Process};
use crate::core::{Cluster, Event};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest the core goes without a Tick. Not needed for any decision (every timed
/// one is in `Cluster::next_deadline`); a bound should one ever be missed.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// An event that took the core this long gives the thread away before the next: the
/// links share it, and their heartbeats renew the agents' leases. Without it a run of
/// such events (a start-up at a thousand hosts: every first heartbeat a pass over every
/// host) ends only when tokio's budget of 128 operations does, and the heartbeats wait
/// for all of them.
const SHARE_AFTER: Duration = Duration::from_micros(500);

/// What the event loop listens to besides the process's control socket and the seat.
pub(super) struct Inputs {
    pub(super) events: mpsc::Receiver<Event>,
    pub(super) checks: mpsc::Receiver<checks::Sample>,
}

/// A command's source: this monitor's control socket, or a standby's (through etcd).
enum Asker {
    Local(oneshot::Sender<String>),
    Forwarded(String),
}

/// The one owner of the `Cluster`: each event in, its actions out, then sleep until the
/// next event or the core's next deadline.
pub(super) async fn event_loop<S: Seat>(
    cluster: &mut Cluster,
    shell: &mut Shell<S>,
    mut inputs: Inputs,
    process: &mut Process,
) -> Result<LeadEnded, DaemonError> {
    let clock = shell.clock;
    // The core says when it next needs a Tick; IDLE_TICK bounds the time since the last
    // one (from the last Tick, not from the last event: events come every second or
    // faster, and a bound restarted by each would never fire).
    let mut last_tick = tokio::time::Instant::now();
    let mut wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
    let mut next_reply: u64 = 1;
    let mut deposed = shell.seat.deposition();
    // In a fleet: since when this leader reaches no agent at all (see `lead`).
    let mut alone_since: Option<tokio::time::Instant> = None;
    let alone_limit = process.timing.alone_limit;
    shell.observe(cluster, clock.now());
    loop {
        let asked = tokio::select! {
            stopped = process.life.stopped() => return stopped.map(|()| LeadEnded::Shutdown),
            _ = deposed.lost() => {
                tracing::error!("leadership lost: stopping at once (another monitor may be elected)");
                return Ok(LeadEnded::Deposed);
            }
            Some(e) = inputs.events.recv() => Ok(e),
            Some(s) = inputs.checks.recv() => {
                if let Event::Check { host, check, .. } = &s.event {
                    shell.metrics.lock().unwrap_or_else(|p| p.into_inner()).check_latency.insert((host.clone(), check.to_string()), s.latency.as_secs_f64());
                    if let Some(read) = s.replication {
                        cluster.observe_replication(host, clock.now(), read);
                    }
                }
                Ok(s.event)
            }
            Some((command, reply)) = process.control.recv() => Err((command, Asker::Local(reply))),
            Ok(()) = process.reloads.changed() => {
                process.config = process.reloads.borrow_and_update().clone();
                reload::apply(process.config.clone(), cluster, shell);
                continue;
            }
            (command, id) = shell.seat.forwarded() => Err((command, Asker::Forwarded(id))),
            _ = tokio::time::sleep_until(wake) => {
                last_tick = tokio::time::Instant::now();
                Ok(Event::Tick)
            }
        };
        // The select picks among ready branches at random: a term known to be over
        // decides nothing more, whatever was picked.
        if shell.seat.is_deposed() {
            tracing::error!("leadership lost: stopping at once (another monitor may be elected)");
            return Ok(LeadEnded::Deposed);
        }
        let event = match asked {
            Ok(e) => e,
            Err((command, asker)) => {
                // `checks` prints local time; the offset can change (DST) while we run.
                cluster.set_utc_offset(localtime::utc_offset_s());
                cluster.set_fleet(shell.seat.show());
                let id = next_reply;
                next_reply += 1;
                let reply = match asker {
                    Asker::Local(reply) => reply,
                    Asker::Forwarded(fid) => shell.seat.answer_to(fid),
                };
                shell.replies.insert(id, reply);
                Event::Command { reply: id, command }
            }
        };
        let now = clock.now();
        let tick = matches!(event, Event::Tick);
        let started = tokio::time::Instant::now();
        let actions = cluster.handle(now, event);
        if !actions.is_empty() {
            shell.dispatch(actions).await;
            shell.observe(cluster, now);
        }
        if tick {
            shell.observe_probes(cluster);
        }
        if shell.seat.gives_way_unheard() && !cluster.hosts().is_empty() {
            if cluster.hosts().iter().any(|h| h.agent_up) {
                alone_since = None;
            } else if alone_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                >= alone_limit
            {
                tracing::warn!(after = ?alone_limit, "no agent reachable: stepping down so that a monitor reaching them leads");
                return Ok(LeadEnded::SteppedDown);
            }
        }
        wake = clock.instant(cluster.next_deadline(), last_tick + IDLE_TICK);
        if started.elapsed() >= SHARE_AFTER {
            tokio::task::yield_now().await;
        }
    }
}
