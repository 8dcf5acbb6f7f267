//! The core's timer: every decision a Tick can take without a new event has its time
//! here, so the daemon sleeps until the next one instead of ticking every host.

#[allow(unused_imports)]
use super::*;

impl Cluster {
    /// The earliest time after the last Tick at which a Tick could decide something: the
    /// daemon's timer. Every decision the core takes on a Tick without a new event is
    /// listed here (the simulator in the tests fails when a Tick acts unannounced), so
    /// the daemon sleeps until then instead of ticking every host ten times a second.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timer
    }

    /// The earliest deadline later than `after` (the last Tick), over every host.
    pub(super) fn compute_next_deadline(&self, after: Millis) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| {
            if t > after && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        let auto = self.config.monitor.auto_set_online.map(ms);
        let flap = ms(self.config.monitor.flap_duration);
        let retry = ms(self.config.monitor.promotion_timeout);
        for h in &self.hosts {
            for c in CheckKind::ALL {
                if let Some(t) = h
                    .check(*c)
                    .trap_expires(self.trap(*c), Self::trap_start(h, *c, self.network_back))
                {
                    at(t);
                }
            }
            // A silent writer is held down once it has been silent for agent_timeout.
            if let Some(t) = self.isolation_due(h) {
                at(t);
            }
            // Replication failures count again once a source has settled.
            if h.state == HostState::Online {
                at(h.online_since + SOURCE_SETTLE);
            }
            if h.state == HostState::AwaitingRecovery {
                if let Some(a) = auto {
                    at(h.since + a);
                }
                if h.flapping {
                    at(h.flaps.departures.last().copied().unwrap_or(0) + flap);
                }
                if let Some(t) = h.status_asked {
                    at(t + RECOVERING_REFRESH);
                }
            }
            if let Some((_, t)) = h.repointed {
                at(t + retry);
            }
        }
        // A held-down writer's replicas stop their IO threads once its lease is over.
        if let Some(t) = self.early_stop_due() {
            at(t);
        }
        // A fleet's writer without a writer permit is failed over after trap_period.
        if let Some(t) = self.permitless_writer_due() {
            at(t);
        }
        // Its successor parks the VIP once a held-down writer's lease has run out.
        if let Some(t) = self.park_due() {
            at(t);
        }
        if let Some(p) = &self.promotion {
            for t in p.deadlines() {
                at(t);
            }
        }
        if let Some((until, _)) = &self.blocked {
            at(*until);
        }
        if self.mode == MonitorMode::Wait {
            let wait = ms(self.config.monitor.wait_for_other_master);
            for h in &self.hosts {
                if h.state == HostState::Online {
                    at(h.online_since.max(self.wait_since) + wait);
                }
            }
        }
        next
    }
}
