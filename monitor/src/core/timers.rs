//! The core's timer table: every decision a Tick can take without a new event has its
//! time here, registered by the component that takes it, so the daemon sleeps until the
//! next one instead of ticking every host.

use super::{Cluster, Millis};

/// The earliest of the deadlines registered after the last Tick.
pub(super) struct Deadlines {
    after: Millis,
    next: Option<Millis>,
}

impl Deadlines {
    fn new(after: Millis) -> Deadlines {
        Deadlines { after, next: None }
    }

    /// A time at which a Tick decides something.
    pub(super) fn at(&mut self, t: Millis) {
        if t > self.after && self.next.is_none_or(|n| t < n) {
            self.next = Some(t);
        }
    }
}

impl Cluster {
    /// The earliest time after the last Tick at which a Tick could decide something: the
    /// daemon's timer. Every decision the core takes on a Tick without a new event is
    /// listed here (the simulator in the tests fails when a Tick acts unannounced), so
    /// the daemon sleeps until then instead of ticking every host ten times a second.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timer
    }

    /// The earliest deadline later than `after` (the last Tick), over every component.
    pub(super) fn compute_next_deadline(&self, after: Millis) -> Option<Millis> {
        let mut d = Deadlines::new(after);
        self.host_deadlines(&mut d);
        self.isolation_deadlines(&mut d);
        self.permitless_deadlines(&mut d);
        self.parking_deadlines(&mut d);
        self.promotion_deadlines(&mut d);
        self.mode_deadlines(&mut d);
        d.next
    }
}
