//! What the states call for: role distribution (MMM's _distribute_roles), desired states
//! for the agents, slaves re-pointed at the active master, GTID refreshes of waiting
//! hosts, and the status record.

use super::{ms, Cluster, CoreAction, Millis, RECOVERING_REFRESH};
use mmm_common::proto::{self, DesiredState, Position};
use mmm_common::types::{HostMode, HostState, MonitorMode};
use std::time::Duration;

impl Cluster {
    /// Hosts waiting in AWAITING_RECOVERY may gain errant transactions while they wait
    /// (a SUPER user writing): their GTID sets and the writer's are asked for again
    /// every few seconds, so `show` and set_online judge a recent picture.
    pub(super) fn refresh_recovering(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        const EVERY: Millis = RECOVERING_REFRESH;
        let due: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.state == HostState::AwaitingRecovery && h.agent_up)
            .filter(|h| {
                h.status_asked
                    .is_none_or(|t| now.saturating_sub(t) >= EVERY)
            })
            .map(|h| h.name.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mut ask = due;
        if let Some(w) = self.active_master().map(str::to_string) {
            ask.push(w);
        }
        for name in ask {
            if let Some(h) = self.host_mut(&name) {
                h.status_asked = Some(now);
            }
            out.push(CoreAction::QueryStatus { host: name });
        }
    }

