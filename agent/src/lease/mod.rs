//! Lease fencing: this host may hold the writer role only while the monitor that drives it
//! keeps renewing its lease.
//!
//! The lease is its own state with its own task (`server::lease_task`), apart from the
//! reconciler: the reconciler runs SQL (each statement bounded, a pass may run several),
//! and a fence queued behind it would lag the moment the monitor counts this host fenced.
//! At the deadline the task removes the writer VIPs through netlink first and only then
//! asks the reconciler for read_only and the session kill. The timing argument is in
//! docs/fencing.md. What the task makes of the lease at a moment is [`Lease::judge`], a
//! [`Verdict`] over this state with the time passed in (verdict.rs), so the rule is
//! tested without a runtime or a clock; when the permit has ended the task gets a
//! [`Judgement`] (judgement.rs) that holds the gate and is the only way to decide a fence
//! and to mark the ending judged.
//!
//! Who renews: only the session whose desired state the agent follows (a passive monitor,
//! or a second one started by mistake, keeps nothing alive), and nothing renews a fenced
//! lease. A fence closes every monitor session; only a desired state received on a session
//! that began after the fence lifts it, so no frame queued before the fence can undo it.
//!
//! In a fleet (`[coordination]`, [`Renewal::Etcd`]) the monitor renews nothing: the
//! agent's own etcd lease does (`crate::etcd`), so a dead leader stops no write. Monitor
//! sessions still choose the controlling session and lift a fence; a session of a term
//! lower than the highest seen controls nothing ([`Lease::enter_term`], called by
//! `crate::authority` with every term it accepts).
//!
//! Generations: every desired state accepted, every fence and every order that takes the
//! writer role away bumps a counter ([`Stamp`]). A plan is made under the stamp of the
//! desired state it serves, and dies the moment the counter moves on: a step of a
//! superseded state, or one planned before a fence, never runs after it
//! ([`Lease::current`]). A step that grants the writer role (a writer VIP added or
//! announced, read_only lifted) asks [`Lease::permit`] immediately before it touches the
//! kernel or the server: under the gate, the stamp, the term, the fence and the deadline
//! are checked at once.
//!
//! Restarts: the deadline is kept in `<state_dir>/<host>.lease` (with the boot id, since
//! CLOCK_BOOTTIME restarts at boot). A restarted agent resumes the deadline it had instead
//! of granting itself a fresh one; without a readable file it starts expired.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

use crate::clock::Boot;
use mmm_common::timing::held_for;
pub use mmm_common::timing::margin;

mod etcd_permit;
mod expiry;
mod freeze;
mod judgement;
mod store;
mod verdict;

#[cfg(test)]
mod tests;

pub use etcd_permit::etcd_permit_until;
pub use judgement::Judgement;
pub use store::path;
use store::Store;
pub use verdict::Verdict;

/// Why a desired state was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFollowed {
    #[error("self-fenced ({reason}); only a desired state from a monitor connection made after the fence lifts it")]
    StillFenced { reason: String },
    #[error("this session's term is over: a monitor of a later term has connected")]
    TermOver,
    #[error("the lease ran out, or this agent was frozen, while this session was open: what waits in it may be stale; only a new monitor connection renews the lease")]
    Stale,
}

/// The generation of the desired state a plan serves, and the monitor term it came in.
/// Taken when the state is accepted (not when the reconciler gets to it: a newer one may
/// be queued behind it by then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub generation: u64,
    pub term: u64,
}

/// A desired state followed: whether it ended a self-fence, and its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    pub lifted: bool,
    pub stamp: Stamp,
}

/// Why a writer-granting step was refused ([`Lease::permit`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a newer desired state, or a fence, superseded the one it was planned for")]
    Superseded,
    #[error(
        "a monitor of a later term has connected: the desired state it was planned for is over"
    )]
    TermOver,
    #[error("self-fenced ({0})")]
    Fenced(String),
    #[error("the lease has expired (no monitor renews it)")]
    Expired,
}

