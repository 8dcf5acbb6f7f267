//! A fleet's writer that holds no writer permit while everything else about it is fine.
//!
//! In a fleet the writer's permit is its agent's own etcd lease. An agent cut from etcd
//! alone (a firewall, an expired client certificate) cannot renew it: it gives the writer
//! role up (VIP removed, read_only) and refuses it back, while its agent, its mysqld and
//! its ping all answer the monitors. Nothing would fail the host, and `show` would call it
//! the writer for as long as the cut lasts: an outage with no cause shown. Its agent
//! reports the self-fence in every heartbeat for as long as it lasts, so once that has
//! lasted trap_period the leader moves the writer role to a host that can hold it. The
//! old writer is already fenced (its own report confirms it), so the promotion does not
//! wait for its lease. Nothing is promoted without etcd: the candidate takes the role
//! only with a permit of its own, and a leader has one only while etcd answers it.

use super::timers::Deadlines;
use super::FencingMethod;
use super::{Cluster, CoreAction, Millis};
use mmm_common::types::{CheckKind, MonitorMode};

impl Cluster {
    /// When the writer, self-fenced in its agent's own words since `self_fenced_since`,
    /// is to be failed over: trap_period after it first said so. Only in a fleet (alone,
    /// the monitor's next heartbeat renews a lease that ran out, and the self-fence ends
    /// at once), only while its agent is heard, and not during a promotion.
    pub(super) fn permitless_writer_due(&self) -> Option<Millis> {
        if self.fencing != FencingMethod::EtcdLease
            || !self.mode.is(MonitorMode::Active)
            || self.promotion.is_some()
            || !self.network_ok
        {
            return None;
        }
        let w = self.host(self.roles.writer_holder()?)?;
        if !w.agent_up || w.isolated_since.is_some() {
            return None;
        }
        Some(w.self_fenced_since? + self.trap(CheckKind::Ping))
    }

    /// A fleet's writer without a writer permit is failed over after trap_period.
    pub(super) fn permitless_deadlines(&self, d: &mut Deadlines) {
        if let Some(t) = self.permitless_writer_due() {
            d.at(t);
        }
    }

    /// Moves the writer role off a writer that has held no permit for trap_period.
    pub(super) fn fail_permitless_writer(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        if self.permitless_writer_due().is_none_or(|due| now < due) {
            return;
        }
        let Some(old) = self.roles.writer_holder().map(str::to_string) else {
            return;
        };
        let writer = self.roles.writer_role().to_string();
        match self.next_writer(&old) {
            Some(to) => self.start_promotion(
                now,
                Some(old.clone()),
                to,
                format!("'{old}' has held no writer permit for trap_period (its agent cannot renew its etcd lease: cut from etcd?)"),
                None,
                out,
            ),
            None => {
                // Said once per streak: the streak restarts from now.
                if let Some(h) = self.host_mut(&old) {
                    h.self_fenced_since = Some(now);
                }
                out.push(CoreAction::Notify {
                    host: Some(old.clone()),
                    message: format!(
                        "'{old}' holds no writer permit and no host can take over the {writer} role at the moment"
                    ),
                });
            }
        }
    }
}
