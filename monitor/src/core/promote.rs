//! Moving the writer role: fence the old writer, bring the candidate up to date, make it
//! the writer, then re-point every slave at one position of it (docs/fencing.md, docs/design.md).
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

use super::history::{Failover, Outcome};
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
    /// Every host that may hold the writer VIP or accept writes must be fenced first.
    Fencing {
        targets: BTreeMap<String, Fence>,
        /// Give up waiting for agents' confirmations at this time.
        agent_deadline: Millis,
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
pub struct Fence {
    /// The host's own heartbeat showed it demoted.
    pub confirmed: bool,
    /// Set once the connection was dropped: the lease has run out after this.
    pub lease_until: Option<Millis>,
    pub kill: KillState,
    /// "cannot fence" was reported already.
    pub stuck_reported: bool,
    /// In a fleet: waiting for the daemon's LeaseEnded (the agent's etcd lease).
    pub awaiting_etcd: bool,
}

/// A fencing target of the promotion in progress, with what its timeline needs.
struct Target<'a> {
    fence: &'a mut Fence,
    timeline: &'a mut Vec<(Millis, String)>,
    started: Millis,
}

impl Target<'_> {
    fn step(&mut self, now: Millis, what: String) {
        self.timeline.push((now.saturating_sub(self.started), what));
    }
}

impl Fence {
    fn done(&self, now: Millis, fencing: Fencing) -> bool {
        let lease_over = fencing == Fencing::Lease && self.lease_until.is_some_and(|t| now >= t);
        self.confirmed
            || matches!(self.kill, KillState::Done { ok: true })
            || (lease_over && !matches!(self.kill, KillState::Running))
    }
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
    /// The slaves were re-pointed at the candidate before it became writable (GTID: each
    /// resumes from what it applied), so the first semi-sync commit finds a replica
    /// already connected instead of waiting for one to be re-pointed.
    pub slaves_repointed: bool,
}

