//! The fencing timing contract in one place.
//!
//! docs/fencing.md argues that an old writer stops before a new one starts; the argument
//! holds only while a handful of inequalities between durations do. Every such duration
//! the agent and the monitor use is a named field of [`Timing`], derived once from the
//! configuration ([`Timing::from_config`]), and its doc comment is its inequality. The
//! property test at the bottom checks them all over every configuration that validates.
//!
//! The names of docs/fencing.md: `R` is when the agent reads a renewal, `D` when the
//! monitor starts relying on the lease (its Disconnect, or the hold of a silent writer),
//! `D' >= D` when the link acts on it, `d` the last renewal's one-way delay plus the
//! agent's scheduling, `n` the netlink removal of the VIP.

use crate::config::Config;
use std::time::Duration;

/// The least margin: on a very short lease a quarter is less than a scheduling delay.
const MIN_MARGIN: Duration = Duration::from_millis(10);

/// How much earlier than a lease of `lease` runs out its holder gives the writer up:
/// `max(lease / 4, 10 ms)`. It covers the last renewal's delay and the fence's own
/// netlink work; the monitor parks the writer VIP elsewhere from that moment.
pub fn margin(lease: Duration) -> Duration {
    (lease / 4).max(MIN_MARGIN)
}

/// How long one renewal of a lease of `lease` lets its holder write, counted from its
/// own instant of the renewal: `lease - margin(lease)`, nothing when the margin takes it
/// all. The agent's deadline for a monitor's renewal, and its etcd permit for a
/// keepalive answered with a TTL (which is only known when the answer comes).
pub fn held_for(lease: Duration) -> Duration {
    lease.saturating_sub(margin(lease))
}

/// Every bound of the fencing contract, from one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `agent.lease`. Config validation requires `lease > heartbeat_interval` with
    /// `fencing = "lease"`. (In a fleet the agent's etcd lease replaces it: [`Self::etcd`].)
    pub lease: Duration,
    /// `monitor.heartbeat_interval`: the link renews the lease this often.
    pub heartbeat_interval: Duration,
    /// `monitor.agent_timeout`: a link silent this long reports its agent unreachable,
    /// and a writer silent on every channel this long is held down.
    /// `heartbeat_interval < agent_timeout` (validated).
    pub agent_timeout: Duration,

    /// `margin(lease)` = `max(lease / 4, 10 ms)`.
    pub margin: Duration,
    /// `lease - margin`: a renewal read at `R` lets the agent write until
    /// `R + agent_gives_up`. `agent_gives_up < monitor_counts_lease_over`: the agent
    /// stops first.
    pub agent_gives_up: Duration,
    /// `lease + heartbeat_interval`: relying on the lease from `D`, the monitor counts the
    /// host fenced at `D + monitor_counts_lease_over` (its promotion, and its replicas'
    /// early stop), and the link stays away this long after a Disconnect.
    pub monitor_counts_lease_over: Duration,
    /// `margin + heartbeat_interval` = `monitor_counts_lease_over - agent_gives_up`: how
    /// much later the monitor counts the lease over than the agent gives it up. The old
    /// writer has stopped first whenever `(D' - D) + d + n < slack` (350 ms with product
    /// defaults, 200 ms with the lab profile). Parking starts `slack` before a
    /// promotion's count, that is when the agent gives up.
    pub slack: Duration,
    /// `3/4 slack`: a gap this long in the agent's own running is taken for a freeze, and
    /// the sessions open across it renew nothing more. `freeze_gap < slack`: a renewal
    /// counted from the thaw of a shorter freeze still ends before the monitor's count,
    /// `freeze_gap + agent_gives_up < monitor_counts_lease_over`.
    pub freeze_gap: Duration,

    /// `agent_timeout / 3`: the ping check's pace at most on the writer role's hosts, the
    /// only ones held down on silence (its check_period if shorter; `heartbeat_interval`
    /// while the host is held down; the other hosts ping every check_period). `2 ping_pace < agent_timeout`:
    /// a host that still answers ping answers one within agent_timeout though an echo
    /// reply is lost, so it is never taken for silent. `ping_pace < stall_after`.
    pub ping_pace: Duration,
    /// `agent_timeout + heartbeat_interval`: the writer role's hosts' ping checks reach the
    /// monitor's core at least every `ping_pace`, so a quiet longer than this means the monitor itself
    /// did not run, and silence from before counts for nothing.
    pub stall_after: Duration,
    /// `2 agent_timeout`, at least 1 s: how long a promotion waits for the agents'
    /// answers (a confirmed demotion, the GTID survey) before it goes on without them.
    /// `> agent_timeout`: a live agent's answer is not given up on before its link would
    /// report it lost.
    pub answer_wait: Duration,
    /// `2 agent_timeout`, at least 1 s, and in a fleet at least `session_ttl`: how long the
    /// start-up vote waits for every agent's first heartbeat. `> agent_timeout`.
    pub startup_vote_wait: Duration,
    /// `2 agent_timeout`, at least 500 ms: a fleet leader that reaches no agent for this
    /// long steps down, so that a monitor reaching them leads. `> agent_timeout`: every
    /// link has had a whole agent_timeout to be heard.
    pub alone_limit: Duration,
    /// `agent_timeout`, at least 200 ms: the monitor link's bound on connecting (handshake
    /// included) and on writing. `>= agent_timeout`.
    pub link_io_timeout: Duration,
    /// `agent_timeout`, at least 1 s: the agent's bound on writing one frame to a monitor.
    /// `>= agent_timeout`.
    pub agent_write_timeout: Duration,
    /// `4 agent_timeout`, at least 2 s: the agent closes a monitor session silent this
    /// long. `> agent_timeout > heartbeat_interval`: a live monitor's session never idles
    /// out, and a silent one is noticed by the monitor first.
    pub agent_idle: Duration,

    /// In a fleet (`[coordination]`): the agent's own etcd lease is its writer permit.
    pub etcd: Option<EtcdTiming>,
}

