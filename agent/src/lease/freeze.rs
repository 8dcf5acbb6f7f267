//! Freeze detection: a frame that waited in the socket while the agent (or its host) was
//! frozen must not renew the lease from the thaw, so a gap in the agent's own running
//! closes every open monitor session.

use std::time::Duration;

use super::{Lease, Renewal, State};
use crate::clock::Boot;

impl Lease {
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
    pub(super) fn note_running_at(&self, s: &mut State, now: Boot) -> bool {
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
}
