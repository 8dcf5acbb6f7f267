//! The lease task's one question, with the time passed in: does the permit run, and if it
//! does not, is a fence still to be decided? Pure over the lease's state, so the rule is
//! tested without tokio or a clock (below); the lease task (`crate::fence`) acts on it
//! through a [`super::Judgement`], which decides a fence only when it says so.
//!
//! What stays with the lease task: reading what this host holds and removing it under
//! the judgement's gate, then [`super::Judgement::done`], which marks the forced expiries
//! the verdict counted as judged. A renewal that a forced expiry holds up waits for
//! exactly that (docs/fencing.md).

use super::{Lease, State};
use crate::clock::Boot;

/// What the lease task makes of the lease at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The permit runs until `until` (for ever with fencing = "none"): nothing to judge
    /// before then, unless the deadline moves or a fence changes.
    Keep { until: Boot },
    /// The permit has ended and no fence holds: the host is fenced if it holds anything a
    /// writer holds ([`super::Judgement::fence`]). Either way the forced expiries up to
    /// `expiries` are judged once that is decided.
    Fence { expiries: u64 },
    /// The permit has ended and a fence already holds: nothing more to take away, and the
    /// forced expiries up to `expiries` are judged.
    Fenced { expiries: u64 },
}

/// The rule. A permit that runs again while a fence holds (in a fleet a new etcd lease
/// renews it before a monitor lifts the fence) is kept: the fence is judged again only
/// once that permit ends too.
fn judge(s: &State, enforced: bool, now: Boot) -> Verdict {
    if !enforced {
        return Verdict::Keep {
            until: Boot(u64::MAX),
        };
    }
    if let Some(until) = s.deadline.filter(|d| d.left(now).is_some()) {
        return Verdict::Keep { until };
    }
    let expiries = s.expiries;
    match s.fence {
        Some(_) => Verdict::Fenced { expiries },
        None => Verdict::Fence { expiries },
    }
}

impl Lease {
    /// The lease at `now` (`Boot::now()` but in tests), in one read of its state.
    pub fn judge(&self, now: Boot) -> Verdict {
        judge(&self.lock(), self.enforced, now)
    }

    /// [`Lease::judge`] on state already locked.
    pub(super) fn judge_locked(&self, s: &State, now: Boot) -> Verdict {
        judge(s, self.enforced, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{NotFollowed, Renewal};
    use std::path::PathBuf;
    use std::time::Duration;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmm-verdict-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn lease(tag: &str, renewal: Renewal) -> Lease {
        Lease::new(Duration::from_secs(5), true, renewal, &dir(tag), "db1")
    }

    const LATER: Duration = Duration::from_secs(60);

    #[test]
    fn a_running_lease_is_kept_until_its_deadline_and_fenced_after_it() {
        let lease = lease("running", Renewal::Monitor);
        let (session, _) = lease.new_session(0).unwrap();
        lease.on_desired(session, false).unwrap();
        let now = Boot::now();
        let Verdict::Keep { until } = lease.judge(now) else {
            panic!("a renewed lease is not kept");
        };
        assert!(until.left(now).is_some_and(|left| left <= lease.length()));
        assert_eq!(
            lease.judge(until),
            Verdict::Fence { expiries: 0 },
            "at the deadline the permit has ended"
        );
        assert_eq!(
            lease.judge(until.before(Duration::from_nanos(1))),
            Verdict::Keep { until }
        );
    }

    #[test]
    fn a_fresh_lease_is_judged_expired_and_renewal_keeps_it() {
        let lease = lease("fresh", Renewal::Etcd);
        assert_eq!(lease.judge(Boot::now()), Verdict::Fence { expiries: 0 });
        let until = Boot::now().after(Duration::from_secs(3));
        assert!(lease.renew_until(until, lease.fences()));
        assert_eq!(lease.judge(Boot::now()), Verdict::Keep { until });
        assert_eq!(
            lease.judge(until.after(LATER)),
            Verdict::Fence { expiries: 0 }
        );
    }

    #[test]
    fn fencing_none_is_always_kept() {
        let lease = Lease::new(
            Duration::from_millis(1),
            false,
            Renewal::Monitor,
            &dir("none"),
            "db1",
        );
        let far = Boot::now().after(LATER);
        assert_eq!(
            lease.judge(far),
            Verdict::Keep {
                until: Boot(u64::MAX)
            }
        );
        lease.expire_now();
        assert!(matches!(lease.judge(far), Verdict::Keep { .. }));
    }

    #[test]
    fn a_forced_expiry_is_judged_at_once_and_counted_for_the_lease_task() {
        let lease = lease("forced", Renewal::Etcd);
        let until = Boot::now().after(Duration::from_secs(3));
        assert!(lease.renew_until(until, lease.fences()));
        let expiry = lease.expire_now();
        assert_eq!(
            lease.judge(Boot::now()),
            Verdict::Fence { expiries: expiry },
            "a lost etcd lease ends the permit before its deadline"
        );
        assert!(lease.expiry_pending());
        assert!(
            !lease.renew_until(until.after(LATER), lease.fences()),
            "renewed before the lease task judged the loss"
        );
        // Nothing held: no fence, and the loss is judged with the count the verdict gave.
        lease.mark_judged(expiry);
        assert!(!lease.expiry_pending());
        assert!(lease.renew_until(until, lease.fences()));
        assert_eq!(lease.judge(Boot::now()), Verdict::Keep { until });
    }

    #[test]
    fn a_fence_is_decided_once_and_then_judged_fenced() {
        let lease = lease("fence", Renewal::Monitor);
        let (session, kicked) = lease.new_session(0).unwrap();
        lease.on_desired(session, false).unwrap();
        assert!(
            lease.try_fence(|| "early".into()).is_none(),
            "fenced while the verdict keeps the lease"
        );
        // The tests cannot move the clock that `try_fence` reads: end the permit instead.
        lease.expire_now();
        let Verdict::Fence { expiries } = lease.judge(Boot::now()) else {
            panic!("an ended permit is not judged for a fence");
        };
        assert!(lease.try_fence(|| "expired".into()).is_some());
        lease.mark_judged(expiries);
        assert!(
            kicked.has_changed().unwrap(),
            "every session is told to close"
        );
        assert_eq!(lease.judge(Boot::now()), Verdict::Fenced { expiries });
        assert!(
            lease.try_fence(|| "again".into()).is_none(),
            "one fence at a time"
        );
        assert!(matches!(
            lease.on_desired(session, false),
            Err(NotFollowed::StillFenced { .. })
        ));
    }

    #[test]
    fn a_permit_renewed_while_a_fence_holds_is_kept_and_the_fence_stays() {
        let lease = lease("renewed-fenced", Renewal::Etcd);
        let expiry = lease.expire_now();
        assert!(lease.try_fence(|| "lost".into()).is_some());
        lease.mark_judged(expiry);
        // A new etcd lease, granted after the fence: the permit runs, the fence holds
        // until a new monitor session's desired state lifts it.
        let until = Boot::now().after(Duration::from_secs(3));
        assert!(lease.renew_until(until, lease.fences()));
        assert_eq!(lease.judge(Boot::now()), Verdict::Keep { until });
        assert!(lease.fenced().is_some());
        assert_eq!(
            lease.judge(until.after(LATER)),
            Verdict::Fenced { expiries: expiry }
        );
    }
}