/// The writer permit in a fleet: the agent's etcd lease of TTL `session_ttl`, renewed by
/// the agent itself; the monitor counts it over only once etcd expired it, or a TTL after
/// revoking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdTiming {
    /// `coordination.session_ttl`, at least 1 s (validation requires whole seconds from
    /// 1 s; etcd grants nothing shorter).
    pub ttl: Duration,
    /// `margin(ttl)`: a quarter of the TTL.
    pub margin: Duration,
    /// `ttl - margin`: a keepalive sent at `sent` lets the agent write until
    /// `sent + permit`. etcd counts the TTL from when it handles the keepalive, after
    /// `sent`, so `permit < ttl`: the agent stops before etcd can expire the lease.
    pub permit: Duration,
    /// `ttl / 8`: the agent's keepalive pace. `< permit`: one lost renewal still leaves
    /// time for the next; and the permit outlives an etcd leader election shorter than
    /// `permit - 3 x ttl/8` = 3/8 TTL (the last renewal up to a pace old, the retry after
    /// the election up to `request_timeout` later, its answer within `request_timeout`):
    /// the rule `Coordination::min_session_ttl` derives the default TTL from.
    pub keepalive_every: Duration,
    /// `ttl / 8`: the agent's bound on each etcd request. A renewal that hangs is given up
    /// at `keepalive_every + request_timeout`, and a retry still fits before the permit
    /// ends: `keepalive_every + 2 request_timeout + RETRY_BACKOFF < permit`.
    pub request_timeout: Duration,
    /// `keepalive_every + 2 request_timeout`: how late after its lease ended in etcd the
    /// agent has learnt it and fenced (its next keepalive is answered with TTL 0; a key
    /// that no longer names the lease is seen by the read that follows each renewal). A
    /// lease that ended without this monitor's revoke record (expired, or revoked by
    /// someone else) is counted over this long after its key vanished, not at once.
    pub agent_learns_lease_end: Duration,
    /// `ttl + 50 ms` (scheduling, request latency): ending an agent's lease, the monitor
    /// revokes it if it is still renewed this long after it started, and counts a revoked
    /// lease (or one whose end it cannot tell) over this long after the revoke's answer.
    /// `permit < ttl < monitor_counts_over`.
    pub monitor_counts_over: Duration,
    /// `ttl / 3`: the leader revokes an agent's lease only this soon after its guarded
    /// record of the revoke, so a leader frozen in between (and deposed meanwhile, once its
    /// session of the same TTL expired) fences nobody. `< ttl`.
    pub revoke_within: Duration,
}

