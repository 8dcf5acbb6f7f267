//! Parking the writer VIP on the next writer while the old one is gone.
//!
//! When the writer's host vanishes (its agent and its ping silent), nothing answers for the
//! writer VIP: the RST program that covers a released VIP ran on the old host, which is
//! gone too. A client's SYN to the old host's MAC then waits out its connect timeout (1 s
//! for a typical pool) even after the new writer is ready. So once the old writer's own
//! lease has run out (its agent removed the VIP at `held + lease - margin`, or will at its
//! thaw before anything else) and a ping has failed, the host that takes over parks the VIP: its agent answers TCP to the VIP with RST and
//! announces it, without adding the address and without writing. Clients retry at once and
//! land on it the moment it takes the VIP for real.
//!
//! Parking never makes a writer: the parked host stays read-only, its kernel holds no
//! address for the VIP (nothing but the RST program answers for it), and it is parked only
//! once the old writer cannot be serving any more. A writer that answers again unparks it
//! (and its own gratuitous ARP ends the parking at the agent too).

use super::promote::Phase;
use super::timers::Deadlines;
use super::{ms, Cluster, CoreAction, FencingMethod, Millis};
use mmm_common::types::{CheckKind, MonitorMode};
use std::net::Ipv4Addr;

/// Where the writer VIP is parked, as the desired states say.
#[derive(Debug, Clone, Default)]
pub struct Parking {
    parked: Option<String>,
}

impl Parking {
    /// Parks `vip` on `target` (or nowhere); the change, told once.
    fn park(&mut self, target: Option<String>, vip: &str) -> CoreAction {
        let message = match (&self.parked, &target) {
            (Some(from), Some(to)) => format!(
                "Writer VIP {vip} parked on '{to}' instead of '{from}' (the next writer changed)"
            ),
            (None, Some(to)) => format!(
                "Writer VIP {vip} parked on '{to}': the old writer is gone and has given the role up, so '{to}' answers its clients with RST until it takes the role"
            ),
            (Some(from), None) => format!("Writer VIP {vip} no longer parked on '{from}'"),
            (None, None) => unreachable!("equal to the current parking"),
        };
        let told = CoreAction::Notify {
            host: target.clone().or_else(|| self.parked.clone()),
            message,
        };
        self.parked = target;
        told
    }
}

impl Cluster {
    /// When the old writer's agent gave the writer up by its own lease, so that its
    /// successor may park the VIP: a held-down writer's (nothing renewed its lease since
    /// the hold) before trap_period fails it, or a promotion's fencing target's. Not the
    /// promotion's bound (that adds `heartbeat_interval + margin`): parking makes no
    /// writer, and at worst refuses the old writer's last clients a few milliseconds early,
    /// while it is fencing itself anyway. `None`: nothing to wait for; a held-down writer
    /// in a fleet, whose agent holds its own etcd lease that no monitor counts, waits for
    /// the promotion's LeaseEnded.
    pub(super) fn park_due(&self) -> Option<Millis> {
        if !self.fencing.lease() {
            return None;
        }
        match &self.promotion {
            None if self.fencing == FencingMethod::MonitorLease => {
                let writer = self.host(self.roles.writer_holder()?)?;
                let gives_up = ms(self.timing.agent_gives_up);
                writer.isolated_since.map(|held| held + gives_up)
            }
            None => None,
            Some(p) => match &p.phase {
                Phase::Fencing { targets, .. } => {
                    let early = ms(self.timing.slack);
                    let until = targets.get(p.from.as_deref()?)?.lease_until?;
                    (until != Millis::MAX).then(|| until.saturating_sub(early))
                }
                _ => None,
            },
        }
    }

    /// Its successor parks the VIP once a held-down writer's lease has run out.
    pub(super) fn parking_deadlines(&self, d: &mut Deadlines) {
        if let Some(t) = self.park_due() {
            d.at(t);
        }
    }

    /// A ping of `host` has failed (not merely gone unanswered for agent_timeout): a
    /// writer whose agent alone is hung is never parked over.
    fn ping_failed(&self, host: &str) -> bool {
        self.host(host).is_some_and(|h| {
            let ping = h.check(CheckKind::Ping);
            ping.failing.is_some() && !ping.unknown
        })
    }

    /// The host that should park the writer VIP now, if any.
    fn park_target(&self, now: Millis) -> Option<String> {
        if !self.fencing.lease() || !self.mode.is(MonitorMode::Active) {
            return None;
        }
        self.roles.writer_ip()?;
        match &self.promotion {
            // The old writer answers nothing (no RST program of its own covers its
            // clients) and gave the writer up: its lease ran out while fencing waits (for
            // kill_host_bin, say), or every possible writer is fenced. Parked until the
            // candidate is given the role, whose desired state holds the VIP instead.
            Some(p) => {
                // A host that answers ping refuses SYNs to a dead mysqld by itself, and
                // one whose mysqld may still serve must not lose its clients to parking.
                let from = p.from.as_deref()?;
                if self.host(from).is_none_or(|h| h.agent_up) || !self.ping_failed(from) {
                    return None;
                }
                let gave_up = match &p.phase {
                    Phase::Fencing { .. } => self.park_due().is_some_and(|t| now >= t),
                    Phase::Promote { .. } | Phase::Position { .. } => false,
                    _ => true,
                };
                gave_up.then(|| p.to.clone())
            }
            None => {
                let writer = self.roles.writer_holder()?;
                if self.park_due().is_none_or(|t| now < t) || !self.ping_failed(writer) {
                    return None;
                }
                self.next_writer(writer)
            }
        }
    }

    /// Parks the writer VIP where [`Cluster::park_target`] says (the desired states carry
    /// it), telling each change once.
    pub(super) fn update_parking(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let target = self.park_target(now);
        if target == self.parking.parked {
            return;
        }
        let vip = self
            .roles
            .writer_ip()
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        out.push(self.parking.park(target, &vip));
    }

    /// What `host`'s desired state parks: the writer VIP, unless it holds it or writes.
    pub(super) fn parked_for(
        &self,
        host: &str,
        roles: &[(String, Ipv4Addr)],
        writable: bool,
    ) -> Vec<Ipv4Addr> {
        match self.roles.writer_ip() {
            Some(ip)
                if self.parking.parked.as_deref() == Some(host)
                    && !writable
                    && !roles.iter().any(|(_, held)| *held == ip) =>
            {
                vec![ip]
            }
            _ => vec![],
        }
    }
}
