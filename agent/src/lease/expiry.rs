//! The deadline and its judgement: when the lease ran out, whether the lease task has
//! judged it (fenced, or found nothing to fence), and the fence decision itself. A renewal
//! read after a passed deadline waits for that judgement (docs/fencing.md).

use std::time::Duration;

use super::{Lease, Renewal, Stamp, State, Verdict};
use crate::clock::Boot;

impl Lease {
    /// The permit ends now (the etcd lease is gone): the lease task is woken and fences
    /// a writer at once. Returns the expiry to wait for with [`Lease::judged`].
    pub fn expire_now(&self) -> u64 {
        let mut s = self.lock();
        s.expiries += 1;
        self.set_deadline(&mut s, None);
        s.expiries
    }

    /// The lease task has judged every forced expiry up to `expiries` (the count its
    /// [`Verdict`] carried), and a passed deadline ([`Lease::judge_deadline`]).
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
    pub(super) fn unjudged_expiry(&self, s: &State, now: Boot) -> bool {
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

    pub(super) fn set_deadline(&self, s: &mut State, deadline: Option<Boot>) {
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

    /// Decides the fence if the lease has expired and no fence holds yet (the verdict is
    /// [`Verdict::Fence`] now). The caller holds
    /// the gate (from [`Lease::gate`]) and removes the writer VIPs while holding it.
    /// Returns the reason and the fence's stamp (every plan made before it dies).
    pub fn try_fence(&self, reason: impl FnOnce() -> String) -> Option<(String, Stamp)> {
        let mut s = self.lock();
        if !matches!(self.judge_locked(&s, Boot::now()), Verdict::Fence { .. }) {
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
}
