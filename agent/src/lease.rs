//! Lease fencing: this host may hold the writer role only while the monitor that drives it
//! keeps renewing its lease.
//!
//! The lease is its own state with its own task (`server::lease_task`), apart from the
//! reconciler: the reconciler runs SQL (each statement bounded, a pass may run several),
//! and a fence queued behind it would lag the moment the monitor counts this host fenced.
//! At the deadline the task removes the writer VIPs through netlink first and only then
//! asks the reconciler for read_only and the session kill. The timing argument is in
//! docs/fencing.md.
//!
//! Who renews: only the session whose desired state the agent follows (a passive monitor,
//! or a second one started by mistake, keeps nothing alive), and nothing renews a fenced
//! lease. A fence closes every monitor session; only a desired state received on a session
//! that began after the fence lifts it, so no frame queued before the fence can undo it.
//!
//! In a fleet (`[coordination]`, [`Renewal::Etcd`]) the monitor renews nothing: the
//! agent's own etcd lease does (`crate::etcd`), so a dead leader stops no write. Monitor
//! sessions still choose the controlling session and lift a fence; a session of a term
//! lower than the highest seen controls nothing ([`Lease::enter_term`]).
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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

use crate::clock::Boot;
use mmm_common::timing::held_for;
pub use mmm_common::timing::margin;

