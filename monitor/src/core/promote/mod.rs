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

mod fence;
mod steps;

use super::history::{Failover, Outcome};
use super::timers::Deadlines;
use super::{Cluster, CoreAction, FencingMethod, Millis};
use mmm_common::gtid::GtidSet;
use mmm_common::types::HostState;
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
    fn done(&self, now: Millis, fencing: FencingMethod) -> bool {
        let lease_over = fencing.lease() && self.lease_until.is_some_and(|t| now >= t);
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

    /// The promotion's phase deadlines, and when a refused one may be retried.
    pub(super) fn promotion_deadlines(&self, d: &mut Deadlines) {
        if let Some(p) = &self.promotion {
            for t in p.deadlines() {
                d.at(t);
            }
        }
        if let Some((until, _)) = &self.blocked {
            d.at(*until);
        }
    }

    fn fence_wait(&self) -> Millis {
        ms(self.timing.answer_wait)
    }

    fn promotion_timeout(&self) -> Millis {
        ms(self.config.monitor.promotion_timeout)
    }

    /// The writer's host left ONLINE (its role was cleared): fence it and promote the
    /// best candidate, if there is one.
    pub(crate) fn writer_lost(&mut self, now: Millis, old: &str, out: &mut Vec<CoreAction>) {
        if self.promotion.is_some() {
            return;
        }
        let writer = self.roles.writer_role().to_string();
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
                out.push(CoreAction::Notify {
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
            .eligible_host(self.roles.writer_role(), &is_candidate)
    }

    /// Hosts other than `to` that may hold the writer VIP or accept writes, as far as
    /// their last report tells: each must be fenced before `to` is promoted. A master
    /// this monitor has not heard from since it started is one (a monitor taking over
    /// from another cannot know what its agent was told; in a fleet its own etcd lease
    /// may keep it writing).
    fn writer_suspects(&self, to: &str) -> BTreeSet<String> {
        let writer_ip = self.roles.writer_ip();
        let masters = self.roles.role_hosts(self.roles.writer_role());
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
        out: &mut Vec<CoreAction>,
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
        out.push(CoreAction::Notify {
            host: Some(to.clone()),
            message: format!(
                "Moving the {} role to '{to}'{}: {reason}",
                self.roles.writer_role(),
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

    /// The candidate is the writer: the timeline is told, the peer rejoins, the operator's
    /// command (move_role) is answered.
    fn finish_promotion(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
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
        out.push(CoreAction::Notify {
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
                    self.roles.writer_role(), p.to
                ),
                None => format!("OK: Role '{}' has been assigned to '{}'.", self.roles.writer_role(), p.to),
            };
            out.push(CoreAction::Reply { id, text });
        }
    }

    /// Gives up this promotion: the writer stays unassigned, the reason is shown, and a
    /// new attempt waits promotion_timeout.
    fn refuse(&mut self, now: Millis, reason: String, out: &mut Vec<CoreAction>) {
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
        out.push(CoreAction::Notify {
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
                let fencing = self.fencing;
                targets
                    .iter()
                    .find(|(_, f)| !f.done(now, fencing))
                    .map(|(t, _)| t.clone())
            }
            Phase::Promote { .. } | Phase::Position { .. } => Some(p.to.clone()),
            _ => None,
        };
        if let Some(id) = p.reply {
            out.push(CoreAction::Reply {
                id,
                text: format!("ERROR: {reason}"),
            });
        }
    }

    /// Time-driven progress: fencing deadlines, leases, phase timeouts.
    pub(crate) fn promotion_tick(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
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
