//! One task per agent: connect and authenticate (with backoff), heartbeat every
//! heartbeat_interval, report the agent unreachable after agent_timeout of silence,
//! push the desired state on change and re-assert it periodically, run actions with
//! deadlines, and forward probe events the moment they arrive.
//!
//! `Disconnect` (lease fencing) closes abortively (SO_LINGER 0: queued heartbeats are
//! discarded, none can renew the lease later) and reconnects no sooner than the lease.

use crate::agents::client::{AgentLink, LinkError};
use crate::core::{AgentView, Event};
use mmm_common::config::ClusterKey;
use mmm_common::proto::io::ConnError;
use mmm_common::proto::{Action, ActionOutcome, ActionRequest, DesiredState, Heartbeat, Message};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

#[derive(Debug)]
pub enum LinkCmd {
    Desired(DesiredState),
    Action {
        id: u64,
        action: Action,
        deadline: Duration,
    },
    Query,
    Disconnect,
    /// Disconnect and stay away until Release (the core counts the lease meanwhile).
    Isolate,
    Release,
}

/// Why the link stays away from its agent.
#[derive(Debug, Clone, Copy)]
enum Hold {
    No,
    /// After a Disconnect: until the lease has surely run out.
    Until(Instant),
    /// After an Isolate: until Release (or a Disconnect turns it into Until).
    Isolated,
}

pub struct LinkParams {
    pub host: String,
    pub addr: SocketAddr,
    pub key: ClusterKey,
    pub monitor_name: String,
    /// The fleet leader's term (`Term::NONE` without a fleet): agents refuse a term older
    /// than one they have seen, and one of an epoch etcd does not show.
    pub term: mmm_common::epoch::Term,
    pub heartbeat_interval: Duration,
    /// The origin of the heartbeat grid, the same for every link of a term: the links
    /// beat together (see `connected`).
    pub beat: Instant,
    pub agent_timeout: Duration,
    /// The stay-away after a Disconnect: until the lease has surely run out.
    pub lease: Duration,
    /// Bound on connecting (handshake included) and on writing.
    pub io_timeout: Duration,
    /// The core's clock: an unreachable agent is reported with when it last answered.
    pub clock: super::Clock,
    /// Where the agent's release and the protocol spoken with it are published
    /// (`mmm_agent_link_info`): a rolling upgrade's progress.
    pub metrics: super::metrics::Shared,
}

/// How often the desired state is sent again though unchanged.
const REASSERT: Duration = Duration::from_secs(2);

/// A heartbeat whose view did not change is told to the core at most this often: the
/// core decides on changes (a VIP gone, read_only set, replication stopped), which are
/// forwarded at once, and silence is detected here. Ten identical views a second per host
/// were most of the core's work.
const HEARTBEAT_REFRESH: Duration = Duration::from_secs(1);

/// The longest wait between two connection attempts to an agent that is down. An agent
/// restarted on the writer (a routine upgrade) resumes the lease it had, with what is
/// left of it: the monitor must be back before that runs out or the agent fences itself
/// and the writer VIP flaps. So an eighth of the lease, never more than a second, never
/// less than a heartbeat (a refused connection costs the monitor next to nothing).
fn max_backoff(lease: Duration, heartbeat_interval: Duration) -> Duration {
    (lease / 8)
        .min(Duration::from_secs(1))
        .max(heartbeat_interval.min(Duration::from_secs(1)))
}

