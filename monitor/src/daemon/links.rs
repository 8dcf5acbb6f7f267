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
    let mut outbox = super::outbox::Outbox::default();
    let ended = connected(p, cmds, desired, events, &mut pending, &mut outbox, link, t).await;
    // What the agent said before the link ended reaches the core before the link's end.
    if !matches!(ended, SessionEnded::Shutdown) {
        for ev in outbox.take_all() {
            if events.send(ev).await.is_err() {
                return SessionEnded::Shutdown;
            }
        }
    }
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

#[allow(clippy::too_many_arguments)]
async fn connected(
    p: &LinkParams,
    cmds: &mut mpsc::Receiver<LinkCmd>,
    desired: &mut Option<DesiredState>,
    events: &mpsc::Sender<Event>,
    pending: &mut HashMap<u32, (u64, Instant)>,
    outbox: &mut super::outbox::Outbox,
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
        // The core's events go next, as soon as its channel has room; while it has none
        // the heartbeats go on (daemon/outbox.rs).
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
            delivered = outbox.deliver(events) => {
                if delivered.is_err() {
                    return SessionEnded::Shutdown;
                }
            }
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
                    outbox.post(ev);
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
                        outbox.post(Event::ActionDone {
                            host: p.host.clone(), id, outcome: ActionOutcome::TimedOut,
                            detail: "no result from the agent before the deadline".into(), position: None,
                        });
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
    use super::{max_backoff, run, LinkCmd, LinkParams};
    use crate::core::Event;
    use mmm_common::config::ClusterKey;
    use mmm_common::proto::io::{read_frame, write_frames};
    use mmm_common::proto::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn heartbeat(applied_epoch: u32) -> AgentHeartbeat {
        AgentHeartbeat {
            applied_epoch,
            uptime_s: 1,
            flags: hb_flags::READ_ONLY | hb_flags::MYSQL_UP,
            probe: ProbeState::Off,
            source: None,
            held_vips: vec![],
        }
    }

    const T: Duration = Duration::from_secs(5);

    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;

    /// The agent's side of the link's connection: accepted and authenticated.
    async fn accept_link(
        listener: &tokio::net::TcpListener,
        key: &ClusterKey,
    ) -> (Reader, Writer, FrameBuffer, Session) {
        let (s, _) = listener.accept().await.expect("the link connects");
        let (mut r, mut w) = s.into_split();
        let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
        let mut hs = AgentHandshake::new(key, "db1", fresh_nonce().expect("nonce"));
        let hello = read_frame(&mut r, &mut buf, T).await.expect("hello");
        write_frames(&mut w, &hs.on_hello(&hello).expect("hello"), T)
            .await
            .expect("challenge");
        let auth = read_frame(&mut r, &mut buf, T).await.expect("auth");
        let (session, welcome) = hs.on_auth(&auth, "sim").expect("auth");
        write_frames(&mut w, &welcome, T).await.expect("welcome");
        (r, w, buf, session)
    }

    /// A listener for the simulated agent, its key, and a link to it heartbeating every
    /// 10 ms that reports to `events`.
    async fn link_to_agent(
        events: mpsc::Sender<Event>,
    ) -> (
        tokio::net::TcpListener,
        ClusterKey,
        mpsc::Sender<LinkCmd>,
        tokio::task::JoinHandle<()>,
    ) {
        let hex = ClusterKey::generate_hex().expect("key");
        let key = ClusterKey::from_hex(&hex).expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (cmds, cmd_rx) = mpsc::channel::<LinkCmd>(4);
        let p = LinkParams {
            host: "db1".into(),
            addr: listener.local_addr().expect("addr"),
            key: key.clone(),
            monitor_name: "mon".into(),
            term: Term::NONE,
            heartbeat_interval: Duration::from_millis(10),
            beat: tokio::time::Instant::now(),
            agent_timeout: T,
            lease: Duration::from_secs(1),
            io_timeout: T,
            clock: crate::daemon::Clock::new(),
            metrics: Default::default(),
        };
        (listener, key, cmds, tokio::spawn(run(p, cmd_rx, events)))
    }

    /// A simulated agent that answers every heartbeat with a view that differs from the
    /// last (each answer is news for the core) and counts the heartbeats.
    async fn agent(listener: tokio::net::TcpListener, key: ClusterKey, beats: Arc<AtomicU64>) {
        let t = T;
        let (mut r, mut w, mut buf, mut session) = accept_link(&listener, &key).await;
        loop {
            let Ok(f) = read_frame(&mut r, &mut buf, t).await else {
                return;
            };
            if let Ok(Message::Heartbeat(_)) = session.opener.open(&f) {
                let n = beats.fetch_add(1, Ordering::Relaxed) + 1;
                let reply = Message::AgentHeartbeat(heartbeat(n as u32));
                let frames = session
                    .sealer
                    .seal(&reply, f.header.request_id, FLAG_RESPONSE)
                    .expect("seal");
                if write_frames(&mut w, &frames, t).await.is_err() {
                    return;
                }
            }
        }
    }

    /// An agent that reports mysqld's death and then goes away while the core's channel
    /// is full: the core learns of the death before it learns the agent is unreachable.
    #[tokio::test]
    async fn what_waited_for_the_core_comes_before_the_link_s_end() {
        let (events, mut core) = mpsc::channel::<Event>(1);
        // Full before the link starts.
        events.try_send(Event::Tick).expect("room for one");
        let (listener, key, _cmds, link) = link_to_agent(events).await;
        let t = T;
        let (mut r, mut w, mut buf, mut session) = accept_link(&listener, &key).await;
        let died = Message::ProbeEvent(ProbeEvent {
            kind: ProbeEventKind::ProcessExit,
            tgid: 42,
            port: 3306,
            ktime_ns: 1,
        });
        let frames = session.sealer.seal(&died, 0, 0).expect("seal");
        write_frames(&mut w, &frames, t)
            .await
            .expect("the probe event");
        // Read until the link has surely taken the frame, then go away, and let the link
        // see the end before the core reads anything (had the core room earlier, the
        // event would go the usual way and this would test nothing).
        let _ = read_frame(&mut r, &mut buf, t).await;
        drop((r, w));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut seen = Vec::new();
        while !seen.contains(&"unreachable") {
            match tokio::time::timeout(t, core.recv()).await {
                Ok(Some(Event::Probe { .. })) => seen.push("probe"),
                Ok(Some(Event::AgentUnreachable { .. })) => seen.push("unreachable"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        assert_eq!(seen.first(), Some(&"probe"), "{seen:?}");
        assert!(seen.contains(&"unreachable"), "{seen:?}");
        link.abort();
    }

    /// The core's channel full (a core far behind): the link goes on heartbeating, and
    /// what waits for the core is the newest view, not every one.
    #[tokio::test]
    async fn a_core_that_falls_behind_does_not_hold_up_the_heartbeats() {
        let (events, mut core) = mpsc::channel::<Event>(1);
        let (listener, key, cmds, link) = link_to_agent(events).await;
        let beats = Arc::new(AtomicU64::new(0));
        tokio::spawn(agent(listener, key, beats.clone()));
        // The first event fills the channel, and the core reads nothing for a while.
        let full = tokio::time::Instant::now() + Duration::from_secs(5);
        while core.capacity() > 0 && tokio::time::Instant::now() < full {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(core.capacity(), 0, "the link sent the core nothing");
        // Blocked on the core, the link would send none (bounded only so that the test
        // ends: the heartbeats come every 10 ms).
        let before = beats.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while beats.load(Ordering::Relaxed) < before + 5 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = beats.load(Ordering::Relaxed) - before;
        assert!(
            during >= 5,
            "{during} heartbeats while the core's channel was full"
        );
        assert_eq!(core.capacity(), 0, "the core's channel had room meanwhile");
        // The core catches up: after what filled the channel comes the newest view, not
        // the oldest of those that waited.
        let newest = u32::try_from(beats.load(Ordering::Relaxed)).expect("few beats");
        let first = core.recv().await;
        assert!(first.is_some(), "the link is gone");
        match tokio::time::timeout(Duration::from_secs(5), core.recv()).await {
            Ok(Some(Event::AgentHeartbeat { view, .. })) => assert!(
                view.applied_epoch + 2 >= newest,
                "a stale view waited for the core: {} of {newest}",
                view.applied_epoch
            ),
            other => panic!("no view after the channel had room: {other:?}"),
        }
        drop(cmds);
        let _ = link.await;
    }

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
