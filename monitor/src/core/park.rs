//! Parking the writer VIP on the next writer while the old one is gone.
//!
//! When the writer's host vanishes (its agent and its ping silent), nothing answers for the
//! writer VIP: the RST program that covers a released VIP ran on the old host, which is
//! gone too. A client's SYN to the old host's MAC then waits out its connect timeout (1 s
//! for a typical pool) even after the new writer is ready. So once the old writer's lease
//! has surely run out (it removed the VIP itself, or will at its thaw before anything else),
//! the host that takes over parks the VIP: its agent answers TCP to the VIP with RST and
//! announces it, without adding the address and without writing. Clients retry at once and
//! land on it the moment it takes the VIP for real.
//!
//! Parking never makes a writer: the parked host stays read-only, its kernel holds no
//! address for the VIP (nothing but the RST program answers for it), and it is parked only
//! once the old writer cannot be serving any more. A writer that answers again unparks it
//! (and its own gratuitous ARP ends the parking at the agent too).

#[allow(unused_imports)]
use super::*;
use promote::Phase;

impl Cluster {
    /// When the held-down writer's lease has surely run out, so that its successor may
    /// park the VIP before trap_period fails it (`None`: no writer held down, or a fleet,
    /// whose agents hold their own etcd leases that no monitor counts).
    pub(super) fn park_due(&self) -> Option<Millis> {
        if self.config.agent.fencing != Fencing::Lease
            || self.config.coordination.is_some()
            || self.promotion.is_some()
        {
            return None;
        }
        let writer = self.host(self.roles.writer_holder()?)?;
        let lease = ms(self.config.agent.lease) + ms(self.config.monitor.heartbeat_interval);
        writer.isolated_since.map(|held| held + lease)
    }

    /// The host that should park the writer VIP now, if any.
    fn park_target(&self, now: Millis) -> Option<String> {
        if self.config.agent.fencing != Fencing::Lease || self.mode != MonitorMode::Active {
            return None;
        }
        self.roles.writer_ip()?;
        match &self.promotion {
            // Every possible writer is fenced (the phase is past fencing), and the old one
            // answers nothing: no RST program of its own covers its clients. Parked until
            // the candidate is given the role, whose desired state holds the VIP instead.
            Some(p) => {
                let past_fencing = !matches!(
                    p.phase,
                    Phase::Fencing { .. } | Phase::Promote { .. } | Phase::Position { .. }
                );
                let gone = p
                    .from
                    .as_deref()
                    .and_then(|f| self.host(f))
                    .is_some_and(|h| !h.agent_up);
                (past_fencing && gone).then(|| p.to.clone())
            }
            None => {
                if self.park_due().is_none_or(|t| now < t) {
                    return None;
                }
                self.next_writer(self.roles.writer_holder()?)
            }
        }
    }

    /// Parks the writer VIP where [`Cluster::park_target`] says (the desired states carry
    /// it), telling each change once.
    pub(super) fn update_parking(&mut self, now: Millis, out: &mut Vec<Action>) {
        let target = self.park_target(now);
        if target == self.parked {
            return;
        }
        let vip = self
            .roles
            .writer_ip()
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let message = match (&self.parked, &target) {
            (_, Some(to)) => format!(
                "Writer VIP {vip} parked on '{to}': the old writer is gone and its lease has run out, so '{to}' answers its clients with RST until it takes the role"
            ),
            (Some(from), None) => format!("Writer VIP {vip} no longer parked on '{from}'"),
            (None, None) => unreachable!("equal to the current parking"),
        };
        out.push(Action::Notify {
            host: target.clone().or_else(|| self.parked.clone()),
            message,
        });
        self.parked = target;
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
                if self.parked.as_deref() == Some(host)
                    && !writable
                    && !roles.iter().any(|(_, held)| *held == ip) =>
            {
                vec![ip]
            }
            _ => vec![],
        }
    }
}