pub async fn run(p: LinkParams, mut cmds: mpsc::Receiver<LinkCmd>, events: mpsc::Sender<Event>) {
    let span = tracing::info_span!("agent", host = %p.host);
    async move {
        let mut desired: Option<DesiredState> = None;
        let mut backoff = Duration::from_millis(50);
        let mut reported_down = false;
        let mut hold = Hold::No;
        let mut spoken = None;
        loop {
            loop {
                // Fenced by lease: stay away until it has surely run out (a Disconnect
                // meanwhile starts the wait again), or until released.
                let until = match hold {
                    Hold::No => break,
                    Hold::Until(t) => t,
                    Hold::Isolated => Instant::now() + Duration::from_secs(86_400),
                };
                match drain_until(until, &mut cmds, &mut desired, &events, &p.host).await {
                    Drained::Shutdown => return,
                    Drained::Disconnect => hold = Hold::Until(Instant::now() + p.lease),
                    Drained::Isolate => hold = Hold::Isolated,
                    Drained::Release if matches!(hold, Hold::Isolated) => hold = Hold::No,
                    Drained::Release => {}
                    Drained::Elapsed if matches!(hold, Hold::Isolated) => {}
                    Drained::Elapsed => hold = Hold::No,
                }
            }
            let ended = session(
                &p,
                &mut cmds,
                &mut desired,
                &events,
                &mut reported_down,
                &mut spoken,
            )
            .await;
            match ended {
                SessionEnded::Shutdown => return,
                SessionEnded::Disconnected => {
                    hold = Hold::Until(Instant::now() + p.lease);
                    backoff = Duration::from_millis(50);
                }
                SessionEnded::Isolated => {
                    hold = Hold::Isolated;
                    backoff = Duration::from_millis(50);
                }
                SessionEnded::Failed(e) => {
                    if !reported_down {
                        reported_down = true;
                        let _ = events
                            .send(Event::AgentUnreachable {
                                host: p.host.clone(),
                                reason: e.clone(),
                                last_heard: None,
                            })
                            .await;
                    }
                    tracing::debug!(error = %e, "agent link down; retrying in {backoff:?}");
                    match drain_until(
                        Instant::now() + backoff,
                        &mut cmds,
                        &mut desired,
                        &events,
                        &p.host,
                    )
                    .await
                    {
                        Drained::Shutdown => return,
                        // The core relies on this agent's lease from now on: no session
                        // may renew it before it has run out.
                        Drained::Disconnect => hold = Hold::Until(Instant::now() + p.lease),
                        Drained::Isolate => hold = Hold::Isolated,
                        Drained::Elapsed | Drained::Release => {}
                    }
                    backoff = (backoff * 2).min(max_backoff(p.lease, p.heartbeat_interval));
                }
                SessionEnded::Lost(e, last_reply) => {
                    if !reported_down {
                        reported_down = true;
                        let last_heard = p.clock.now().saturating_sub(
                            last_reply.elapsed().as_millis().min(u128::from(u64::MAX)) as u64,
                        );
                        let _ = events
                            .send(Event::AgentUnreachable {
                                host: p.host.clone(),
                                reason: e,
                                last_heard: Some(last_heard),
                            })
                            .await;
                    }
                    backoff = Duration::from_millis(50);
                }
            }
        }
    }
    .instrument(span)
    .await
}

enum SessionEnded {
    Shutdown,
    Disconnected,
    Isolated,
    /// Could not connect or authenticate.
    Failed(String),
    /// Was connected, then lost it; the agent last answered then.
    Lost(String, Instant),
}

enum Drained {
    Elapsed,
    Shutdown,
    /// The core asked for a Disconnect while the link was down: the lease wait starts now.
    Disconnect,
    Isolate,
    Release,
}

/// While not connected: keep the newest desired state, fail actions at once, and never
/// lose a Disconnect (the core counts the lease from it).
async fn drain_until(
    t: Instant,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    desired: &mut Option<DesiredState>,
    events: &mpsc::Sender<Event>,
    host: &str,
) -> Drained {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(t) => return Drained::Elapsed,
            cmd = cmds.recv() => match cmd {
                None => return Drained::Shutdown,
                Some(LinkCmd::Disconnect) => return Drained::Disconnect,
                Some(LinkCmd::Isolate) => return Drained::Isolate,
                Some(LinkCmd::Release) => return Drained::Release,
                Some(cmd) => absorb(cmd, desired, events, host).await,
            }
        }
    }
}

/// A command received while no session can carry it: the desired state is kept (the
/// newest wins), an action fails at once, a query is moot.
async fn absorb(
    cmd: LinkCmd,
    desired: &mut Option<DesiredState>,
    events: &mpsc::Sender<Event>,
    host: &str,
) {
    match cmd {
        LinkCmd::Desired(d) => *desired = Some(d),
        LinkCmd::Action { id, .. } => fail_action(events, host, id, "agent unreachable").await,
        LinkCmd::Query | LinkCmd::Disconnect | LinkCmd::Isolate | LinkCmd::Release => {}
    }
}

async fn fail_action(events: &mpsc::Sender<Event>, host: &str, id: u64, why: &str) {
    let _ = events
        .send(Event::ActionDone {
            host: host.into(),
            id,
            outcome: ActionOutcome::Failed,
            detail: why.into(),
            position: None,
        })
        .await;
}

