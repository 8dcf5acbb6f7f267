//! The lease task's judgement of an ended permit, as one value: [`Lease::judgement`]
//! answers the task's one question at a moment (does the permit run?) and, when it has
//! ended, hands over a [`Judgement`] that holds what the decision needs: the gate while a
//! fence may be decided (no writer VIP is added between the decision and the removal),
//! and the forced expiries it covers. [`Judgement::done`] is the only way to tell the
//! lease they are judged, after the gate is let go, so the order the fence depends on
//! (decide, remove, release, then let renewals and new etcd leases count) is the type's,
//! not each caller's (docs/fencing.md).

use super::{Lease, Renewal, Stamp, Verdict};
use crate::clock::Boot;

/// An ended permit being judged by the lease task. Dropped without [`Judgement::done`]
/// (the task stopped midway), it judges nothing: whoever waits for the judgement keeps
/// waiting, which is the safe side of a fence that may not have happened.
#[must_use = "a judgement that is not done holds the gate and leaves its expiries unjudged"]
pub struct Judgement<'a> {
    lease: &'a Lease,
    expiries: u64,
    /// Held while a fence may still be decided ([`Verdict::Fence`]); None when a fence
    /// already holds ([`Verdict::Fenced`]) and there is nothing more to take away.
    gate: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Lease {
    /// The lease at `now` for its task: `Err(until)` while the permit runs (nothing to
    /// judge before `until`, unless the lease changes), else the judgement to make, with
    /// the gate taken when no fence holds yet.
    pub async fn judgement(&self, now: Boot) -> Result<Judgement<'_>, Boot> {
        match self.judge(now) {
            Verdict::Keep { until } => Err(until),
            Verdict::Fence { expiries } => Ok(Judgement {
                lease: self,
                expiries,
                gate: Some(self.gate.lock().await),
            }),
            Verdict::Fenced { expiries } => Ok(Judgement {
                lease: self,
                expiries,
                gate: None,
            }),
        }
    }

    /// Decides the fence if the lease has expired and no fence holds yet (the verdict is
    /// [`Verdict::Fence`] now, read again under the state's lock: a renewal while the
    /// gate was awaited keeps the permit). The caller holds the gate and removes the
    /// writer VIPs while holding it; outside tests that caller is [`Judgement::fence`].
    /// Returns the reason and the fence's stamp (every plan made before it dies).
    pub(super) fn try_fence(&self, reason: impl FnOnce() -> String) -> Option<(String, Stamp)> {
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

    /// Every forced expiry up to `expiries` is judged, and a passed deadline
    /// ([`Lease::judge_deadline`]). Outside tests only [`Judgement::done`] calls it.
    pub(super) fn mark_judged(&self, expiries: u64) {
        self.judge_deadline();
        self.judged.send_if_modified(|j| {
            let newer = expiries > *j;
            *j = (*j).max(expiries);
            newer
        });
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
}

impl Judgement<'_> {
    /// No fence holds yet: the caller looks at what this host holds (under the gate) and
    /// calls [`Judgement::fence`] if anything a writer holds is there.
    pub fn may_fence(&self) -> bool {
        self.gate.is_some()
    }

    /// Decides the fence (None when a fence already held, or a renewal came first). The
    /// gate stays held until [`Judgement::done`]: remove the writer VIPs before that.
    pub fn fence(&self, reason: impl FnOnce() -> String) -> Option<(String, Stamp)> {
        self.gate.as_ref()?;
        self.lease.try_fence(reason)
    }

    /// The judgement is made: the gate is let go, then its expiries are marked judged
    /// (a renewal read after the deadline, and a new etcd lease, may count from now on).
    pub fn done(self) {
        let Judgement {
            lease,
            expiries,
            gate,
        } = self;
        drop(gate);
        lease.mark_judged(expiries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lease(tag: &str) -> Lease {
        let d = std::env::temp_dir().join(format!("mmm-judgement-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Lease::new(Duration::from_secs(5), true, Renewal::Etcd, &d, "db1")
    }

    async fn gate_free(lease: &Lease) -> bool {
        tokio::time::timeout(Duration::from_millis(20), lease.gate.lock())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_judgement_holds_the_gate_until_done_and_only_done_marks_it_judged() {
        let lease = lease("gate");
        let expiry = lease.expire_now();
        let j = lease.judgement(Boot::now()).await.ok().unwrap();
        assert!(j.may_fence());
        assert!(!gate_free(&lease).await, "a writer step could slip in");
        assert!(lease.expiry_pending());
        let (reason, _) = j.fence(|| "lost".into()).unwrap();
        assert_eq!(reason, "lost");
        assert!(!gate_free(&lease).await, "the gate went before the removal");
        assert!(!lease.judged(expiry, Duration::ZERO).await);
        j.done();
        assert!(gate_free(&lease).await);
        assert!(lease.judged(expiry, Duration::ZERO).await);
    }

    #[tokio::test]
    async fn a_judgement_dropped_midway_judges_nothing() {
        let lease = lease("dropped");
        let expiry = lease.expire_now();
        drop(lease.judgement(Boot::now()).await.ok().unwrap());
        assert!(gate_free(&lease).await);
        assert!(lease.expiry_pending(), "a fence that may not have happened");
        assert!(!lease.judged(expiry, Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn a_fenced_lease_is_judged_without_the_gate_and_fences_no_more() {
        let lease = lease("fenced");
        let first = lease.judgement(Boot::now()).await.ok().unwrap();
        assert!(first.fence(|| "expired".into()).is_some());
        first.done();
        let expiry = lease.expire_now();
        let again = lease.judgement(Boot::now()).await.ok().unwrap();
        assert!(!again.may_fence());
        assert!(gate_free(&lease).await, "a fence that holds takes no gate");
        assert!(again.fence(|| "again".into()).is_none());
        again.done();
        assert!(lease.judged(expiry, Duration::ZERO).await);
    }

    #[tokio::test]
    async fn a_running_lease_gives_its_deadline_and_no_judgement() {
        let lease = lease("running");
        let until = Boot::now().after(Duration::from_secs(3));
        assert!(lease.renew_until(until, lease.fences()));
        assert_eq!(lease.judgement(Boot::now()).await.err(), Some(until));
        assert!(gate_free(&lease).await);
    }
}
