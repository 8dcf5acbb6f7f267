//! The monitor's mode (MMM's ACTIVE, MANUAL, WAIT and PASSIVE): every change of it goes
//! through [`Mode`], which keeps the cause of a passive mode and the start of a WAIT.

use super::timers::Deadlines;
use super::{ms, Cluster, CoreAction, HostRec, Millis};
use mmm_common::types::{HostState, MonitorMode};

#[derive(Debug, Clone)]
pub struct Mode {
    current: MonitorMode,
    /// Why the monitor is passive, shown by `show`; empty otherwise.
    passive_cause: String,
    /// When the monitor entered WAIT mode.
    wait_since: Millis,
}

impl Mode {
    pub fn new(configured: MonitorMode, now: Millis) -> Mode {
        Mode {
            current: configured,
            passive_cause: String::new(),
            wait_since: now,
        }
    }

    pub fn get(&self) -> MonitorMode {
        self.current
    }

    pub fn is(&self, mode: MonitorMode) -> bool {
        self.current == mode
    }

    pub fn passive_cause(&self) -> &str {
        &self.passive_cause
    }

    /// Passive because what the monitor would act on cannot be trusted; the cause is shown.
    pub fn go_passive(&mut self, cause: String) {
        self.current = MonitorMode::Passive;
        self.passive_cause = cause;
    }

    /// The operator's set_active, set_manual or set_passive; returns the mode before.
    pub fn switch(&mut self, to: MonitorMode) -> MonitorMode {
        let old = self.current;
        self.current = to;
        if to == MonitorMode::Passive {
            self.passive_cause = "Admin switched to passive mode.".into();
        } else {
            self.passive_cause.clear();
        }
        old
    }

    /// The mode a stored status record had: a monitor configured (or gone) passive stays
    /// passive.
    pub fn resume(&mut self, stored: MonitorMode) {
        if self.current != MonitorMode::Passive {
            self.current = stored;
        }
    }

    /// Roles stay on hosts that left ONLINE in these modes (MMM kept them in manual mode).
    pub fn keeps_roles_of_failed_hosts(&self) -> bool {
        matches!(
            self.current,
            MonitorMode::Manual | MonitorMode::Wait | MonitorMode::Passive
        )
    }

    /// When WAIT ends by itself for a master ONLINE since `online_since`.
    fn wait_over(&self, online_since: Millis, wait: Millis) -> Millis {
        online_since.max(self.wait_since) + wait
    }
}

impl Cluster {
    /// MMM's WAIT mode: act like manual until both masters are ONLINE, or one has been
    /// ONLINE for wait_for_other_master.
    pub(super) fn wait_mode(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        if !self.mode.is(MonitorMode::Wait) {
            return;
        }
        let masters = self.roles.role_hosts(self.roles.writer_role());
        let online: Vec<&HostRec> = masters
            .iter()
            .filter_map(|m| self.host(m))
            .filter(|h| h.state == HostState::Online)
            .collect();
        let wait = ms(self.config.monitor.wait_for_other_master);
        let switch = if online.len() >= 2 {
            Some(format!(
                "Nodes {} are ONLINE, switching from mode 'WAIT' to 'ACTIVE'.",
                masters.join(" and ")
            ))
        } else if wait > 0
            && online.len() == 1
            && now >= self.mode.wait_over(online[0].online_since, wait)
        {
            Some(format!("The other master did not come online for {}s (wait_for_other_master). Switching from mode 'WAIT' to 'ACTIVE'", wait / 1000))
        } else {
            None
        };
        if let Some(message) = switch {
            self.mode.current = MonitorMode::Active;
            out.push(CoreAction::Notify {
                host: None,
                message,
            });
            self.cleanup_offline_roles(now, out);
        }
    }

    /// WAIT ends by itself once a master has been ONLINE for wait_for_other_master.
    pub(super) fn mode_deadlines(&self, d: &mut Deadlines) {
        if !self.mode.is(MonitorMode::Wait) {
            return;
        }
        let wait = ms(self.config.monitor.wait_for_other_master);
        for h in self.hosts.iter() {
            if h.state == HostState::Online {
                d.at(self.mode.wait_over(h.online_since, wait));
            }
        }
    }
}
