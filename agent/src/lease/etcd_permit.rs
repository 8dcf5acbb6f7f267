//! The writer permit in a fleet: the agent's own etcd lease renews the deadline, fences
//! void renewals granted before them, and the failsafe may run a permit on.

use std::time::Duration;

use super::{Lease, Renewal};
use crate::clock::Boot;
use mmm_common::timing::held_for;

/// Until when a renewal of the agent's etcd lease, sent at `sent` and answered with
/// `ttl`, lets this host write. etcd counts the lease's new TTL from when it handles the
/// renewal, which is after `sent`: its expiry is at least `sent + ttl`. The agent gives
/// the writer up a margin earlier still (covering the fence's own netlink work and the
/// clock rates of two machines), so it never holds it after etcd has let the lease go.
pub fn etcd_permit_until(sent: Boot, ttl: Duration) -> Boot {
    sent.after(held_for(ttl))
}

impl Lease {
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
}