impl EtcdTiming {
    /// The agent's first retry after a failed etcd request waits this long (doubling up
    /// to `request_timeout`).
    pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);

    /// Added to the TTL before the monitor counts a lease over.
    const COUNT_SLACK: Duration = Duration::from_millis(50);

    pub fn new(session_ttl: Duration) -> EtcdTiming {
        let ttl = session_ttl.max(Duration::from_secs(1));
        let (keepalive_every, request_timeout) = (ttl / 8, ttl / 8);
        EtcdTiming {
            ttl,
            margin: margin(ttl),
            permit: held_for(ttl),
            keepalive_every,
            request_timeout,
            agent_learns_lease_end: keepalive_every + 2 * request_timeout + Self::COUNT_SLACK,
            monitor_counts_over: ttl + Self::COUNT_SLACK,
            revoke_within: ttl / 3,
        }
    }
}

impl Timing {
    pub fn from_config(config: &Config) -> Timing {
        let lease = config.agent.lease;
        let heartbeat_interval = config.monitor.heartbeat_interval;
        let agent_timeout = config.monitor.agent_timeout;
        let margin = margin(lease);
        let slack = margin + heartbeat_interval;
        let etcd = config
            .coordination
            .as_ref()
            .map(|c| EtcdTiming::new(c.session_ttl));
        let twice = agent_timeout * 2;
        Timing {
            lease,
            heartbeat_interval,
            agent_timeout,
            margin,
            agent_gives_up: held_for(lease),
            monitor_counts_lease_over: lease + heartbeat_interval,
            slack,
            freeze_gap: slack * 3 / 4,
            ping_pace: agent_timeout / 3,
            stall_after: agent_timeout + heartbeat_interval,
            answer_wait: twice.max(Duration::from_secs(1)),
            startup_vote_wait: twice
                .max(Duration::from_secs(1))
                .max(etcd.map_or(Duration::ZERO, |e| e.ttl)),
            alone_limit: twice.max(Duration::from_millis(500)),
            link_io_timeout: agent_timeout.max(Duration::from_millis(200)),
            agent_write_timeout: agent_timeout.max(Duration::from_secs(1)),
            agent_idle: (agent_timeout * 4).max(Duration::from_secs(2)),
            etcd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::ConfigBuilder;
    use proptest::prelude::*;

    /// Two masters and a writer role with the given timings; microseconds, as the config
    /// writes sub-millisecond parts too.
    fn config(
        heartbeat_us: u64,
        agent_timeout_us: u64,
        lease_us: u64,
        session_ttl_s: Option<u64>,
    ) -> Result<Config, crate::config::ConfigError> {
        let mut b = ConfigBuilder::new();
        b.heartbeat_interval(Duration::from_micros(heartbeat_us))
            .agent_timeout(Duration::from_micros(agent_timeout_us))
            .lease(Duration::from_micros(lease_us));
        if let Some(s) = session_ttl_s {
            b.coordination(&["http://10.0.0.5:2379"], "/mmm/t")
                .session_ttl(Duration::from_secs(s));
        }
        b.parse()
    }

    /// Every inequality of the contract, as the field docs state them.
    fn check(t: &Timing) -> Result<(), TestCaseError> {
        // The monitor-renewed lease: the agent gives up first, by `slack`.
        prop_assert!(t.agent_gives_up < t.monitor_counts_lease_over);
        // A lease within the margin grants nothing at all: no deadline to compare.
        if !t.agent_gives_up.is_zero() {
            prop_assert_eq!(t.agent_gives_up + t.slack, t.monitor_counts_lease_over);
            prop_assert!(t.freeze_gap + t.agent_gives_up < t.monitor_counts_lease_over);
        }
        prop_assert!(t.freeze_gap < t.slack);
        prop_assert_eq!(t.margin, margin(t.lease));

        // Silence and its multiples.
        prop_assert!(t.heartbeat_interval < t.agent_timeout);
        prop_assert!(t.ping_pace * 2 < t.agent_timeout);
        prop_assert!(t.ping_pace < t.stall_after);
        prop_assert!(t.heartbeat_interval < t.stall_after);
        prop_assert!(t.answer_wait > t.agent_timeout);
        prop_assert!(t.startup_vote_wait > t.agent_timeout);
        prop_assert!(t.alone_limit > t.agent_timeout);
        prop_assert!(t.link_io_timeout >= t.agent_timeout);
        prop_assert!(t.agent_write_timeout >= t.agent_timeout);
        prop_assert!(t.agent_idle > t.agent_timeout);

        // The etcd permit.
        if let Some(e) = &t.etcd {
            prop_assert!(e.permit < e.ttl);
            prop_assert!(e.ttl < e.monitor_counts_over);
            prop_assert!(e.keepalive_every < e.permit);
            prop_assert!(
                e.keepalive_every + e.request_timeout * 2 + EtcdTiming::RETRY_BACKOFF < e.permit
            );
            prop_assert!(e.revoke_within < e.ttl);
            prop_assert!(t.startup_vote_wait >= e.ttl);
        }
        Ok(())
    }

    proptest! {
        /// Any configuration that validates keeps every inequality. Leases and
        /// agent_timeouts come both independent of the heartbeat (some then fail
        /// validation) and just above it, where the inequalities are tightest.
        #[test]
        fn every_valid_configuration_keeps_the_contract(
            heartbeat_us in 1_000u64..5_000_000,
            lease_us in 1_000u64..60_000_000,
            timeout_us in 1_000u64..60_000_000,
            near in any::<(bool, bool)>(),
            deltas in (1u64..2_000_000, 1u64..2_000_000),
            session_ttl_s in proptest::option::of(1u64..=60),
        ) {
            let lease_us = if near.0 { heartbeat_us + deltas.0 } else { lease_us };
            let timeout_us = if near.1 { heartbeat_us + deltas.1 } else { timeout_us };
            let config = config(heartbeat_us, timeout_us, lease_us, session_ttl_s);
            prop_assume!(config.is_ok());
            let config = config.expect("checked above");
            check(&Timing::from_config(&config))?;
        }
    }

    #[test]
    fn the_documented_slack() {
        // Product defaults (lease 1 s, heartbeat 100 ms) and the lab profile (600 ms,
        // 50 ms), as docs/fencing.md quotes them.
        let product = Timing::from_config(&config(100_000, 500_000, 1_000_000, None).unwrap());
        assert_eq!(product.slack, Duration::from_millis(350));
        assert_eq!(product.agent_gives_up, Duration::from_millis(750));
        assert_eq!(
            product.monitor_counts_lease_over,
            Duration::from_millis(1100)
        );
        let lab = Timing::from_config(&config(50_000, 300_000, 600_000, None).unwrap());
        assert_eq!(lab.slack, Duration::from_millis(200));
        assert_eq!(lab.freeze_gap, Duration::from_millis(150));
        let fleet = Timing::from_config(&config(100_000, 500_000, 1_000_000, Some(2)).unwrap());
        let e = fleet.etcd.unwrap();
        assert_eq!(e.permit, Duration::from_millis(1500));
        assert_eq!(e.monitor_counts_over, Duration::from_millis(2050));
    }
}
