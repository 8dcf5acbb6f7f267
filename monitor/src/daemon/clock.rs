//! The monitor's two readings of the wall clock: once at start, for the timestamps of
//! `show` and the status file (monotonic after), and the UTC offset of `show`'s times.

use crate::core::Millis;
use std::time::{Duration, SystemTime};

/// The monitor's clock: wall time at start plus monotonic time since, so durations never
/// jump and stored flap times stay meaningful across restarts.
#[derive(Clone, Copy)]
pub struct Clock {
    wall_ms: Millis,
    start: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            wall_ms,
            start: tokio::time::Instant::now(),
        }
    }
    pub fn now(&self) -> Millis {
        self.wall_ms + self.start.elapsed().as_millis() as u64
    }

    /// When the core's `deadline` falls on the runtime's clock, and no later than `latest`.
    pub(super) fn instant(
        &self,
        deadline: Option<Millis>,
        latest: tokio::time::Instant,
    ) -> tokio::time::Instant {
        deadline
            .map(|d| self.start + Duration::from_millis(d.saturating_sub(self.wall_ms)))
            .map_or(latest, |t| t.min(latest))
    }
}