/// Until when a renewal of the agent's etcd lease, sent at `sent` and answered with
/// `ttl`, lets this host write. etcd counts the lease's new TTL from when it handles the
/// renewal, which is after `sent`: its expiry is at least `sent + ttl`. The agent gives
/// the writer up a margin earlier still (covering the fence's own netlink work and the
/// clock rates of two machines), so it never holds it after etcd has let the lease go.
pub fn etcd_permit_until(sent: Boot, ttl: Duration) -> Boot {
    sent.after(held_for(ttl))
}

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

    /// Renewals are counted from when the agent reads them, but a frame may have waited in
    /// the socket while this process (or its host) was frozen: counted from the thaw, it
    /// would carry the deadline past the monitor's count, whichever way the monitor
    /// counts. So a gap of `gap` in the agent's own running (seen by
    /// [`Lease::watch_freezes`]'s thread, or by the next renewal, whichever runs first
    /// after the thaw) is taken for a freeze: every open session is told to close and
    /// renews nothing more; only a new one does. `gap` below the monitor's slack over the
    /// agent's deadline (`margin + heartbeat_interval`, docs/fencing.md) keeps a shorter
    /// freeze harmless.
    pub fn with_freeze_detection(mut self, gap: Duration) -> Lease {
        self.freeze_gap = Some(gap);
        self
    }

    /// Runs the freeze detection's clock on a thread of its own (a stalled runtime is a
    /// freeze too): it notes the agent running every quarter `gap`.
    pub fn watch_freezes(lease: std::sync::Arc<Lease>) {
        let Some(gap) = lease.freeze_gap else {
            return;
        };
        let tick = (gap / 4).max(Duration::from_millis(5));
        let spawned = std::thread::Builder::new()
            .name("lease-freeze".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                let mut s = lease.lock();
                lease.note_running(&mut s);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "freeze detection not started: frames that waited through a freeze could renew the lease");
        }
    }

    /// Notes the agent running now; true when it had not run for the freeze gap, in which
    /// case the open sessions are told to close and renew nothing more. `now` is the clock
    /// read the caller renews from, if it does: a renewal stamped from a later read could
    /// count time the freeze check never saw.
    fn note_running_at(&self, s: &mut State, now: Boot) -> bool {
        use std::sync::atomic::Ordering;
        let last = Boot(self.alive.swap(now.0, Ordering::Relaxed));
        let frozen = self.freeze_gap.is_some_and(|gap| {
            last.after(gap) < now && self.enforced && self.renewal == Renewal::Monitor
        });
        if frozen {
            tracing::warn!(
                gap_ms = (now.0 - last.0) / 1_000_000,
                "this agent did not run for a while (frozen?): open monitor sessions renew nothing more"
            );
            s.renew_from = s.next_session;
            s.controlling = None;
            self.kick.send_modify(|g| *g += 1);
        }
        frozen
    }

    fn note_running(&self, s: &mut State) -> bool {
        self.note_running_at(s, Boot::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new authenticated monitor session in `term` (the term's place in the order the
    /// agent accepted terms in, `Terms::admit`): its id, and the receiver that tells
    /// it to close; None when a later term was entered meanwhile (the caller then
    /// refuses the session). Subscribed after any kick already sent: a session is never
    /// closed by the term change that admitted it.
    pub fn new_session(&self, term: u64) -> Option<(u64, tokio::sync::watch::Receiver<u64>)> {
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
    pub fn enter_term(&self, term: u64) {
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

    /// Fences so far; give it back to [`Lease::renew_until`].
    pub fn fences(&self) -> u64 {
        self.lock().fences
    }

    /// The etcd lease was renewed: the permit holds until `until`, unless a fence
    /// happened since `fences` was read (a lease from before a fence renews nothing).
    /// Never moves the deadline back: the latest renewal wins.
    /// Refused too while a forced expiry (a lost etcd lease) waits for the lease task's
    /// judgement: a permit granted then would void the fence the loss calls for, and a
    /// monitor that revoked the lost lease counts this host fenced ([`Lease::settled`]).
    pub fn renew_until(&self, until: Boot, fences: u64) -> bool {
        let mut s = self.lock();
        if s.fences != fences || (self.enforced && s.expiries > *self.judged.borrow()) {
            return false;
        }
        self.etcd_renewed
            .store(Boot::now().0, std::sync::atomic::Ordering::Relaxed);
        if s.deadline.is_none_or(|d| d < until) {
            self.set_deadline(&mut s, Some(until));
        }
        true
    }

    /// etcd renewed the agent's own lease within `within` (a fleet agent that reaches etcd's
    /// majority; reported to the monitors, and it keeps the failsafe out).
    pub fn etcd_renewed_within(&self, within: Duration) -> bool {
        let at = Boot(self.etcd_renewed.load(std::sync::atomic::Ordering::Relaxed));
        at.0 != 0 && at.after(within) > Boot::now()
    }

    /// How long ago etcd last renewed the agent's own lease (None: never), for `/metrics`.
    pub fn etcd_renewed_ago(&self) -> Option<Duration> {
        let at = Boot(self.etcd_renewed.load(std::sync::atomic::Ordering::Relaxed));
        let now = Boot::now();
        (at.0 != 0).then(|| Duration::from_nanos(now.0.saturating_sub(at.0)))
    }

    /// The failsafe (crate::failsafe) allows the writer role until `until`: the permit runs
    /// on to then if it is still running, with no fence, in a fleet. Never revives an
    /// ended permit, never shortens one. Returns the time left when it extended it.
    pub fn failsafe_until(&self, until: Boot) -> Option<Duration> {
        let mut s = self.lock();
        let now = Boot::now();
        if self.renewal != Renewal::Etcd || !self.enforced || s.fence.is_some() {
            return None;
        }
        let running = s.deadline.filter(|d| d.left(now).is_some())?;
        if running >= until {
            return None;
        }
        self.set_deadline(&mut s, Some(until));
        until.left(now)
    }

    /// The permit ends now (the etcd lease is gone): the lease task is woken and fences
    /// a writer at once. Returns the expiry to wait for with [`Lease::judged`].
    pub fn expire_now(&self) -> u64 {
        let mut s = self.lock();
        s.expiries += 1;
        self.set_deadline(&mut s, None);
        s.expiries
    }

    /// Forced expiries so far; the lease task reads it before judging an expired lease.
    pub fn expiries(&self) -> u64 {
        self.lock().expiries
    }

    /// The lease task has judged every forced expiry up to `expiries`, and a passed
    /// deadline ([`Lease::judge_deadline`]).
    pub fn mark_judged(&self, expiries: u64) {
        self.judge_deadline();
        self.judged.send_if_modified(|j| {
            let newer = expiries > *j;
            *j = (*j).max(expiries);
            newer
        });
    }

    /// Waits (at most `within`) until the lease task has judged forced expiry `expiry`:
    /// a fence it causes is then counted in [`Lease::fences`], so a lease granted after
    /// this returns is never voided by the loss of the one before. Without enforcement
    /// nothing judges, and nothing needs to.
    pub async fn judged(&self, expiry: u64, within: Duration) -> bool {
        if !self.enforced {
            return true;
        }
        let mut rx = self.judged.subscribe();
        tokio::time::timeout(within, rx.wait_for(|j| *j >= expiry))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the lease task has judged every forced expiry so far: a fence the
    /// last loss calls for is then decided and counted in [`Lease::fences`]. Unbounded on
    /// purpose: a permit granted before that would void the fence. Without enforcement
    /// nothing judges, and nothing needs to.
    pub async fn settled(&self) {
        if !self.enforced {
            return;
        }
        let expiries = self.lock().expiries;
        let mut rx = self.judged.subscribe();
        let _ = rx.wait_for(|j| *j >= expiries).await;
    }

    /// Whether a forced expiry still waits for the lease task's judgement.
    pub fn expiry_pending(&self) -> bool {
        self.enforced && self.lock().expiries > *self.judged.borrow()
    }

    /// The deadline passed and the lease task has not judged it yet. A renewal read now
    /// may have waited in the socket while this process (or its whole host) was frozen:
    /// counted from now it would outlive the monitor's count (docs/fencing.md). So the
    /// lease task fences first if there is anything to fence, and only then may a
    /// renewal count again.
    fn unjudged_expiry(&self, s: &State, now: Boot) -> bool {
        let unjudged = self.enforced
            && matches!(s.deadline, Some(d) if d.left(now).is_none() && s.judged_deadline != Some(d));
        if unjudged {
            self.changed.notify_one();
        }
        unjudged
    }

    /// The lease task judged the passed deadline (nothing to fence): renewals count again,
    /// but only on sessions made from now on. The open ones are told to close: a frame
    /// still waiting in one (a writer order sent to a candidate that froze before reading
    /// it, and the heartbeats after it) would otherwise renew the lease and make a writer
    /// the monitor has long counted out; the monitor reconnects at once.
    fn judge_deadline(&self) {
        let mut s = self.lock();
        let passed = s.deadline.filter(|d| d.left(Boot::now()).is_none());
        if passed.is_none() || s.judged_deadline == passed {
            return;
        }
        s.judged_deadline = passed;
        if self.renewal == Renewal::Monitor {
            s.renew_from = s.next_session;
            s.controlling = None;
            self.kick.send_modify(|g| *g += 1);
        }
    }

    fn set_deadline(&self, s: &mut State, deadline: Option<Boot>) {
        s.deadline = deadline;
        if let Some(store) = &self.store {
            store.save(deadline.unwrap_or(Boot(0)));
        }
        self.changed.notify_one();
    }

    /// Time left, or None when expired (never None with fencing = "none").
    pub fn left(&self) -> Option<Duration> {
        if !self.enforced {
            return Some(Duration::MAX);
        }
        self.lock().deadline.and_then(|d| d.left(Boot::now()))
    }

    /// The deadline while the lease runs: what the lease task's CLOCK_BOOTTIME timer is
    /// armed with (None: expired; never None with fencing = "none").
    pub fn running_deadline(&self) -> Option<Boot> {
        if !self.enforced {
            return Some(Boot(u64::MAX));
        }
        self.lock()
            .deadline
            .filter(|d| d.left(Boot::now()).is_some())
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
        let left = match self.enforced {
            false => Duration::MAX,
            true => s
                .deadline
                .and_then(|d| d.left(Boot::now()))
                .unwrap_or_default(),
        };
        Ok(Permit { _gate: gate, left })
    }

    /// Decides the fence if the lease has expired and no fence holds yet. The caller holds
    /// the gate (from [`Lease::gate`]) and removes the writer VIPs while holding it.
    /// Returns the reason and the fence's stamp (every plan made before it dies).
    pub fn try_fence(&self, reason: impl FnOnce() -> String) -> Option<(String, Stamp)> {
        if !self.enforced {
            return None;
        }
        let mut s = self.lock();
        if s.fence.is_some() || s.deadline.and_then(|d| d.left(Boot::now())).is_some() {
            return None;
        }
        let reason = reason();
        s.fence = Some((reason.clone(), s.next_session - 1));
        s.fences += 1;
        s.controlling = None;
        s.judged_deadline = s.deadline;
        let stamp = Self::bump(&mut s);
        drop(s);
        self.kick.send_modify(|g| *g += 1);
        self.changed.notify_one();
        Some((reason, stamp))
    }

    pub async fn gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    pub fn enforced(&self) -> bool {
        self.enforced
    }

    pub fn length(&self) -> Duration {
        self.length
    }
}

/// The deadline on disk: `<boot id> <CLOCK_BOOTTIME ns>`, rewritten in place.
struct Store {
    file: File,
    boot_id: String,
    failed: std::sync::atomic::AtomicBool,
}

impl Store {
    fn open(path: &Path) -> io::Result<(Store, Option<Boot>)> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
            .trim()
            .to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let previous = std::fs::read_to_string(path).ok();
        let deadline = previous.as_deref().and_then(|text| {
            let (boot, ns) = text.trim().split_once(' ')?;
            (boot == boot_id).then(|| ns.parse().ok().map(Boot))?
        });
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok((
            Store {
                file,
                boot_id,
                failed: false.into(),
            },
            deadline,
        ))
    }

    /// Fixed width, so an in-place rewrite never leaves a longer old tail behind.
    fn save(&self, deadline: Boot) {
        let line = format!("{} {:020}\n", self.boot_id, deadline.0);
        if let Err(e) = self.file.write_all_at(line.as_bytes(), 0) {
            if !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "lease deadline not saved: a restart will start expired");
            }
        }
    }
}

/// The file name of `host`'s lease in `state_dir` (for tests and docs).
pub fn path(state_dir: &Path, host: &str) -> PathBuf {
    state_dir.join(format!("{host}.lease"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-lease-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_fresh_agent_starts_expired_and_only_the_controlling_session_renews() {
        let d = dir("fresh");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        assert!(
            lease.left().is_none(),
            "a fresh agent must not grant itself a lease"
        );
        let (a, _) = lease.new_session(0).unwrap();
        let (b, _) = lease.new_session(0).unwrap();
        assert!(
            !lease.on_heartbeat(a),
            "a heartbeat before any desired state renews nothing"
        );
        assert_eq!(lease.on_desired(a, false).map(|f| f.lifted), Ok(false));
        assert!(lease.left().is_some());
        assert!(lease.on_heartbeat(a));
        assert!(
            !lease.on_heartbeat(b),
            "another session's heartbeat must not renew"
        );
    }

    #[test]
    fn a_restarted_agent_resumes_its_deadline_instead_of_a_fresh_one() {
        let d = dir("restart");
        let first = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let (s, _) = first.new_session(0).unwrap();
        first.on_desired(s, false).unwrap();
        let left_before = first.left().unwrap();
        drop(first);
        let second = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let left_after = second.left().expect("the saved deadline holds");
        assert!(
            left_after <= left_before,
            "{left_after:?} > {left_before:?}"
        );
        // Another boot's deadline means nothing.
        std::fs::write(path(&d, "db1"), "another-boot 99999999999999999999\n").unwrap();
        let third = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        assert!(third.left().is_none());
    }

    #[test]
    fn a_fence_is_lifted_only_by_a_session_made_after_it() {
        let d = dir("fence");
        let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
        let (old, kicked) = lease.new_session(0).unwrap();
        lease.on_desired(old, false).unwrap();
        assert!(
            lease.try_fence(|| "test".into()).is_none(),
            "not expired yet"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            lease
                .try_fence(|| "expired".into())
                .map(|(r, _)| r)
                .as_deref(),
            Some("expired")
        );
        assert!(
            kicked.has_changed().unwrap(),
            "every session is told to close"
        );
        assert!(
            lease.try_fence(|| "again".into()).is_none(),
            "one fence at a time"
        );
        assert!(
            !lease.on_heartbeat(old),
            "a heartbeat contradicting the fence renews nothing"
        );
        assert!(
            lease.on_desired(old, false).is_err(),
            "a frame from before the fence lifts nothing"
        );
        let (new, _) = lease.new_session(0).unwrap();
        assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(true));
        assert!(lease.fenced().is_none() && lease.left().is_some());
    }

    #[test]
    fn a_renewal_read_after_the_deadline_waits_for_the_lease_task() {
        let d = dir("thaw");
        let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
        let (session, _) = lease.new_session(0).unwrap();
        lease.on_desired(session, false).unwrap();
        // Frozen past the deadline with a heartbeat waiting in the socket: read at the
        // thaw, it must not renew before the lease task had its say.
        std::thread::sleep(Duration::from_millis(60));
        assert!(!lease.on_heartbeat(session), "renewed an unjudged expiry");
        assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
        assert!(lease.left().is_none());
        // The lease task found nothing to fence (no writer VIP, read-only): the open
        // session is told to close and renews nothing more (what waits in it may be from
        // before the freeze); a new one renews.
        lease.mark_judged(lease.expiries());
        assert!(!lease.on_heartbeat(session));
        assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
        assert!(lease.left().is_none());
        let (new, _) = lease.new_session(0).unwrap();
        assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
        assert!(lease.left().is_some());
    }

    #[test]
    fn after_a_freeze_only_a_new_session_renews() {
        let d = dir("freeze");
        let lease = Lease::new(Duration::from_secs(4), true, Renewal::Monitor, &d, "db1")
            .with_freeze_detection(Duration::from_millis(100));
        let (session, kicked) = lease.new_session(0).unwrap();
        lease.on_desired(session, false).unwrap();
        assert!(lease.on_heartbeat(session), "running: heartbeats renew");
        // Not running for 150 ms (no watch thread here): the next frame read is taken for
        // one that waited through a freeze, though the deadline has not passed.
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !lease.on_heartbeat(session),
            "a frame read after a freeze renewed"
        );
        assert!(
            kicked.has_changed().unwrap(),
            "the open session is told to close"
        );
        assert_eq!(lease.on_desired(session, false), Err(NotFollowed::Stale));
        let (new, _) = lease.new_session(0).unwrap();
        assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
        assert!(lease.on_heartbeat(new));
    }

    #[test]
    fn fencing_none_never_expires_or_fences() {
        let lease = Lease::new(
            Duration::from_millis(1),
            false,
            Renewal::Monitor,
            &dir("none"),
            "db1",
        );
        assert!(lease.left().is_some());
        assert!(lease.try_fence(|| "x".into()).is_none());
    }

    #[test]
    fn in_a_fleet_only_the_etcd_lease_renews_and_a_fence_voids_its_renewals() {
        let d = dir("etcd");
        let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
        let (a, _) = lease.new_session(7).unwrap();
        assert_eq!(
            lease.on_desired(a, false).map(|f| f.lifted),
            Ok(false),
            "it still controls"
        );
        assert!(lease.left().is_none(), "a desired state renews nothing");
        assert!(!lease.on_heartbeat(a), "a heartbeat renews nothing");
        let before = lease.fences();
        assert!(lease.renew_until(Boot::now().after(Duration::from_millis(40)), before));
        assert!(lease.left().is_some());
        let expiry = lease.expire_now();
        assert!(
            lease.left().is_none(),
            "a lost etcd lease ends the permit at once"
        );
        assert!(lease.try_fence(|| "lost".into()).is_some());
        // As the lease task does once it has fenced.
        lease.mark_judged(expiry);
        assert!(
            !lease.renew_until(Boot::now().after(Duration::from_secs(1)), before),
            "the lease from before the fence renews nothing"
        );
        assert!(lease.left().is_none());
        assert!(lease.renew_until(Boot::now().after(Duration::from_secs(1)), lease.fences()));
    }

    #[test]
    fn a_higher_term_closes_the_sessions_of_lower_ones_and_not_its_own() {
        let d = dir("term");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let (old, old_kick) = lease.new_session(3).unwrap();
        lease.on_desired(old, false).unwrap();
        lease.enter_term(4);
        let (new, new_kick) = lease.new_session(4).unwrap();
        assert!(
            old_kick.has_changed().unwrap(),
            "the term-3 session is told to close"
        );
        assert!(!new_kick.has_changed().unwrap(), "the term-4 session stays");
        assert!(!lease.on_heartbeat(old));
        assert_eq!(lease.on_desired(old, false), Err(NotFollowed::TermOver));
        assert!(
            lease.new_session(3).is_none(),
            "a late term-3 handshake is refused"
        );
        assert_eq!(lease.on_desired(new, false).map(|f| f.lifted), Ok(false));
        lease.enter_term(2);
        assert!(
            !new_kick.has_changed().unwrap(),
            "a lower term changes nothing"
        );
    }

    #[test]
    fn the_etcd_permit_ends_before_etcd_expires_the_lease() {
        let sent = Boot(10_000_000_000);
        let ttl = Duration::from_secs(1);
        let until = etcd_permit_until(sent, ttl);
        assert!(until < sent.after(ttl));
        assert_eq!(until, Boot(10_750_000_000));
    }

    #[tokio::test]
    async fn a_forced_expiry_is_waited_for_until_the_lease_task_judged_it() {
        let d = dir("judged");
        let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
        let expiry = lease.expire_now();
        assert!(
            !lease.judged(expiry, Duration::from_millis(20)).await,
            "nothing judged it yet"
        );
        lease.mark_judged(lease.expiries());
        assert!(lease.judged(expiry, Duration::from_millis(20)).await);
        let unenforced = Lease::new(Duration::from_secs(1), false, Renewal::Etcd, &d, "db2");
        let e = unenforced.expire_now();
        assert!(
            unenforced.judged(e, Duration::ZERO).await,
            "without fencing nothing waits"
        );
    }

    #[tokio::test]
    async fn a_plan_dies_with_its_desired_state() {
        let d = dir("generation");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let (session, _) = lease.new_session(0).unwrap();
        let writer = lease.on_desired(session, false).unwrap().stamp;
        assert!(lease.current(writer));
        assert!(lease.permit(writer).await.is_ok());
        // The monitor sends another desired state (a demotion): the writer plan is over,
        // though the lease holds and no fence was decided.
        let demotion = lease.on_desired(session, false).unwrap().stamp;
        assert!(!lease.current(writer), "a superseded plan went on");
        assert_eq!(
            lease.permit(writer).await.err(),
            Some(Refused::Superseded),
            "a writer step of a superseded desired state was admitted"
        );
        assert!(lease.permit(demotion).await.is_ok());
        // An order that takes the writer role away supersedes too.
        lease.supersede_for(session).unwrap();
        assert!(!lease.current(demotion));
    }

    #[tokio::test]
    async fn a_step_planned_before_a_fence_never_runs_after_it() {
        // Issue 22: the writer's plan waited on a hung mysqld; meanwhile the lease ran
        // out, the fence removed the VIP, and the monitor's demotion on a new session
        // lifted the fence and renewed the lease. The old plan's AddVip then found a
        // valid lease and no fence, and took the VIP back.
        let d = dir("fence-gen");
        let lease = Lease::new(Duration::from_millis(40), true, Renewal::Monitor, &d, "db1");
        let (old, _) = lease.new_session(0).unwrap();
        let writer = lease.on_desired(old, false).unwrap().stamp;
        std::thread::sleep(Duration::from_millis(60));
        let (_, fence) = lease.try_fence(|| "expired".into()).unwrap();
        assert!(!lease.current(writer));
        assert_eq!(lease.permit(writer).await.err(), Some(Refused::Superseded));
        let (new, _) = lease.new_session(0).unwrap();
        let demotion = lease.on_desired(new, false).unwrap();
        assert!(demotion.lifted && lease.left().is_some() && lease.fenced().is_none());
        assert!(demotion.stamp.generation > fence.generation);
        assert_eq!(
            lease.permit(writer).await.err(),
            Some(Refused::Superseded),
            "the plan from before the fence took a writer step after the fence was lifted"
        );
        assert!(lease.permit(demotion.stamp).await.is_ok());
    }

    #[tokio::test]
    async fn a_later_term_stops_the_writer_steps_of_an_earlier_one() {
        let d = dir("term-gen");
        let lease = Lease::new(Duration::from_secs(1), true, Renewal::Etcd, &d, "db1");
        lease.enter_term(3);
        let (session, _) = lease.new_session(3).unwrap();
        assert!(lease.renew_until(Boot::now().after(Duration::from_secs(1)), lease.fences()));
        let writer = lease.on_desired(session, false).unwrap().stamp;
        assert_eq!(writer.term, 3);
        lease.set_wanted(Some(writer));
        assert!(lease.writer_wanted());
        lease.enter_term(4);
        // The etcd permit still runs: only the term says the order is over.
        assert!(lease.left().is_some());
        assert_eq!(lease.permit(writer).await.err(), Some(Refused::TermOver));
        assert!(!lease.writer_wanted());
    }

    #[tokio::test]
    async fn a_permit_holds_the_fence_off_and_says_how_long_the_lease_runs() {
        let d = dir("permit");
        let lease = Lease::new(Duration::from_secs(4), true, Renewal::Monitor, &d, "db1");
        let (session, _) = lease.new_session(0).unwrap();
        let stamp = lease.on_desired(session, false).unwrap().stamp;
        let permit = lease.permit(stamp).await.unwrap();
        assert!(permit.left <= Duration::from_secs(3) && permit.left > Duration::from_secs(2));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), lease.gate())
                .await
                .is_err(),
            "the fence could decide during a writer step"
        );
        drop(permit);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), lease.gate())
                .await
                .is_ok()
        );
        // Expired: refused as a missing permit (reported as self-fenced), not as stale.
        let short = Lease::new(Duration::from_millis(20), true, Renewal::Monitor, &d, "db2");
        let (s, _) = short.new_session(0).unwrap();
        let stamp = short.on_desired(s, false).unwrap().stamp;
        std::thread::sleep(Duration::from_millis(30));
        let refused = short.permit(stamp).await.err().unwrap();
        assert_eq!(refused, Refused::Expired);
        assert!(refused.is_permit() && !Refused::Superseded.is_permit());
    }

    #[tokio::test]
    async fn a_re_sent_desired_state_keeps_its_plan_and_nothing_else_does() {
        let d = dir("resend");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let (session, _) = lease.new_session(0).unwrap();
        let first = lease.on_desired(session, false).unwrap().stamp;
        // The monitor re-sends the same state: the plan under way for it goes on.
        assert_eq!(lease.on_desired(session, true).unwrap().stamp, first);
        assert!(lease.current(first));
        // Anything stamped since makes even the same state a new order.
        lease.supersede_for(session).unwrap();
        let again = lease.on_desired(session, true).unwrap().stamp;
        assert_ne!(again, first);
        assert_eq!(lease.permit(first).await.err(), Some(Refused::Superseded));
        assert!(lease.permit(again).await.is_ok());
    }

    #[tokio::test]
    async fn an_order_queued_in_a_deposed_terms_session_never_runs() {
        // Issue 22 item 3: an order that waited in a deposed monitor's socket is read
        // after a later term connected. It is refused, and a stamp taken before the term
        // changed admits no writer step after it.
        let d = dir("queued-order");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Monitor, &d, "db1");
        let (old, _) = lease.new_session(1).unwrap();
        lease.on_desired(old, false).unwrap();
        let lift = lease.supersede_for(old).unwrap();
        assert!(lease.term_leads(old));
        lease.enter_term(2);
        let (new, _) = lease.new_session(2).unwrap();
        assert!(
            !lease.term_leads(old),
            "a deposed term's session still leads"
        );
        assert_eq!(lease.supersede_for(old), Err(NotFollowed::TermOver));
        assert_eq!(lease.permit(lift).await.err(), Some(Refused::TermOver));
        assert!(lease.term_leads(new) && lease.supersede_for(new).is_ok());
    }

    #[tokio::test]
    async fn no_etcd_permit_while_a_lost_ones_fence_is_pending() {
        // Issue 22 item 3: etcd says the lease is gone (a monitor revoked it and counts
        // this host fenced). Until the lease task has judged that, no renewal counts: a
        // new lease's permit would otherwise extend the deadline past the fence.
        let d = dir("pending-fence");
        let lease = Lease::new(Duration::from_secs(5), true, Renewal::Etcd, &d, "db1");
        let fences = lease.fences();
        assert!(lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences));
        let expiry = lease.expire_now();
        assert!(lease.expiry_pending());
        assert!(
            !lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences),
            "a permit was granted while the lost one's fence was pending"
        );
        assert_eq!(lease.running_deadline(), None);
        let settled = tokio::time::timeout(Duration::from_millis(50), lease.settled()).await;
        assert!(
            settled.is_err(),
            "settled before the lease task judged the loss"
        );
        // The lease task judges (nothing held here, so no fence): renewals count again.
        lease.mark_judged(expiry);
        lease.settled().await;
        assert!(!lease.expiry_pending());
        assert!(lease.renew_until(Boot::now().after(Duration::from_secs(3)), fences));
        assert!(lease.running_deadline().is_some());
    }
}
