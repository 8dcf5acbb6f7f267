//! The promotion after fencing: the candidate catches up, the slaves' GTID sets are
//! compared (fetching from one that is ahead), replication stops, the candidate takes the
//! role, and the slaves are re-pointed at it.

use super::Phase;
use crate::core::{Cluster, CoreAction, Millis};
use mmm_common::gtid::GtidSet;
use mmm_common::proto::{self, ActionOutcome, Position, StatusReport};
use mmm_common::types::{HostMode, HostState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

impl Cluster {
    pub(super) fn begin_catch_up(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let id = self.next_id();
        let deadline = self.promotion_timeout();
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        p.step(now, format!("catching up '{}' on its relay log", p.to));
        p.phase = Phase::CatchUp {
            id,
            deadline: now + deadline + 2000,
        };
        out.push(CoreAction::AgentAction {
            host: p.to.clone(),
            id,
            action: proto::Action::CatchUp { target: None },
            deadline: Duration::from_millis(deadline),
        });
    }

    pub(super) fn begin_survey(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let Some(to) = self.promotion.as_ref().map(|p| p.to.clone()) else {
            return;
        };
        let mut pending = BTreeSet::new();
        pending.insert(to.clone());
        for h in &self.hosts {
            if h.mode == HostMode::Slave && h.agent_up && h.state != HostState::HardOffline {
                pending.insert(h.name.clone());
            }
        }
        for host in &pending {
            out.push(CoreAction::QueryStatus { host: host.clone() });
        }
        let deadline = now + self.fence_wait();
        if let Some(p) = self.promotion.as_mut() {
            p.step(now, "comparing GTID sets of the candidate and the slaves");
            p.phase = Phase::Survey {
                pending,
                sets: BTreeMap::new(),
                deadline,
            };
        }
    }

    pub(crate) fn promotion_on_status(
        &mut self,
        now: Millis,
        host: &str,
        report: &StatusReport,
        out: &mut Vec<CoreAction>,
    ) {
        // Fail closed: a set that cannot be read or parsed is unknown, never empty (an
        // empty set would pass every "is anyone ahead" comparison).
        let set = match report.gtid_set() {
            Ok(set) => set,
            Err(e) => {
                self.promotion_unknown_gtid(now, host, report.mysql_up, e.to_string(), out);
                return;
            }
        };
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        match &mut p.phase {
            Phase::Survey { pending, sets, .. } => {
                if pending.remove(host) {
                    sets.insert(host.to_string(), set);
                }
                if pending.is_empty() {
                    self.after_survey(now, out);
                }
            }
            Phase::Position { .. } if host == p.to => {
                // MariaDB always has GTIDs: even an empty set is a GTID position (the
                // slaves keep GTID replication); file/pos only where GTIDs are off.
                let position = if !set.is_empty() || report.server == proto::ServerKind::MariaDb {
                    Position::Gtid(set.position())
                } else if let Some((file, pos)) = report.binlog.clone() {
                    Position::FilePos { file, pos }
                } else {
                    Position::Gtid(String::new())
                };
                self.repoint_slaves(now, position, out);
            }
            _ => {}
        }
    }

    /// A status report whose GTID set is unknown. The candidate's, or a live slave's,
    /// refuses the promotion: no one can tell whether that slave is ahead of the
    /// candidate. A slave whose mysqld does not answer is left out of the comparison, as
    /// one whose agent does not answer in time is.
    pub(super) fn promotion_unknown_gtid(
        &mut self,
        now: Millis,
        host: &str,
        mysql_up: bool,
        why: String,
        out: &mut Vec<CoreAction>,
    ) {
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        let to = p.to.clone();
        match &mut p.phase {
            Phase::Survey { pending, .. } if pending.contains(host) => {
                if host != to && !mysql_up {
                    pending.remove(host);
                    let done = pending.is_empty();
                    p.step(
                        now,
                        format!("slave '{host}' left out of the GTID comparison: {why}"),
                    );
                    if done {
                        self.after_survey(now, out);
                    }
                } else {
                    self.refuse(
                        now,
                        format!("cannot compare the GTID sets of '{to}' and its slaves: '{host}': {why}"),
                        out,
                    );
                }
            }
            Phase::Position { .. } if host == to => self.refuse(
                now,
                format!("cannot re-point the slaves at '{to}': {why}"),
                out,
            ),
            _ => {}
        }
    }

    /// Is a slave ahead of the candidate? Then fetch from the most advanced one first, so
    /// no slave is left with transactions the new master lacks.
    pub(super) fn after_survey(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let Some(p) = self.promotion.as_ref() else {
            return;
        };
        let Phase::Survey { sets, .. } = &p.phase else {
            return;
        };
        let to = p.to.clone();
        let candidate = sets.get(&to).cloned().unwrap_or_default();
        let ahead: Option<(String, GtidSet)> = sets
            .iter()
            .filter(|(h, s)| **h != to && !candidate.contains(s))
            // The most advanced: one whose set contains the others' (ties: config order).
            .max_by_key(|(_, s)| sets.values().filter(|o| s.contains(o)).count())
            .map(|(h, s)| (h.clone(), s.clone()));
        match ahead {
            Some((slave, target)) => {
                let id = self.next_id();
                let Some((ip, port)) = self.host(&slave).map(|h| (h.ip, h.mysql_port)) else {
                    self.refuse(
                        now,
                        format!("slave '{slave}' is ahead of '{to}' but is not a configured host"),
                        out,
                    );
                    return;
                };
                let deadline = self.promotion_timeout();
                let p = self.promotion.as_mut().expect("checked above");
                p.step(
                    now,
                    format!(
                        "slave '{slave}' is ahead of '{to}': fetching {} from it",
                        target.missing_from(&candidate)
                    ),
                );
                p.phase = Phase::FetchRepoint {
                    id,
                    slave: slave.clone(),
                    target: target.clone(),
                    deadline: now + deadline,
                };
                out.push(CoreAction::AgentAction {
                    host: to,
                    id,
                    action: proto::Action::ChangeMaster {
                        host: ip,
                        port,
                        position: Position::Gtid(candidate.position()),
                    },
                    deadline: Duration::from_millis(deadline),
                });
            }
            None => self.begin_stop_replication(now, out),
        }
    }

    pub(super) fn begin_stop_replication(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let id = self.next_id();
        let deadline = self.promotion_timeout();
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        p.step(now, format!("stopping replication on '{}'", p.to));
        p.phase = Phase::StopReplication {
            id,
            deadline: now + deadline + 2000,
        };
        out.push(CoreAction::AgentAction {
            host: p.to.clone(),
            id,
            action: proto::Action::StopReplication,
            deadline: Duration::from_millis(deadline),
        });
    }

    pub(crate) fn promotion_on_action(
        &mut self,
        now: Millis,
        host: &str,
        id: u64,
        outcome: ActionOutcome,
        detail: &str,
        out: &mut Vec<CoreAction>,
    ) {
        let Some(p) = self.promotion.as_ref() else {
            if outcome != ActionOutcome::Ok {
                out.push(CoreAction::Notify {
                    host: Some(host.into()),
                    message: format!("Action on '{host}' did not succeed ({outcome:?}): {detail}"),
                });
            }
            return;
        };
        let to = p.to.clone();
        let ok = outcome == ActionOutcome::Ok;
        match p.phase.clone() {
            Phase::CatchUp { id: want, .. } if want == id => {
                // A candidate that replicates from nobody has nothing to catch up on.
                if ok || outcome == ActionOutcome::NotReplica {
                    self.begin_survey(now, out);
                } else {
                    self.refuse(now, format!("'{to}' did not catch up on its relay log within promotion_timeout: {detail}"), out);
                }
            }
            Phase::FetchRepoint {
                id: want,
                slave,
                target,
                ..
            } if want == id => {
                if !ok {
                    self.refuse(
                        now,
                        format!(
                            "could not point '{to}' at the more advanced slave '{slave}': {detail}"
                        ),
                        out,
                    );
                    return;
                }
                let wait_id = self.next_id();
                let deadline = self.promotion_timeout();
                if let Some(p) = self.promotion.as_mut() {
                    p.phase = Phase::FetchWait {
                        id: wait_id,
                        slave,
                        deadline: now + deadline + 2000,
                    };
                }
                out.push(CoreAction::AgentAction {
                    host: to,
                    id: wait_id,
                    action: proto::Action::CatchUp {
                        target: Some(Position::Gtid(target.position())),
                    },
                    deadline: Duration::from_millis(deadline),
                });
            }
            Phase::FetchWait {
                id: want, slave, ..
            } if want == id => {
                if ok {
                    if let Some(p) = self.promotion.as_mut() {
                        p.step(now, format!("'{to}' has every transaction '{slave}' had"));
                    }
                    self.begin_stop_replication(now, out);
                } else {
                    self.refuse(now, format!("'{to}' could not fetch the transactions of '{slave}' within promotion_timeout: {detail}"), out);
                }
            }
            Phase::StopReplication { id: want, .. } if want == id => {
                if ok {
                    self.begin_promote(now, out);
                } else {
                    self.refuse(
                        now,
                        format!("could not stop replication on '{to}': {detail}"),
                        out,
                    );
                }
            }
            _ => {
                if !ok {
                    out.push(CoreAction::Notify {
                        host: Some(host.into()),
                        message: format!(
                            "Action on '{host}' did not succeed ({outcome:?}): {detail}"
                        ),
                    });
                }
            }
        }
    }

    /// Ends a promotion whose candidate became unfit.
    pub(crate) fn abort_promotion(
        &mut self,
        now: Millis,
        reason: String,
        out: &mut Vec<CoreAction>,
    ) {
        self.refuse(now, reason, out);
        // Not the candidate's lag: another candidate may be tried at once.
        self.blocked = None;
    }

    pub(super) fn begin_promote(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let deadline = now + self.promotion_timeout();
        let Some(to) = self.promotion.as_ref().map(|p| p.to.clone()) else {
            return;
        };
        // The candidate must still be fit at the moment it is given the role.
        if !self.eligible(&to) {
            self.refuse(
                now,
                format!("'{to}' is no longer ONLINE with a reachable agent"),
                out,
            );
            return;
        }
        // With GTIDs the slaves can follow the candidate now: it holds everything they
        // may lack (survey) and writes nothing until it is writable. The first commit
        // after that then finds a semi-sync replica connected.
        let gtid = self
            .host(&to)
            .and_then(|h| h.gtid.as_ref())
            .is_some_and(|g| !g.is_empty());
        if gtid {
            let slaves = self.send_repoints(now, &to, Position::Gtid(String::new()), out);
            if let Some(p) = self.promotion.as_mut() {
                p.slaves_repointed = true;
                p.step(
                    now,
                    format!(
                        "slaves {} re-pointed at '{to}' (GTID, each from what it applied)",
                        if slaves.is_empty() {
                            "(none)".into()
                        } else {
                            slaves.join(", ")
                        }
                    ),
                );
            }
        }
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        p.step(
            now,
            format!("making '{to}' writable and giving it the writer VIP"),
        );
        p.phase = Phase::Promote {
            epoch: None,
            deadline,
        };
        self.roles.set_writer_holder(Some(to));
        // send_desired (after_changes) emits the writable desired state; remember its epoch.
        self.send_desired_now(out);
        let epoch = self.epoch;
        if let Some(p) = self.promotion.as_mut() {
            p.phase = Phase::Promote {
                epoch: Some(epoch),
                deadline,
            };
        }
    }

    pub(crate) fn promotion_on_applied(
        &mut self,
        now: Millis,
        host: &str,
        epoch: u32,
        failures: &[String],
        out: &mut Vec<CoreAction>,
    ) {
        let Some(p) = self.promotion.as_ref() else {
            return;
        };
        let Phase::Promote {
            epoch: Some(want),
            deadline,
        } = p.phase
        else {
            return;
        };
        if host != p.to || epoch < want {
            return;
        }
        if !failures.is_empty() {
            let to = p.to.clone();
            self.roles.set_writer_holder(None);
            self.refuse(
                now,
                format!(
                    "'{to}' could not take the writer role: {}",
                    failures.join("; ")
                ),
                out,
            );
            return;
        }
        let p = self.promotion.as_mut().expect("checked above");
        p.step(
            now,
            format!(
                "'{}' is writable and holds the writer VIP (gratuitous ARP sent)",
                p.to
            ),
        );
        if p.slaves_repointed {
            self.finish_promotion(now, out);
            return;
        }
        p.phase = Phase::Position { deadline };
        out.push(CoreAction::QueryStatus { host: p.to.clone() });
    }

    /// Sends every slave the one position of the new master, then ends the promotion.
    pub(super) fn repoint_slaves(
        &mut self,
        now: Millis,
        position: Position,
        out: &mut Vec<CoreAction>,
    ) {
        let Some(to) = self.promotion.as_ref().map(|p| p.to.clone()) else {
            return;
        };
        let slaves = self.send_repoints(now, &to, position, out);
        if let Some(p) = self.promotion.as_mut() {
            p.step(
                now,
                format!(
                    "slaves {} re-pointed at '{}' from one position",
                    if slaves.is_empty() {
                        "(none)".into()
                    } else {
                        slaves.join(", ")
                    },
                    p.to
                ),
            );
        }
        self.finish_promotion(now, out);
    }

    /// A ChangeMaster to `to` for every live slave; returns their names.
    pub(super) fn send_repoints(
        &mut self,
        now: Millis,
        to: &str,
        position: Position,
        out: &mut Vec<CoreAction>,
    ) -> Vec<String> {
        let Some((ip, port)) = self.host(to).map(|h| (h.ip, h.mysql_port)) else {
            return Vec::new();
        };
        let slaves: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| {
                h.mode == HostMode::Slave && h.state != HostState::HardOffline && h.agent_up
            })
            .map(|h| h.name.clone())
            .collect();
        for s in &slaves {
            // Recorded, so the stray-slave fixer does not send the same re-point again.
            if let Some(h) = self.host_mut(s) {
                h.repointed = Some((ip, now));
            }
            let id = self.next_id();
            out.push(CoreAction::AgentAction {
                host: s.clone(),
                id,
                action: proto::Action::ChangeMaster {
                    host: ip,
                    port,
                    position: position.clone(),
                },
                deadline: Duration::from_millis(self.promotion_timeout()),
            });
        }
        slaves
    }
}