async fn session(
    p: &LinkParams,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    desired: &mut Option<DesiredState>,
    events: &mpsc::Sender<Event>,
    reported_down: &mut bool,
    spoken: &mut Option<(u8, String)>,
) -> SessionEnded {
    let t = p.io_timeout;
    let link = match AgentLink::connect_in_term(p.addr, &p.key, &p.monitor_name, &p.host, p.term, t)
        .await
    {
        Ok(l) => l,
        Err(e) => return SessionEnded::Failed(crate::error_chain(&e)),
    };
    tracing::info!(agent_version = %link.agent_version(), protocol = link.protocol(), "agent authenticated");
    // Said once, and again when an upgrade (or a downgrade) changes it.
    let now = (link.protocol(), link.agent_version().to_string());
    if spoken.as_ref() != Some(&now) {
        tracing::info!(
            "speaking protocol {} with {} (agent {})",
            now.0,
            p.host,
            now.1
        );
        p.metrics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .agents
            .insert(p.host.clone(), (now.1.clone(), now.0));
        *spoken = Some(now);
    }
    // Commands queued while connecting come first: the desired state sent below must be
    // the newest one, and a Disconnect queued meanwhile still holds.
    loop {
        match cmds.try_recv() {
            Ok(LinkCmd::Disconnect) => {
                tracing::warn!("dropping the new connection: this agent's lease must run out");
                return SessionEnded::Disconnected;
            }
            Ok(LinkCmd::Isolate) => {
                tracing::warn!(
                    "dropping the new connection: held down while this agent's lease runs out"
                );
                return SessionEnded::Isolated;
            }
            Ok(LinkCmd::Release) => {}
            Ok(LinkCmd::Desired(d)) => *desired = Some(d),
            Ok(cmd) => absorb(cmd, desired, events, &p.host).await,
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => return SessionEnded::Shutdown,
        }
    }
    *reported_down = false;
    // request id -> (core action id, deadline)
    let mut pending: HashMap<u32, (u64, Instant)> = HashMap::new();
    let ended = connected(p, cmds, desired, events, &mut pending, link, t).await;
    // Actions in flight on a dropped link get an outcome: the core must not wait forever.
    for (_, (id, _)) in pending.drain() {
        fail_action(
            events,
            &p.host,
            id,
            "the agent link dropped before a result",
        )
        .await;
    }
    ended
}

