//! Hysteresis, in small pure structs: a check's failure counts only once it has lasted
//! trap_period (unless the evidence is definitive), and a host that keeps failing is
//! flapping.

use super::Millis;

/// What one check last said, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTrack {
    /// `None` until the first result.
    pub failing: Option<Failing>,
    pub reported: bool,
    /// When the effective (trapped) result last changed: `checks` prints it.
    pub last_change: Millis,
    pub message: String,
    /// When the newest result's attempt started: attempts may overlap (pings), and an
    /// older attempt's result arriving late says nothing new.
    pub latest: Millis,
    /// When the newest passing attempt started: the host answered something sent then.
    pub last_ok: Option<Millis>,
    /// The newest result said nothing either way (the monitor may not ping at all):
    /// no silence can be read from this check.
    pub unknown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    pub since: Millis,
    /// Definitive evidence (the probe saw mysqld die; mysqld refuses connections while
    /// its agent answers) skips trap_period.
    pub definitive: bool,
}

/// The outcome of a check as the decision logic sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No result yet.
    Pending,
    Ok,
    /// Failing, but not for trap_period yet: not acted upon.
    Trapped,
    Failed,
}

impl Default for CheckTrack {
    fn default() -> Self {
        CheckTrack {
            failing: None,
            reported: false,
            last_change: 0,
            message: "OK".into(),
            latest: 0,
            last_ok: None,
            unknown: false,
        }
    }
}

impl CheckTrack {
    pub fn verdict(&self, now: Millis, trap: Millis) -> Verdict {
        self.verdict_from(now, trap, None)
    }

    /// As [`CheckTrack::verdict`], with the trap counted from `silent_since` when that is
    /// earlier than the first failed result: the host is known to have been silent on
    /// every channel since then (see `Cluster::silent_since`).
    pub fn verdict_from(&self, now: Millis, trap: Millis, silent_since: Option<Millis>) -> Verdict {
        match (self.reported, self.failing) {
            (false, _) => Verdict::Pending,
            (true, None) => Verdict::Ok,
            (true, Some(f))
                if f.definitive || now.saturating_sub(f.counted_from(silent_since)) >= trap =>
            {
                Verdict::Failed
            }
            (true, Some(_)) => Verdict::Trapped,
        }
    }

    /// Whether a result from an attempt started at `started` is older than one already
    /// recorded (overlapping attempts can finish out of order): it is then ignored.
    pub fn stale(&self, started: Millis) -> bool {
        self.reported && started < self.latest
    }

    /// Whether the check counts as passing (MMM's `$checks->ping($host)`).
    pub fn ok(&self, now: Millis, trap: Millis) -> bool {
        !matches!(self.verdict(now, trap), Verdict::Failed)
    }

    pub fn record_ok(&mut self, now: Millis, started: Millis, trap: Millis) {
        let first = !self.reported;
        let was_failed = self.verdict(now, trap) == Verdict::Failed;
        self.latest = self.latest.max(started);
        self.last_ok = Some(self.last_ok.map_or(started, |t| t.max(started)));
        self.unknown = false;
        self.reported = true;
        self.failing = None;
        if first || was_failed || self.message != "OK" {
            self.last_change = now;
        }
        self.message = "OK".into();
    }

    pub fn record_failure(
        &mut self,
        now: Millis,
        started: Millis,
        message: String,
        definitive: bool,
    ) {
        if !self.reported {
            self.last_change = now;
        }
        self.latest = self.latest.max(started);
        self.unknown = false;
        self.reported = true;
        match &mut self.failing {
            Some(f) => f.definitive |= definitive,
            None => {
                self.failing = Some(Failing {
                    since: now,
                    definitive,
                });
                self.last_change = now;
            }
        }
        self.message = format!("ERROR: {message}");
    }

    /// A result that says nothing either way (MySQL's 1040, no ICMP socket).
    pub fn record_unknown(&mut self, started: Millis) {
        self.latest = self.latest.max(started);
        self.unknown = true;
    }

    /// When a trapped failure turns into a failed one (for the next tick).
    pub fn trap_expires(&self, trap: Millis, silent_since: Option<Millis>) -> Option<Millis> {
        self.failing
            .filter(|f| !f.definitive)
            .map(|f| f.counted_from(silent_since) + trap)
    }
}

impl Failing {
    fn counted_from(&self, silent_since: Option<Millis>) -> Millis {
        silent_since.map_or(self.since, |s| s.min(self.since))
    }
}

/// Departures from ONLINE within flap_duration; flap_count of them make a host flapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flaps {
    pub departures: Vec<Millis>,
}

impl Flaps {
    /// Records a departure from ONLINE; returns whether the host is now flapping.
    pub fn depart(&mut self, now: Millis, window: Millis, count: u32) -> bool {
        self.departures.retain(|t| now.saturating_sub(*t) < window);
        self.departures.push(now);
        self.departures.len() >= count as usize
    }

    pub fn clear(&mut self) {
        self.departures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_failures_wait_trap_period_definitive_ones_do_not() {
        let mut c = CheckTrack::default();
        assert_eq!(c.verdict(0, 3000), Verdict::Pending);
        c.record_ok(0, 0, 3000);
        assert_eq!(c.verdict(0, 3000), Verdict::Ok);
        c.record_failure(1000, 500, "timeout".into(), false);
        assert_eq!(c.verdict(3999, 3000), Verdict::Trapped);
        assert!(c.ok(3999, 3000));
        assert_eq!(c.verdict(4000, 3000), Verdict::Failed);
        assert_eq!(c.trap_expires(3000, None), Some(4000));
        c.record_ok(4100, 4100, 3000);
        assert_eq!(c.last_change, 4100);
        c.record_failure(5000, 5000, "Connection refused".into(), true);
        assert_eq!(
            c.verdict(5000, 3000),
            Verdict::Failed,
            "definitive evidence skips the trap"
        );
        assert_eq!(c.message, "ERROR: Connection refused");
    }

    #[test]
    fn a_host_silent_everywhere_counts_its_trap_from_when_it_was_last_heard() {
        let mut c = CheckTrack::default();
        c.record_ok(1000, 990, 1000);
        assert_eq!(c.last_ok, Some(990));
        // The first failed ping reports at 1600 (sent at 1100, 500 ms timeout).
        c.record_failure(1600, 1100, "timeout".into(), false);
        assert_eq!(c.verdict(2500, 1000), Verdict::Trapped);
        assert_eq!(
            c.verdict_from(2000, 1000, Some(1000)),
            Verdict::Failed,
            "silent since 1000 on every channel"
        );
        assert_eq!(c.verdict_from(1999, 1000, Some(1000)), Verdict::Trapped);
        assert_eq!(c.trap_expires(1000, Some(1000)), Some(2000));
        assert_eq!(
            c.trap_expires(1000, Some(1700)),
            Some(2600),
            "a later silence never delays the trap"
        );
        // An older attempt's late answer changes nothing.
        assert!(c.stale(1050));
        assert!(!c.stale(1100));
    }

    #[test]
    fn flapping_needs_flap_count_departures_within_the_window() {
        let mut f = Flaps::default();
        assert!(!f.depart(0, 3_600_000, 3));
        assert!(!f.depart(1000, 3_600_000, 3));
        assert!(f.depart(2000, 3_600_000, 3));
        let mut f = Flaps::default();
        assert!(!f.depart(0, 10_000, 3));
        assert!(!f.depart(6000, 10_000, 3));
        assert!(
            !f.depart(12_000, 10_000, 3),
            "the first departure left the window"
        );
    }
}
