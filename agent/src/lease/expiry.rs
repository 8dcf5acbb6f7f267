//! Forced expiries and the deadline: the permit ended at once (a lost etcd lease), the
//! waits for the lease task's judgement of it ([`Lease::judged`], [`Lease::settled`]),
//! and the deadline's bookkeeping. A renewal read after a passed deadline waits for that
//! judgement too (docs/fencing.md); the judgement itself is judgement.rs.

use std::time::Duration;

use super::{Lease, State};
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
}