impl Refused {
    /// A permit this host lacks (reported as self-fenced while its writer role lasts),
    /// as opposed to an order overtaken by a newer one.
    pub fn is_permit(&self) -> bool {
        matches!(self, Refused::Fenced(_) | Refused::Expired)
    }
}

/// Leave to take one writer-granting step: the gate is held (no fence is decided) until
/// it is dropped, and the lease had `left` to run when it was given.
pub struct Permit<'a> {
    _gate: tokio::sync::MutexGuard<'a, ()>,
    pub left: Duration,
}

/// What renews the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The controlling monitor session's heartbeats and desired states (no fleet).
    Monitor,
    /// The agent's own etcd lease, through [`Lease::renew_until`] (a fleet).
    Etcd,
}

#[derive(Debug)]
struct State {
    /// None: expired (or never granted).
    deadline: Option<Boot>,
    /// The session whose desired state the agent follows.
    controlling: Option<u64>,
    /// Set while self-fenced: the reason, and the newest session id at the fence.
    fence: Option<(String, u64)>,
    /// Fences so far: a renewal granted before a fence must not count after it.
    fences: u64,
    /// Forced expiries so far ([`Lease::expire_now`]).
    expiries: u64,
    /// The passed deadline the lease task last judged (fenced, or found nothing to fence).
    judged_deadline: Option<Boot>,
    /// Sessions older than this renew nothing: they were open when the lease ran out, and
    /// frames still waiting in them may predate it (a frozen agent reads them at the thaw).
    renew_from: u64,
    next_session: u64,
    /// The highest monitor term accepted, and the first session id opened in it: older
    /// sessions belong to lower terms and control nothing.
    term: u64,
    term_from: u64,
    /// Bumped by every desired state followed, every fence and every demoting order.
    generation: u64,
    /// The stamp of the reconciler's desired state while it makes this host the writer.
    wanted: Option<Stamp>,
    /// The stamp the last desired state followed got.
    followed: Option<Stamp>,
}

pub struct Lease {
    /// The agent's own lease: the configured one less the margin.
    length: Duration,
    enforced: bool,
    renewal: Renewal,
    state: Mutex<State>,
    /// Wakes the lease task when the deadline moved or the fence changed.
    changed: Notify,
    /// Tells every monitor session to close (a fence happened): the generation only grows.
    kick: tokio::sync::watch::Sender<u64>,
    /// The forced expiries the lease task has judged (fenced, or found nothing to fence).
    judged: tokio::sync::watch::Sender<u64>,
    store: Option<Store>,
    /// A gap this long in the agent's own running means it was frozen ([`Lease::watch_freezes`]).
    freeze_gap: Option<Duration>,
    /// When the agent was last seen running (Boot nanoseconds).
    alive: std::sync::atomic::AtomicU64,
    /// Held while a writer VIP is added, and while the fence removes them: no addition can
    /// slip in between the fence's decision and its removal.
    gate: tokio::sync::Mutex<()>,
    /// When etcd last renewed the agent's own lease (Boot nanoseconds; 0: never).
    etcd_renewed: std::sync::atomic::AtomicU64,
}