async fn connected(
    p: &LinkParams,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    desired: &mut Option<DesiredState>,
    events: &mpsc::Sender<Event>,
    pending: &mut HashMap<u32, (u64, Instant)>,
    mut link: AgentLink,
    t: Duration,
) -> SessionEnded {
    let lost =
        |e: LinkError, last_reply: Instant| SessionEnded::Lost(crate::error_chain(&e), last_reply);
    // The desired state goes first, before any heartbeat renews a lease.
    if let Some(d) = desired.as_ref() {
        if let Err(e) = link.queue(&Message::DesiredState(d.clone()), 0) {
            return SessionEnded::Failed(format!(
                "encoding the desired state: {}",
                crate::error_chain(&e)
            ));
        }
    }
    let mut last_reply = Instant::now();
    // The last view told to the core, and when.
    let mut forwarded: Option<(AgentView, Instant)> = None;
    // The first heartbeat goes at once; then every link beats on the term's one grid
    // (`LinkParams::beat`): a single timer wake-up sends every heartbeat of a period and
    // the answers come back together, instead of a wake-up per link. After a stall the
    // next beat is the grid's next (Skip keeps the grid; no burst of missed ones).
    let epoch = desired.as_ref().map(|d| d.epoch).unwrap_or(0);
    let _ = link.queue(&Message::Heartbeat(Heartbeat { epoch }), 0);
    let now = Instant::now();
    let mut hb = tokio::time::interval_at(
        super::clock::on_grid(p.beat, now, p.heartbeat_interval),
        p.heartbeat_interval,
    );
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reassert = tokio::time::interval_at(
        super::clock::on_grid(p.beat, now + REASSERT / 2, REASSERT),
        REASSERT,
    );
    reassert.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if link.has_queued() {
            if let Err(e) = link.flush(t).await {
                return lost(e, last_reply);
            }
        }
        // Biased, commands first: a Disconnect that waits while this task was not
        // running (one thread serves every link) wins over a heartbeat that became due
        // meanwhile; such a heartbeat could renew a lease the core already relies on
        // running out (docs/fencing.md). The agent's frames come before the heartbeat's
        // silence test, so an answer that arrived during such a wait counts. (An agent
        // sends only answers and probe events: its frames cannot starve the heartbeat.)
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                None => return SessionEnded::Shutdown,
                Some(LinkCmd::Desired(d)) => {
                    let _ = link.queue(&Message::DesiredState(d.clone()), 0);
                    *desired = Some(d);
                }
                Some(LinkCmd::Action { id, action, deadline }) => {
                    let req = link.next_request_id();
                    let ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
                    let _ = link.queue(&Message::Action(ActionRequest { action, deadline_ms: ms }), req);
                    pending.insert(req, (id, Instant::now() + deadline + Duration::from_secs(2)));
                }
                Some(LinkCmd::Query) => {
                    let _ = link.queue(&Message::StatusQuery, 0);
                }
                Some(LinkCmd::Disconnect) => {
                    tracing::warn!("dropping the connection: this agent's lease must run out");
                    return SessionEnded::Disconnected;
                }
                Some(LinkCmd::Isolate) => {
                    tracing::warn!("dropping the connection and holding it down: the agent and ping are silent, its lease runs out meanwhile");
                    return SessionEnded::Isolated;
                }
                Some(LinkCmd::Release) => {}
            },
            got = link.recv() => {
                let (request_id, msg) = match got {
                    Ok(r) => (r.request_id, r.message),
                    Err(e) => {
                        if matches!(e, LinkError::Conn { source: ConnError::Frame(_), .. }) {
                            tracing::error!(error = %crate::error_chain(&e), "bad frame from the agent: dropping the connection");
                        }
                        return lost(e, last_reply);
                    }
                };
                last_reply = Instant::now();
                let ev = match msg {
                    Message::AgentHeartbeat(h) => {
                        let view = AgentView::from_heartbeat(&h);
                        let unchanged = forwarded.as_ref().is_some_and(|(v, at): &(AgentView, Instant)| {
                            v.same_but_uptime(&view) && at.elapsed() < HEARTBEAT_REFRESH
                        });
                        if unchanged {
                            None
                        } else {
                            forwarded = Some((view.clone(), Instant::now()));
                            Some(Event::AgentHeartbeat { host: p.host.clone(), view })
                        }
                    }
                    Message::Applied(a) => Some(Event::Applied { host: p.host.clone(), epoch: a.epoch, failures: a.failures }),
                    Message::StatusReport(r) => Some(Event::AgentStatus { host: p.host.clone(), report: r }),
                    Message::ProbeEvent(e) => Some(Event::Probe { host: p.host.clone(), kind: e.kind }),
                    Message::ActionResult(r) => pending.remove(&request_id).map(|(id, _)| Event::ActionDone {
                        host: p.host.clone(), id, outcome: r.outcome, detail: r.detail, position: r.position,
                    }),
                    Message::Error(e) => {
                        tracing::warn!(message = %e.message, "the agent reports an error");
                        None
                    }
                    other => {
                        tracing::warn!(msg = ?other.msg_type(), "unexpected message from the agent");
                        None
                    }
                };
                if let Some(ev) = ev {
                    if events.send(ev).await.is_err() {
                        return SessionEnded::Shutdown;
                    }
                }
            }
            _ = hb.tick() => {
                if last_reply.elapsed() > p.agent_timeout {
                    return SessionEnded::Lost(format!("no heartbeat answer for {:?}", last_reply.elapsed()), last_reply);
                }
                let epoch = desired.as_ref().map(|d| d.epoch).unwrap_or(0);
                let _ = link.queue(&Message::Heartbeat(Heartbeat { epoch }), 0);
                // Actions past their deadline are reported timed out, once.
                let now = Instant::now();
                let expired: Vec<u32> = pending.iter().filter(|(_, (_, d))| now > *d).map(|(r, _)| *r).collect();
                for r in expired {
                    if let Some((id, _)) = pending.remove(&r) {
                        let _ = events.send(Event::ActionDone {
                            host: p.host.clone(), id, outcome: ActionOutcome::TimedOut,
                            detail: "no result from the agent before the deadline".into(), position: None,
                        }).await;
                    }
                }
            }
            _ = reassert.tick() => {
                if let Some(d) = desired.as_ref() {
                    let _ = link.queue(&Message::DesiredState(d.clone()), 0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::max_backoff;
    use std::time::Duration;

    #[test]
    fn reconnects_come_well_within_the_lease() {
        let ms = Duration::from_millis;
        // The default lease (1 s; docs/operations.md: an agent back within 750 ms keeps
        // the writer role): attempts every 125 ms at the slowest.
        assert_eq!(max_backoff(ms(1000), ms(100)), ms(125));
        assert_eq!(max_backoff(ms(2000), ms(100)), ms(250));
        assert_eq!(max_backoff(ms(600), ms(100)), ms(100));
        assert_eq!(max_backoff(ms(60_000), ms(100)), ms(1000));
        assert_eq!(max_backoff(ms(600), ms(5000)), ms(1000));
    }
}
