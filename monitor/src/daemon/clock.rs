//! The monitor's two readings of the wall clock: once at start, for the timestamps of
//! `show` and the status file (monotonic after), and the UTC offset of `show`'s times;
//! and the grid the daemon's periodic work keeps to (heartbeats, ping slots).

use crate::core::Millis;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

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

/// The first point of the grid `origin + k * period` at or after `at`.
pub(super) fn on_grid(origin: Instant, at: Instant, period: Duration) -> Instant {
    let since = at.saturating_duration_since(origin);
    let period_ns = period.as_nanos().max(1);
    let periods = since.as_nanos().div_ceil(period_ns);
    let offset = u64::try_from(periods * period_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::on_grid;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn links_beat_on_one_grid() {
        let ms = Duration::from_millis;
        let origin = Instant::now();
        let period = ms(100);
        assert_eq!(on_grid(origin, origin, period), origin);
        assert_eq!(on_grid(origin, origin + ms(1), period), origin + ms(100));
        assert_eq!(on_grid(origin, origin + ms(100), period), origin + ms(100));
        assert_eq!(on_grid(origin, origin + ms(250), period), origin + ms(300));
        // Before the origin (never so in the daemon): the origin.
        assert_eq!(on_grid(origin + ms(50), origin, period), origin + ms(50));
    }
}