impl Lease {
    /// `enforced` is false with `fencing = "none"`: the lease then never fences.
    pub fn new(
        lease: Duration,
        enforced: bool,
        renewal: Renewal,
        state_dir: &Path,
        host: &str,
    ) -> Lease {
        let path = state_dir.join(format!("{host}.lease"));
        let (store, deadline) = match Store::open(&path) {
            Ok((store, deadline)) => (Some(store), deadline),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "lease deadline cannot be kept across restarts: starting expired, and a restart fences a writer");
                (None, None)
            }
        };
        match deadline.and_then(|d| d.left(Boot::now())) {
            Some(left) => {
                tracing::info!(?left, "lease resumed from before the restart")
            }
            None => match renewal {
                Renewal::Monitor => {
                    tracing::info!("lease starts expired: a writer role needs the monitor first")
                }
                Renewal::Etcd => tracing::info!(
                    "lease starts expired: a writer role needs the agent's etcd lease first"
                ),
            },
        }
        Lease {
            length: held_for(lease),
            enforced,
            renewal,
            state: Mutex::new(State {
                deadline,
                controlling: None,
                fence: None,
                fences: 0,
                expiries: 0,
                judged_deadline: None,
                renew_from: 0,
                next_session: 1,
                term: 0,
                term_from: 1,
                generation: 0,
                wanted: None,
                followed: None,
            }),
            changed: Notify::new(),
            kick: tokio::sync::watch::Sender::new(0),
            judged: tokio::sync::watch::Sender::new(0),
            store,
            freeze_gap: None,
            alive: std::sync::atomic::AtomicU64::new(Boot::now().0),
            gate: tokio::sync::Mutex::new(()),
            etcd_renewed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new authenticated monitor session in `term` (the term's place in the order the
    /// agent accepted terms in, `Terms::admit`): its id, and the receiver that tells
    /// it to close; None when a later term was entered meanwhile (the caller then
    /// refuses the session). Subscribed after any kick already sent: a session is never
    /// closed by the term change that admitted it. Called by `crate::authority` only.
    pub(crate) fn new_session(
        &self,
        term: u64,
    ) -> Option<(u64, tokio::sync::watch::Receiver<u64>)> {
        let mut s = self.lock();
        if term < s.term {
            return None;
        }
        let id = s.next_session;
        s.next_session += 1;
        Some((id, self.kick.subscribe()))
    }

    /// A monitor of a higher term was accepted: every open session (all of lower terms)
    /// is told to close and controls nothing from now on. A lower term changes nothing.
    /// Called by `crate::authority` only, with the term it accepted.
    pub(crate) fn enter_term(&self, term: u64) {
        let mut s = self.lock();
        if term <= s.term {
            return;
        }
        s.term = term;
        s.term_from = s.next_session;
        s.controlling = None;
        drop(s);
        self.kick.send_modify(|g| *g += 1);
    }

    /// A desired state arrived on `session`: it becomes the controlling session and the
    /// lease is renewed, unless a fence holds that this session cannot lift. Its stamp
    /// supersedes every plan made before: give it to the reconciler with the state.
    /// `unchanged`: it is the one followed last (the monitor re-sends its desired states
    /// now and then); if nothing was stamped since, it keeps that one's stamp, and the
    /// plan under way for it goes on.
    pub fn on_desired(&self, session: u64, unchanged: bool) -> Result<Followed, NotFollowed> {
        let mut s = self.lock();
        if session < s.term_from {
            return Err(NotFollowed::TermOver);
        }
        let now = Boot::now();
        if self.renewal == Renewal::Monitor
            && (self.note_running_at(&mut s, now)
                || session < s.renew_from
                || self.unjudged_expiry(&s, now))
        {
            return Err(NotFollowed::Stale);
        }
        let mut lifted = false;
        if let Some((reason, newest)) = &s.fence {
            if session <= *newest {
                return Err(NotFollowed::StillFenced {
                    reason: reason.clone(),
                });
            }
            s.fence = None;
            lifted = true;
        }
        s.controlling = Some(session);
        if self.renewal == Renewal::Monitor {
            self.set_deadline(&mut s, Some(now.after(self.length)));
        }
        let now = Stamp {
            generation: s.generation,
            term: s.term,
        };
        let stamp = match s.followed {
            Some(last) if unchanged && last == now => last,
            _ => Self::bump(&mut s),
        };
        s.followed = Some(stamp);
        Ok(Followed { lifted, stamp })
    }

    fn bump(s: &mut State) -> Stamp {
        s.generation += 1;
        Stamp {
            generation: s.generation,
            term: s.term,
        }
    }

    /// An order that came on `session` (a demotion, read_only forced or lifted): every
    /// plan made before it dies; its stamp goes with the order to the reconciler. Refused
    /// when the session's term is over (a monitor of a later term connected since): an
    /// order that waited in a deposed monitor's socket must not run, and never under the
    /// later term's stamp.
    pub fn supersede_for(&self, session: u64) -> Result<Stamp, NotFollowed> {
        let mut s = self.lock();
        if session < s.term_from {
            return Err(NotFollowed::TermOver);
        }
        Ok(Self::bump(&mut s))
    }

    /// Whether `session`'s term still leads (no monitor of a later term connected since).
    pub fn term_leads(&self, session: u64) -> bool {
        session >= self.lock().term_from
    }

    /// Whether a plan made under `stamp` may still run: no desired state, fence or
    /// demoting order came since.
    pub fn current(&self, stamp: Stamp) -> bool {
        self.lock().generation == stamp.generation
    }

    /// The reconciler's desired state makes this host the writer (`Some`, its stamp), or
    /// not: what [`Lease::writer_wanted`] answers from.
    pub fn set_wanted(&self, stamp: Option<Stamp>) {
        self.lock().wanted = stamp;
    }

    /// Whether the current desired state wants this host writable and it holds a valid
    /// permit for it now. Anything else that finds the server writable makes it read-only.
    pub fn writer_wanted(&self) -> bool {
        let s = self.lock();
        s.wanted.is_some_and(|w| self.refusal(&s, w).is_none())
    }

    /// Why a writer-granting step of `stamp` may not run now, if it may not.
    fn refusal(&self, s: &State, stamp: Stamp) -> Option<Refused> {
        if s.generation != stamp.generation {
            return Some(Refused::Superseded);
        }
        if s.term != stamp.term {
            return Some(Refused::TermOver);
        }
        if !self.enforced {
            return None;
        }
        if let Some((reason, _)) = &s.fence {
            return Some(Refused::Fenced(reason.clone()));
        }
        match s.deadline.and_then(|d| d.left(Boot::now())) {
            Some(_) => None,
            None => Some(Refused::Expired),
        }
    }

    /// A heartbeat arrived on `session`; true when it renewed the lease.
    pub fn on_heartbeat(&self, session: u64) -> bool {
        let mut s = self.lock();
        if self.renewal != Renewal::Monitor || s.fence.is_some() || s.controlling != Some(session) {
            return false;
        }
        let now = Boot::now();
        if self.note_running_at(&mut s, now)
            || session < s.renew_from
            || self.unjudged_expiry(&s, now)
        {
            return false;
        }
        self.set_deadline(&mut s, Some(now.after(self.length)));
        true
    }

    pub fn fenced(&self) -> Option<String> {
        self.lock().fence.as_ref().map(|(r, _)| r.clone())
    }

    /// Waits until the deadline moves or the fence changes.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Admits one writer-granting step of a plan made under `stamp`: its desired state is
    /// still the newest, its term still leads, no fence holds and the lease runs. The
    /// permit holds the gate, so no fence is decided until the step is done (and drops
    /// it: a step that waits on SQL must not hold the fence off; [`Permit::left`] bounds
    /// what it may grant instead).
    pub async fn permit(&self, stamp: Stamp) -> Result<Permit<'_>, Refused> {
        let gate = self.gate.lock().await;
        let s = self.lock();
        if let Some(refused) = self.refusal(&s, stamp) {
            return Err(refused);
        }
        let left = if self.enforced {
            s.deadline
                .and_then(|d| d.left(Boot::now()))
                .unwrap_or_default()
        } else {
            Duration::MAX
        };
        Ok(Permit { _gate: gate, left })
    }

    pub fn enforced(&self) -> bool {
        self.enforced
    }

    pub fn length(&self) -> Duration {
        self.length
    }
}