    /// A live slave that replicates from anything but the active master (it was down
    /// while the slaves were re-pointed, or someone changed it) is re-pointed; retried
    /// after promotion_timeout if it still is not.
    pub(super) fn fix_slave_sources(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        if self.promotion.is_some() || self.mode.is(MonitorMode::Passive) || !self.network_ok {
            return;
        }
        let Some(active) = self.active_master().and_then(|a| self.host(a)).cloned() else {
            return;
        };
        let retry = ms(self.config.monitor.promotion_timeout);
        let position = Position::Gtid(
            active
                .gtid
                .as_ref()
                .map(|g| g.position())
                .unwrap_or_default(),
        );
        let due: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| {
                h.mode == HostMode::Slave && h.agent_up && h.errant.is_none() && self.alive(h, now)
            })
            .filter(|h| !matches!(h.state, HostState::AdminOffline | HostState::HardOffline))
            .filter(|h| {
                h.view
                    .as_ref()
                    .is_some_and(|v| v.source != Some((active.ip, active.mysql_port)))
            })
            .filter(|h| {
                h.repointed
                    .is_none_or(|(ip, t)| ip != active.ip || now.saturating_sub(t) >= retry)
            })
            .map(|h| h.name.clone())
            .collect();
        for name in due {
            let id = self.next_id();
            if let Some(h) = self.host_mut(&name) {
                h.repointed = Some((active.ip, now));
            }
            out.push(CoreAction::Notify {
                host: Some(name.clone()),
                message: format!(
                    "Slave '{name}' does not replicate from the active master '{}': re-pointing it",
                    active.name
                ),
            });
            out.push(CoreAction::AgentAction {
                host: name,
                id,
                action: proto::Action::ChangeMaster {
                    host: active.ip,
                    port: active.mysql_port,
                    position: position.clone(),
                },
                deadline: Duration::from_millis(retry),
            });
        }
    }

    /// MMM's _distribute_roles: orphans, preferences (only with failback), balance.
    pub(super) fn distribute(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        if self.mode.is(MonitorMode::Passive) || !self.network_ok {
            return;
        }
        // A set: balancing asks about every host of a role, and roles span hundreds.
        let eligible: std::collections::HashSet<String> = self
            .hosts
            .iter()
            .filter(|h| self.eligible(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let is_eligible = |n: &str| eligible.contains(n);
        for (role, host) in self.roles.assign_orphans(&is_eligible) {
            out.push(CoreAction::Notify {
                host: Some(host.clone()),
                message: format!("Orphaned role '{role}' has been assigned to '{host}'"),
            });
        }
        for (role, from, to) in self.roles.balance(&is_eligible) {
            out.push(CoreAction::Notify {
                host: Some(to.clone()),
                message: format!("Moving role '{role}' from host '{from}' to host '{to}'"),
            });
        }
        // The writer: orphaned -> promote the eligible host; with failback, back to prefer.
        if self.promotion.is_none() && self.mode.is(MonitorMode::Active) {
            let blocked = self.blocked.as_ref().is_some_and(|(until, _)| now < *until);
            match self.active_master().map(str::to_string) {
                None if !blocked => {
                    let writer = self.roles.writer_role().to_string();
                    if let Some(to) = self.roles.eligible_host(&writer, &is_eligible) {
                        self.start_promotion(
                            now,
                            None,
                            to,
                            "the writer role is orphaned".into(),
                            None,
                            out,
                        );
                    }
                }
                Some(current) if self.config.monitor.failback && !blocked => {
                    let prefer = self.roles.writer().and_then(|r| r.prefer.clone());
                    if let Some(p) = prefer.filter(|p| *p != current && is_eligible(p)) {
                        self.start_promotion(
                            now,
                            Some(current),
                            p.clone(),
                            format!("failback to preferred host '{p}'"),
                            None,
                            out,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    pub(crate) fn send_desired_now(&mut self, out: &mut Vec<CoreAction>) {
        self.send_desired(out);
    }

    /// Emits the desired state of every host whose desired state changed.
    pub(super) fn send_desired(&mut self, out: &mut Vec<CoreAction>) {
        if self.mode.is(MonitorMode::Passive) && self.network_ok {
            self.unpark_while_passive(out);
        }
        if self.mode.is(MonitorMode::Passive) || !self.network_ok {
            return;
        }
        let writer = self.active_master().map(str::to_string).unwrap_or_default();
        let mut changed = Vec::new();
        for h in &self.hosts {
            let roles = self.roles.host_roles(&h.name);
            let writable = writer == h.name;
            let parked = self.parked_for(&h.name, &roles, writable);
            let same = h.last_sent.as_ref().is_some_and(|d| {
                d.roles == roles
                    && d.parked == parked
                    && d.writable == writable
                    && d.state == h.state
                    && d.active_master == writer
            });
            if !same {
                changed.push((h.name.clone(), roles, parked, writable, h.state));
            }
        }
        if changed.is_empty() {
            return;
        }
        self.epoch += 1;
        for (name, roles, parked, writable, state) in changed {
            let desired = DesiredState {
                epoch: self.epoch,
                state,
                active_master: writer.clone(),
                writable,
                roles,
                parked,
            };
            if let Some(h) = self.host_mut(&name) {
                h.last_sent = Some(desired.clone());
            }
            out.push(CoreAction::SendDesired {
                host: name,
                desired,
            });
        }
    }

    /// A passive monitor changes nothing on the hosts, except a parking it asked for: the
    /// links re-send the last desired state, which would keep it forever.
    fn unpark_while_passive(&mut self, out: &mut Vec<CoreAction>) {
        let parked: Vec<(String, DesiredState)> = self
            .hosts
            .iter()
            .filter_map(|h| {
                let d = h.last_sent.as_ref()?;
                (!d.parked.is_empty()).then(|| (h.name.clone(), d.clone()))
            })
            .collect();
        for (name, mut desired) in parked {
            self.epoch += 1;
            desired.epoch = self.epoch;
            desired.parked.clear();
            if let Some(h) = self.host_mut(&name) {
                h.last_sent = Some(desired.clone());
            }
            out.push(CoreAction::SendDesired {
                host: name,
                desired,
            });
        }
    }

    pub(super) fn persist(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        if let Some(last) = &self.last_persisted {
            let same = self.matches_record(last);
            // The in-place reading must say what a whole record would (the simulator's
            // every event checks it).
            debug_assert_eq!(
                same,
                self.status_record(now).same_content(last),
                "matches_record disagrees with status_record"
            );
            if same {
                return;
            }
        }
        let record = self.status_record(now);
        self.last_persisted = Some(record.clone());
        out.push(CoreAction::Persist(record));
    }
}