impl Promotion {
    /// Every time at which the phase decides something by itself: fencing has one per
    /// target's lease besides its own deadline, and a passed one must not hide the rest.
    pub fn deadlines(&self) -> Vec<Millis> {
        match &self.phase {
            Phase::Fencing {
                agent_deadline,
                targets,
            } => targets
                .values()
                .filter_map(|f| f.lease_until)
                .chain(std::iter::once(*agent_deadline))
                .collect(),
            Phase::CatchUp { deadline, .. }
            | Phase::Survey { deadline, .. }
            | Phase::FetchRepoint { deadline, .. }
            | Phase::FetchWait { deadline, .. }
            | Phase::StopReplication { deadline, .. }
            | Phase::Promote { deadline, .. }
            | Phase::Position { deadline } => vec![*deadline],
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
    /// `host` as a target of the promotion's fencing phase, if it is one now.
    fn fencing_target(&mut self, host: &str) -> Option<Target<'_>> {
        let Some(Promotion {
            started,
            timeline,
            phase: Phase::Fencing { targets, .. },
            ..
        }) = self.promotion.as_mut()
        else {
            return None;
        };
        Some(Target {
            fence: targets.get_mut(host)?,
            timeline,
            started: *started,
        })
    }

    fn fence_wait(&self) -> Millis {
        ms(self.timing.answer_wait)
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
        match self.next_writer(old) {
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

    /// Who would take the writer role from `old` now.
    pub(crate) fn next_writer(&self, old: &str) -> Option<String> {
        let candidates: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| h.name != old && self.eligible(&h.name))
            .map(|h| h.name.as_str())
            .collect();
        let is_candidate = |n: &str| candidates.contains(&n);
        self.roles
            .eligible_host(&self.roles.writer_role, &is_candidate)
    }

    /// Hosts other than `to` that may hold the writer VIP or accept writes, as far as
    /// their last report tells: each must be fenced before `to` is promoted. A master
    /// this monitor has not heard from since it started is one (a monitor taking over
    /// from another cannot know what its agent was told; in a fleet its own etcd lease
    /// may keep it writing).
    fn writer_suspects(&self, to: &str) -> BTreeSet<String> {
        let writer_ip = self.roles.writer_ip();
        let masters = self.roles.role_hosts(&self.roles.writer_role);
        self.hosts
            .iter()
            .filter(|h| h.name != to)
            .filter(|h| match h.view.as_ref() {
                Some(v) => {
                    let vip = writer_ip.is_some_and(|ip| v.held_vips.contains(&ip));
                    vip || (v.mysql_up && !v.read_only)
                }
                None => masters.contains(&h.name),
            })
            .map(|h| h.name.clone())
            .collect()
    }

    /// Starts moving the writer role to `to`. `from` is the old writer (None when no
    /// host held the role); it and every other host that may still write are fenced first.
    pub(crate) fn start_promotion(
        &mut self,
        now: Millis,
        from: Option<String>,
        to: String,
        reason: String,
        reply: Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let mut targets: BTreeSet<String> = self.writer_suspects(&to);
        targets.extend(from.iter().cloned());
        targets.extend(self.pending_fence.take());
        targets.remove(&to);
        let from = from.filter(|f| *f != to);
        // The old writer loses the role now: its next desired state demotes it.
        self.roles.set_writer_holder(None);
        let kill = if self.config.monitor.kill_host_bin.is_some() {
            KillState::NotNeeded
        } else {
            KillState::NotConfigured
        };
        let fences: BTreeMap<String, Fence> = targets
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    Fence {
                        confirmed: false,
                        lease_until: None,
                        kill: kill.clone(),
                        stuck_reported: false,
                        awaiting_etcd: false,
                    },
                )
            })
            .collect();
        let mut p = Promotion {
            from: from.clone(),
            to: to.clone(),
            reason: reason.clone(),
            started: now,
            reply,
            phase: Phase::Fencing {
                targets: fences,
                agent_deadline: now + self.fence_wait(),
            },
            timeline: Vec::new(),
            slaves_repointed: false,
        };
        p.step(now, format!("promotion of '{to}' started: {reason}"));
        if !targets.is_empty() {
            p.step(
                now,
                format!(
                    "fencing {} first",
                    targets
                        .iter()
                        .map(|t| format!("'{t}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
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
        // An unreachable agent cannot confirm: go for its lease at once. A reachable one
        // whose last view already shows it demoted (no writer VIP; read-only or mysqld
        // down) is confirmed now, not at its next heartbeat: an unchanged view reaches
        // the core only once a second.
        for t in &targets {
            if self.host(t).is_some_and(|h| h.agent_up) {
                self.promotion_on_heartbeat(now, t, out);
            } else {
                self.fence_by_lease(now, t, out);
            }
        }
        self.fencing_progress(now, out);
    }

    /// When the old writer is dead, its slaves' IO threads only retry a vanished host, and
    /// a STOP SLAVE waits for them: stop them once it is fenced (never before: while it may
    /// still commit, a stopped replica lets semi-sync fall back to async and the old writer
    /// acknowledges writes no replica has), before catch-up, so that re-pointing them
    /// later is quick. Their SQL threads go on applying what they
    /// received (the survey compares what they applied). The candidate's too: the
    /// catch-up waits for what its IO thread received, which cannot grow any more. With
    /// semi-sync, MariaDB's STOP of an IO thread first connects to the master to kill its
    /// dump thread, bounded by rpl_semi_sync_slave_kill_conn_timeout (~2 s measured when
    /// the master's host is gone), which the agent's prohibit route to the vanished source
    /// cuts short. Not done in a switchover.
    fn stop_slaves_of_dead_master(
        &mut self,
        from: Option<&str>,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        let Some(old) = from.and_then(|f| self.host(f)).cloned() else {
            return;
        };
        if self.alive(&old, now) {
            return;
        }
        // Stopped early already (the writer was isolated): the promotion re-points them.
        self.early_stopped = None;
        self.stop_io_threads_of(&old.name, out);
    }

    /// STOP SLAVE IO_THREAD on every reachable replica of `master`; returns their names.
    pub(crate) fn stop_io_threads_of(
        &mut self,
        master: &str,
        out: &mut Vec<Action>,
    ) -> Vec<String> {
        let Some(old) = self.host(master).cloned() else {
            return Vec::new();
        };
        let deadline = Duration::from_millis(self.promotion_timeout());
        let slaves: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.name != old.name && h.agent_up)
            .filter(|h| {
                h.view
                    .as_ref()
                    .is_some_and(|v| v.source == Some((old.ip, old.mysql_port)))
            })
            .map(|h| h.name.clone())
            .collect();
        for s in &slaves {
            let id = self.next_id();
            out.push(Action::AgentAction {
                host: s.clone(),
                id,
                action: proto::Action::StopIoThread { source: old.ip },
                deadline,
            });
        }
        slaves
    }

    fn fence_by_lease(&mut self, now: Millis, target: &str, out: &mut Vec<Action>) {
        let lease = ms(self.timing.monitor_counts_lease_over);
        // The Disconnect below turns the hold into the link's usual lease-long stay-away.
        let isolated = self.host_mut(target).and_then(|h| h.isolated_since.take());
        let fencing = self.config.agent.fencing;
        let ping_ok = self
            .host(target)
            .is_some_and(|h| self.check_ok(h, mmm_common::types::CheckKind::Ping, now));
        let fleet = fencing == Fencing::Lease && self.config.coordination.is_some();
        let Some(mut t) = self.fencing_target(target) else {
            return;
        };
        let f = &mut *t.fence;
        if f.lease_until.is_some() || f.confirmed {
            return;
        }
        // Held down since its agent and ping fell silent: nothing renewed its lease since.
        let since = isolated.unwrap_or(now);
        out.push(Action::Disconnect {
            host: target.to_string(),
        });
        // In a fleet the agent's permit is its own etcd lease, which no monitor renews:
        // counting from here proves nothing. The daemon ends it and reports LeaseEnded.
        f.lease_until = Some(if fencing == Fencing::Lease && !fleet {
            since + lease
        } else {
            Millis::MAX
        });
        f.awaiting_etcd = fleet;
        if fleet {
            out.push(Action::EndLease {
                host: target.to_string(),
            });
        }
        if f.kill == KillState::NotNeeded {
            f.kill = KillState::Running;
            out.push(Action::KillHost {
                host: target.to_string(),
                ping_ok,
            });
        }
        t.step(
            now,
            format!(
                "'{target}' cannot confirm its demotion: connection dropped, waiting for its lease"
            ),
        );
    }

    /// In a fleet: the target's etcd lease is over (the agent gave the writer up before).
    pub(crate) fn promotion_on_lease_ended(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(mut t) = self.fencing_target(host) else {
            return;
        };
        if std::mem::take(&mut t.fence.awaiting_etcd) {
            t.fence.lease_until = Some(now);
            t.step(
                now,
                format!("'{host}' holds no writer permit: its etcd lease ended"),
            );
        }
        self.fencing_progress(now, out);
    }

    /// Moves on to catch-up once every target is fenced; reports targets that cannot be.
    fn fencing_progress(&mut self, now: Millis, out: &mut Vec<Action>) {
        let fencing = self.config.agent.fencing;
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        let Phase::Fencing { targets, .. } = &mut p.phase else {
            return;
        };
        if targets.values().all(|f| f.done(now, fencing)) {
            p.step(now, "every possible writer is fenced");
            let from = p.from.clone();
            self.stop_slaves_of_dead_master(from.as_deref(), now, out);
            self.begin_catch_up(now, out);
            return;
        }
        for (t, f) in targets.iter_mut() {
            if fencing == Fencing::None
                && f.lease_until.is_some()
                && f.kill == KillState::NotConfigured
                && !f.stuck_reported
            {
                f.stuck_reported = true;
                out.push(Action::Notify {
                    host: Some(t.clone()),
                    message: format!("Cannot fence '{t}': its agent is unreachable, fencing = \"none\" and no kill_host_bin; not promoting while it may still write"),
                });
            }
        }
    }

    /// A fencing target's heartbeat may confirm it is fenced.
    pub(crate) fn promotion_on_heartbeat(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<Action>,
    ) {
        let writer_ip = self.roles.writer_ip();
        let Some(view) = self.host(host).and_then(|h| h.view.clone()) else {
            return;
        };
        let Some(mut t) = self.fencing_target(host) else {
            return;
        };
        let vip_gone = !writer_ip.is_some_and(|ip| view.held_vips.contains(&ip));
        // MYSQL_UP clear is not "mysqld cannot be reached": the agent keeps it set while
        // the server may be writable (it last said read_only = 0, a lift may still run,
        // or it never answered), so clear means read_only = 1 read back before the
        // silence, or the process gone.
        if !t.fence.confirmed && vip_gone && (view.read_only || !view.mysql_up || view.self_fenced)
        {
            t.fence.confirmed = true;
            t.step(
                now,
                format!("'{host}' confirmed demoted (writer VIP removed, read-only)"),
            );
            self.fencing_progress(now, out);
        }
    }

    pub(crate) fn promotion_on_kill_host(
        &mut self,
        now: Millis,
        host: &str,
        ok: bool,
        out: &mut Vec<Action>,
    ) {
        if let Some(mut t) = self.fencing_target(host) {
            t.fence.kill = KillState::Done { ok };
            t.step(
                now,
                format!(
                    "kill_host_bin ran for '{host}' ({})",
                    if ok { "ok" } else { "failed" }
                ),
            );
        }
        self.fencing_progress(now, out);
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
    fn promotion_unknown_gtid(
        &mut self,
        now: Millis,
        host: &str,
        mysql_up: bool,
        why: String,
        out: &mut Vec<Action>,
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
        if p.slaves_repointed {
            self.finish_promotion(now, out);
            return;
        }
        p.phase = Phase::Position { deadline };
        out.push(Action::QueryStatus { host: p.to.clone() });
    }

    /// Sends every slave the one position of the new master, then ends the promotion.
    fn repoint_slaves(&mut self, now: Millis, position: Position, out: &mut Vec<Action>) {
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
    fn send_repoints(
        &mut self,
        now: Millis,
        to: &str,
        position: Position,
        out: &mut Vec<Action>,
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
        slaves
    }

    /// The candidate is the writer: the timeline is told, the peer rejoins, the operator's
    /// command (move_role) is answered.
    fn finish_promotion(&mut self, now: Millis, out: &mut Vec<Action>) {
        let Some(p) = self.promotion.take() else {
            return;
        };
        // The peer is rejoined just below: a rejoin it asked for meanwhile is this one.
        if let Some(peer) = self.host(&p.to).and_then(|h| h.peer.clone()) {
            self.rejoin_after_promotion.remove(&peer);
        }
        self.history
            .failover(Failover::of(&p, now, Outcome::Promoted, None));
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
        // The promotion stopped the new master's replication; a healthy peer rejoins
        // master-master replication both ways (a failed one does when set online).
        let peer = self.host(&p.to).and_then(|h| h.peer.clone());
        if let Some(peer) = peer.filter(|x| {
            self.host(x)
                .is_some_and(|h| h.state == HostState::Online && h.agent_up)
        }) {
            self.rejoin_replication(now, &peer, out);
        }
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
        self.history.failover(Failover::of(
            &p,
            now,
            Outcome::Refused,
            Some(reason.clone()),
        ));
        out.push(Action::Notify {
            host: Some(p.to.clone()),
            message: format!("Refusing to promote '{}': {reason}", p.to),
        });
        self.blocked = Some((
            now + self.promotion_timeout(),
            format!("promotion of '{}' refused: {reason}", p.to),
        ));
        // Whoever may still hold the writer is fenced by the next promotion: an unfenced
        // target, or the candidate once it was told to take the role.
        self.pending_fence = match &p.phase {
            Phase::Fencing { targets, .. } => {
                let fencing = self.config.agent.fencing;
                targets
                    .iter()
                    .find(|(_, f)| !f.done(now, fencing))
                    .map(|(t, _)| t.clone())
            }
            Phase::Promote { .. } | Phase::Position { .. } => Some(p.to.clone()),
            _ => None,
        };
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
                targets,
            } => {
                let late: Vec<String> = targets
                    .iter()
                    .filter(|(t, f)| {
                        !f.confirmed
                            && f.lease_until.is_none()
                            && (now >= agent_deadline || !self.host(t).is_some_and(|h| h.agent_up))
                    })
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in late {
                    self.fence_by_lease(now, &t, out);
                }
                self.fencing_progress(now, out);
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
