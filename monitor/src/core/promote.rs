//! Moving the writer role: fence the old writer, bring the candidate up to date, make it
//! the writer, then re-point every slave at one position of it (DESIGN §6.2, §6.3).
//!
//! ```text
//! Fencing ──> CatchUp ──> Survey ──> [Fetch from the most advanced slave] ──> StopReplication
//!    ──> Promote (desired state: writable + VIP + GARP) ──> Repoint slaves ──> done
//! ```
//! Fencing is confirmed by the old writer's own heartbeat (writer VIP gone, read-only or
//! mysqld down). When its agent cannot confirm, the monitor drops the connection and
//! waits until the agent's lease must have run out (it demotes itself then), and runs
//! kill_host_bin if configured; with fencing = "none" only kill_host_bin can fence.
//! Every phase has a deadline; a candidate that cannot catch up in promotion_timeout is
//! refused, not promoted.

use super::{Action, Cluster, Millis};
use mmm_common::gtid::GtidSet;
use mmm_common::proto::{self, ActionOutcome, Position, StatusReport};
use mmm_common::types::{Fencing, HostMode, HostState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillState {
    NotConfigured,
    NotNeeded,
    Running,
    Done { ok: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Fencing {
        /// Give up waiting for the agent's confirmation at this time.
        agent_deadline: Millis,
        /// Set once the connection was dropped: the lease has run out after this.
        lease_until: Option<Millis>,
        kill: KillState,
        /// "cannot fence" was reported already.
        stuck_reported: bool,
    },
    CatchUp {
        id: u64,
        deadline: Millis,
    },
    Survey {
        pending: BTreeSet<String>,
        sets: BTreeMap<String, GtidSet>,
        deadline: Millis,
    },
    FetchRepoint {
        id: u64,
        slave: String,
        target: GtidSet,
        deadline: Millis,
    },
    FetchWait {
        id: u64,
        slave: String,
        deadline: Millis,
    },
    StopReplication {
        id: u64,
        deadline: Millis,
    },
    Promote {
        epoch: Option<u32>,
        deadline: Millis,
    },
    Position {
        deadline: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub started: Millis,
    /// The control command waiting for the outcome (move_role).
    pub reply: Option<u64>,
    pub phase: Phase,
    /// (ms since start, step) for the failover timeline.
    pub timeline: Vec<(Millis, String)>,
}

impl Promotion {
    pub fn deadline(&self) -> Option<Millis> {
        match &self.phase {
            Phase::Fencing {
                agent_deadline,
                lease_until,
                ..
            } => Some(lease_until.unwrap_or(*agent_deadline)),
            Phase::CatchUp { deadline, .. }
            | Phase::Survey { deadline, .. }
            | Phase::FetchRepoint { deadline, .. }
            | Phase::FetchWait { deadline, .. }
            | Phase::StopReplication { deadline, .. }
            | Phase::Promote { deadline, .. }
            | Phase::Position { deadline } => Some(*deadline),
        }
    }

    fn step(&mut self, now: Millis, what: impl Into<String>) {
        self.timeline
            .push((now.saturating_sub(self.started), what.into()));
    }
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Cluster {
    fn fence_wait(&self) -> Millis {
        (ms(self.config.monitor.agent_timeout) * 2).max(1000)
    }

    fn promotion_timeout(&self) -> Millis {
        ms(self.config.monitor.promotion_timeout)
    }

    /// The writer's host left ONLINE (its role was cleared): fence it and promote the
    /// best candidate, if there is one.
    pub(crate) fn writer_lost(&mut self, now: Millis, old: &str, out: &mut Vec<Action>) {
        if self.promotion.is_some() {
            return;
        }
        let writer = self.roles.writer_role.clone();
        let candidates: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.name != old && self.eligible(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let is_candidate = |n: &str| candidates.iter().any(|c| c == n);
        match self.roles.eligible_host(&writer, &is_candidate) {
            Some(to) => self.start_promotion(
                now,
                Some(old.to_string()),
                to,
                format!("'{old}' lost the {writer} role"),
                None,
                out,
            ),
            None => {
                out.push(Action::Notify {
                    host: Some(old.into()),
                    message: format!(
                        "No host can take over the {writer} role from '{old}' at the moment"
                    ),
                });
                self.pending_fence = Some(old.to_string());
            }
        }
    }

    /// Starts moving the writer role to `to`. `from` is the old writer to fence (None when
    /// no host held it).
    pub(crate) fn start_promotion(
        &mut self,
        now: Millis,
        from: Option<String>,
        to: String,
        reason: String,
        reply: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let from = from
            .or_else(|| self.pending_fence.take())
            .filter(|f| *f != to);
        self.pending_fence = None;
        // The old writer loses the role now: its next desired state demotes it.
        self.roles.set_writer_holder(None);
        let needs_fence = from.is_some();
        let mut p = Promotion {
            from: from.clone(),
            to: to.clone(),
            reason: reason.clone(),
            started: now,
            reply,
            phase: Phase::Fencing {
                agent_deadline: now + self.fence_wait(),
                lease_until: None,
                kill: if self.config.monitor.kill_host_bin.is_some() {
                    KillState::NotNeeded
                } else {
                    KillState::NotConfigured
                },
                stuck_reported: false,
            },
            timeline: Vec::new(),
        };
        p.step(now, format!("promotion of '{to}' started: {reason}"));
        out.push(Action::Notify {
            host: Some(to.clone()),
            message: format!(
                "Moving the {} role to '{to}'{}: {reason}",
                self.roles.writer_role,
                from.as_deref()
                    .map(|f| format!(" from '{f}'"))
                    .unwrap_or_default()
            ),
        });
        self.promotion = Some(p);
        if !needs_fence {
            self.begin_catch_up(now, out);
        } else if let Some(f) = &from {
            // An unreachable agent cannot confirm: go for its lease at once.
            if !self.host(f).is_some_and(|h| h.agent_up) {
                self.fence_by_lease(now, out);
            }
        }
    }

    fn fence_by_lease(&mut self, now: Millis, out: &mut Vec<Action>) {
        let lease = ms(self.config.agent.lease) + ms(self.config.monitor.heartbeat_interval);
        let fencing = self.config.agent.fencing;
        let ping_ok = {
            let p = self.promotion.as_ref().and_then(|p| p.from.clone());
            p.and_then(|f| {
                self.host(&f)
                    .map(|h| self.check_ok(h, mmm_common::types::CheckKind::Ping, now))
            })
            .unwrap_or(false)
        };
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        let Some(from) = p.from.clone() else { return };
        if let Phase::Fencing {
            lease_until, kill, ..
        } = &mut p.phase
        {
            if lease_until.is_none() {
                out.push(Action::Disconnect { host: from.clone() });
                *lease_until = Some(if fencing == Fencing::Lease {
                    now + lease
                } else {
                    Millis::MAX
                });
                p.timeline.push((now.saturating_sub(p.started), format!("'{from}' cannot confirm its demotion: connection dropped, waiting for its lease")));
                if *kill == KillState::NotNeeded {
                    *kill = KillState::Running;
                    out.push(Action::KillHost {
                        host: from,
                        ping_ok,
                    });
                }
            }
        }
    }

    /// The old writer's heartbeat may confirm it is fenced.
    pub(crate) fn promotion_on_heartbeat(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<Action>,
    ) {
        let writer_vips: Vec<_> = self.roles.writer().map(|r| vec![r.ip]).unwrap_or_default();
        let Some(p) = &self.promotion else { return };
        if p.from.as_deref() != Some(host) || !matches!(p.phase, Phase::Fencing { .. }) {
            return;
        }
        let Some(view) = self.host(host).and_then(|h| h.view.clone()) else {
            return;
        };
        let vip_gone = !view.held_vips.iter().any(|ip| writer_vips.contains(ip));
        if vip_gone && (view.read_only || !view.mysql_up || view.self_fenced) {
            if let Some(p) = self.promotion.as_mut() {
                p.step(
                    now,
                    format!("'{host}' confirmed demoted (writer VIP removed, read-only)"),
                );
            }
            self.begin_catch_up(now, out);
        }
    }

    pub(crate) fn promotion_on_kill_host(&mut self, now: Millis, host: &str) {
        if let Some(p) = self.promotion.as_mut() {
            if p.from.as_deref() == Some(host) {
                if let Phase::Fencing { kill, .. } = &mut p.phase {
                    *kill = KillState::Done { ok: true };
                    p.timeline.push((
                        now.saturating_sub(p.started),
                        format!("kill_host_bin ran for '{host}'"),
                    ));
                }
            }
        }
    }

    fn begin_catch_up(&mut self, now: Millis, out: &mut Vec<Action>) {
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
        out.push(Action::AgentAction {
            host: p.to.clone(),
            id,
            action: proto::Action::CatchUp { target: None },
            deadline: Duration::from_millis(deadline),
        });
    }

    fn begin_survey(&mut self, now: Millis, out: &mut Vec<Action>) {
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
            out.push(Action::QueryStatus { host: host.clone() });
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
        out: &mut Vec<Action>,
    ) {
        let set = GtidSet::parse(&report.gtid_executed).unwrap_or_default();
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
                let position = if !set.is_empty() {
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

    /// Is a slave ahead of the candidate? Then fetch from the most advanced one first, so
    /// no slave is left with transactions the new master lacks.
    fn after_survey(&mut self, now: Millis, out: &mut Vec<Action>) {
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
                let (ip, port) = self
                    .host(&slave)
                    .map(|h| (h.ip, h.mysql_port))
                    .unwrap_or((std::net::Ipv4Addr::UNSPECIFIED, 3306));
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
                out.push(Action::AgentAction {
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

    fn begin_stop_replication(&mut self, now: Millis, out: &mut Vec<Action>) {
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
        out.push(Action::AgentAction {
            host: p.to.clone(),
            id,
            action: proto::Action::StopReplication,
            deadline: Duration::from_millis(deadline),
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn promotion_on_action(
        &mut self,
        now: Millis,
        host: &str,
        id: u64,
        outcome: ActionOutcome,
        detail: &str,
        _position: Option<Position>,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.promotion.as_ref() else {
            if outcome != ActionOutcome::Ok {
                out.push(Action::Notify {
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
                if ok || detail.contains("not a replica") || detail.contains("not replicating") {
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
                out.push(Action::AgentAction {
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
                    out.push(Action::Notify {
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
    pub(crate) fn abort_promotion(&mut self, now: Millis, reason: String, out: &mut Vec<Action>) {
        self.refuse(now, reason, out);
        // Not the candidate's lag: another candidate may be tried at once.
        self.blocked = None;
    }

    fn begin_promote(&mut self, now: Millis, out: &mut Vec<Action>) {
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
        out: &mut Vec<Action>,
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
        p.phase = Phase::Position { deadline };
        out.push(Action::QueryStatus { host: p.to.clone() });
    }

    /// Sends every slave the one position of the new master, then ends the promotion.
    fn repoint_slaves(&mut self, now: Millis, position: Position, out: &mut Vec<Action>) {
        let Some(mut p) = self.promotion.take() else {
            return;
        };
        let (ip, port) = self
            .host(&p.to)
            .map(|h| (h.ip, h.mysql_port))
            .expect("candidate exists");
        let slaves: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| {
                h.mode == HostMode::Slave && h.state != HostState::HardOffline && h.agent_up
            })
            .map(|h| h.name.clone())
            .collect();
        for s in &slaves {
            let id = self.next_id();
            out.push(Action::AgentAction {
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
        let total = now.saturating_sub(p.started);
        let timeline: Vec<String> = p
            .timeline
            .iter()
            .map(|(t, s)| format!("+{t}ms {s}"))
            .collect();
        out.push(Action::Notify {
            host: Some(p.to.clone()),
            message: format!(
                "'{}' is the new writer after {total} ms: {}",
                p.to,
                timeline.join("; ")
            ),
        });
        self.blocked = None;
        if let Some(id) = p.reply {
            let text = match &p.from {
                Some(from) => format!(
                    "OK: Role '{}' has been moved from '{from}' to '{}'. Now you can wait some time and check new roles info!",
                    self.roles.writer_role, p.to
                ),
                None => format!("OK: Role '{}' has been assigned to '{}'.", self.roles.writer_role, p.to),
            };
            out.push(Action::Reply { id, text });
        }
    }

    /// Gives up this promotion: the writer stays unassigned, the reason is shown, and a
    /// new attempt waits promotion_timeout.
    fn refuse(&mut self, now: Millis, reason: String, out: &mut Vec<Action>) {
        let Some(p) = self.promotion.take() else {
            return;
        };
        self.roles.set_writer_holder(None);
        out.push(Action::Notify {
            host: Some(p.to.clone()),
            message: format!("Refusing to promote '{}': {reason}", p.to),
        });
        self.blocked = Some((
            now + self.promotion_timeout(),
            format!("promotion of '{}' refused: {reason}", p.to),
        ));
        // The old writer is fenced by now (or still must be): keep it to fence next time.
        if !matches!(p.phase, Phase::Fencing { .. }) {
            self.pending_fence = None;
        } else {
            self.pending_fence = p.from.clone();
        }
        if let Some(id) = p.reply {
            out.push(Action::Reply {
                id,
                text: format!("ERROR: {reason}"),
            });
        }
    }

    /// Time-driven progress: fencing deadlines, leases, phase timeouts.
    pub(crate) fn promotion_tick(&mut self, now: Millis, out: &mut Vec<Action>) {
        let Some(p) = self.promotion.clone() else {
            return;
        };
        match p.phase {
            Phase::Fencing {
                agent_deadline,
                lease_until,
                kill,
                stuck_reported,
            } => {
                let from = p.from.clone().unwrap_or_default();
                if lease_until.is_none()
                    && (now >= agent_deadline || !self.host(&from).is_some_and(|h| h.agent_up))
                {
                    self.fence_by_lease(now, out);
                    return;
                }
                let Some(until) = lease_until else { return };
                let kill_done = !matches!(kill, KillState::Running);
                let killed_ok = matches!(kill, KillState::Done { ok: true });
                let lease_over = self.config.agent.fencing == Fencing::Lease && now >= until;
                if (lease_over && kill_done) || killed_ok {
                    if let Some(p) = self.promotion.as_mut() {
                        p.step(
                            now,
                            if lease_over {
                                format!("lease of '{from}' expired: it has demoted itself")
                            } else {
                                format!("'{from}' killed by kill_host_bin")
                            },
                        );
                    }
                    self.begin_catch_up(now, out);
                } else if self.config.agent.fencing == Fencing::None
                    && matches!(kill, KillState::NotConfigured)
                    && !stuck_reported
                {
                    out.push(Action::Notify {
                        host: Some(from.clone()),
                        message: format!("Cannot fence '{from}': its agent is unreachable, fencing = \"none\" and no kill_host_bin; not promoting while it may still write"),
                    });
                    if let Some(Phase::Fencing { stuck_reported, .. }) =
                        self.promotion.as_mut().map(|p| &mut p.phase)
                    {
                        *stuck_reported = true;
                    }
                }
            }
            Phase::Survey { deadline, .. } if now >= deadline => self.after_survey(now, out),
            Phase::CatchUp { deadline, .. }
            | Phase::FetchRepoint { deadline, .. }
            | Phase::FetchWait { deadline, .. }
            | Phase::StopReplication { deadline, .. }
            | Phase::Promote { deadline, .. }
            | Phase::Position { deadline }
                if now >= deadline =>
            {
                self.refuse(
                    now,
                    format!(
                        "'{}' did not answer in time ({:?})",
                        p.to,
                        phase_name(&p.phase)
                    ),
                    out,
                );
            }
            _ => {}
        }
    }
}

fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Fencing { .. } => "fencing",
        Phase::CatchUp { .. } => "catch-up",
        Phase::Survey { .. } => "survey",
        Phase::FetchRepoint { .. } | Phase::FetchWait { .. } => "fetch from slave",
        Phase::StopReplication { .. } => "stop replication",
        Phase::Promote { .. } => "promote",
        Phase::Position { .. } => "position",
    }
}
