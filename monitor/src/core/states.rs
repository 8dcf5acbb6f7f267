//! Host states from evidence: what a check's verdict is now, MMM's _check_host_states
//! with evidence grading, the transitions it makes and errant-transaction checks. Every
//! transition goes through [`Cluster::set_state`]; after any of them every host is judged
//! again ([`Cluster::settle`]), since a replica's state depends on its source's.

use super::health::Verdict;
use super::hosts::{FlapRule, HostRec};
use super::timers::Deadlines;
use super::{ms, Cluster, CoreAction, Millis, RECOVERING_REFRESH, SOURCE_SETTLE};
use mmm_common::types::{CheckKind, HostMode, HostState};

impl Cluster {
    pub(super) fn trap(&self, c: CheckKind) -> Millis {
        ms(self.config.checks.get(c).trap_period)
    }

    /// MMM's `$checks->X($host)`: the check counts as passing.
    pub fn check_ok(&self, h: &HostRec, c: CheckKind, now: Millis) -> bool {
        self.verdict(h, c, now) != Verdict::Failed
    }

    pub fn verdict(&self, h: &HostRec, c: CheckKind, now: Millis) -> Verdict {
        h.check(c)
            .verdict_from(now, self.trap(c), h.trap_start(c, self.network_back))
    }

    /// Whether the host is alive as far as the decision logic is concerned.
    pub(super) fn alive(&self, h: &HostRec, now: Millis) -> bool {
        !h.probe_dead
            && self.check_ok(h, CheckKind::Ping, now)
            && self.check_ok(h, CheckKind::Mysql, now)
    }

    /// Eligible for roles: ONLINE and its agent reachable (MMM's agent_down check).
    /// May take a role: ONLINE, its agent heard, and that agent able to reach its mysqld
    /// (else every action of a promotion would fail).
    pub(crate) fn eligible(&self, name: &str) -> bool {
        self.host(name).is_some_and(|h| {
            h.state == HostState::Online
                && h.agent_up
                && h.errant.is_none()
                && h.view.as_ref().is_some_and(|v| v.mysql_up)
        })
    }

    /// A host's state depends on others' (a replica's source went down, the writer moved):
    /// after any transition every host is judged again until nothing changes, so nothing
    /// waits for a later Tick. Bounded: each pass needs a new transition to continue.
    pub(super) fn settle(
        &mut self,
        now: Millis,
        mut transitions: u64,
        mut writer: Option<String>,
        mut promoting: bool,
        out: &mut Vec<CoreAction>,
    ) {
        for _ in 0..8 {
            let moved = self.roles.writer_holder() != writer.as_deref();
            // A promotion's end changes what its target's checks mean (replication
            // failures of the host being promoted do not count), with no transition.
            let began_or_ended = self.promotion.is_some() != promoting;
            if self.hosts.transitions() == transitions && !moved && !began_or_ended {
                return;
            }
            transitions = self.hosts.transitions();
            writer = self.roles.writer_holder().map(str::to_string);
            promoting = self.promotion.is_some();
            self.evaluate_all(now, out);
        }
    }

    /// Re-evaluates every host, then distributes roles and advances the promotion.
    pub(super) fn evaluate_all(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let names = self.hosts.names();
        for name in &names {
            self.evaluate_host(now, name, out);
        }
        self.after_changes(now, out);
    }

    /// Moves a host to another state (see [`super::hosts::Hosts::set_state`]): the transition is
    /// remembered, and a host leaving ONLINE loses its roles unless the mode keeps them.
    pub(super) fn set_state(
        &mut self,
        now: Millis,
        name: &str,
        to: HostState,
        reason: String,
        out: &mut Vec<CoreAction>,
    ) {
        let flaps = FlapRule {
            window: ms(self.config.monitor.flap_duration),
            count: self.config.monitor.flap_count,
        };
        let Some(from) = self.hosts.set_state(now, name, to, &reason, flaps, out) else {
            return;
        };
        self.remember_transition(now, name, from, to, &reason);
        // Roles live only on ONLINE hosts; MMM kept them in manual mode.
        if to != HostState::Online && !self.mode.keeps_roles_of_failed_hosts() {
            self.clear_roles(now, name, out);
        }
    }

    pub(crate) fn clear_roles(&mut self, now: Millis, name: &str, out: &mut Vec<CoreAction>) {
        if self.promotion.as_ref().is_some_and(|p| p.to == name) {
            self.abort_promotion(now, format!("'{name}' is no longer ONLINE"), out);
        }
        if self.roles.clear_host(name) {
            out.push(CoreAction::Notify {
                host: Some(name.into()),
                message: format!(
                    "Removed the {} role from host '{name}'",
                    self.roles.writer_role()
                ),
            });
            self.writer_lost(now, name, out);
        }
    }

    /// MMM's _check_host_states for one host, with evidence grading: definitive failures
    /// are already `Failed` without waiting trap_period (see [`health::CheckTrack`]).
    pub(super) fn evaluate_host(&mut self, now: Millis, name: &str, out: &mut Vec<CoreAction>) {
        if !self.network_ok {
            return;
        }
        let Some(h) = self.host(name).cloned() else {
            return;
        };
        if h.state == HostState::AdminOffline {
            return;
        }
        let pending = [CheckKind::Ping, CheckKind::Mysql]
            .iter()
            .any(|c| self.verdict(&h, *c, now) == Verdict::Pending);
        if pending && !h.probe_dead {
            return;
        }
        let ping = self.check_ok(&h, CheckKind::Ping, now);
        let mysql = !h.probe_dead && self.check_ok(&h, CheckKind::Mysql, now);
        let alive = ping && mysql;
        let rep_threads = self.check_ok(&h, CheckKind::RepThreads, now);
        let rep_backlog = self.check_ok(&h, CheckKind::RepBacklog, now);
        let active = self.active_master().map(str::to_string);
        let is_active = active.as_deref() == Some(name)
            || self.promotion.as_ref().is_some_and(|p| p.to == name);
        // A master replicates from its peer; a slave from the active master.
        let source = h.peer.clone().or_else(|| {
            if h.mode == HostMode::Slave {
                active.clone()
            } else {
                None
            }
        });
        let source_rec = source.as_deref().and_then(|s| self.host(s)).cloned();
        let source_online = source_rec
            .as_ref()
            .is_some_and(|s| s.state == HostState::Online);
        let source_alive = source_rec.as_ref().is_some_and(|s| self.alive(s, now));
        let source_recent = source_rec.as_ref().is_some_and(|s| {
            s.state == HostState::Online && now.saturating_sub(s.online_since) < SOURCE_SETTLE
        });
        // The cause is part of the reason: "mysqld process exited (probe)" and the like.
        let why_dead = || {
            format!(
                "ping: {}, mysql: {}{}",
                if ping { "OK" } else { "not OK" },
                if mysql { "OK" } else { "not OK" },
                if mysql {
                    String::new()
                } else {
                    format!(" - {}", h.check(CheckKind::Mysql).message)
                }
            )
        };
        match h.state {
            HostState::Online => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                // Replication failures of the active master do not matter.
                if is_active || source_recent {
                    return;
                }
                if !rep_threads && source_online && source_alive {
                    self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                } else if !rep_backlog && rep_threads && source_online && source_alive {
                    self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                }
            }
            HostState::AwaitingRecovery => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                if h.errant.is_some() {
                    return;
                }
                // Never online by itself before its GTID set was compared with the
                // writer's since it came back, nor (a master) before it replicates from
                // the active master again.
                let checked = h.gtid_at.is_some_and(|t| t >= h.since);
                let active_rec = active.as_deref().and_then(|a| self.host(a)).cloned();
                let follows = h.view.as_ref().is_some_and(|v| {
                    v.replicating
                        && active_rec
                            .as_ref()
                            .is_some_and(|a| v.source == Some((a.ip, a.mysql_port)))
                });
                // A returning master with nothing errant is rejoined to the writer (GTID),
                // as MMM brought masters back by itself; it then follows auto_set_online
                // like a slave.
                if let Some(a) = active_rec
                    .as_ref()
                    .filter(|_| h.mode == HostMode::Master && checked && !follows && h.agent_up)
                {
                    let retry = ms(self.config.monitor.promotion_timeout);
                    let due = h
                        .repointed
                        .is_none_or(|(ip, t)| ip != a.ip || now.saturating_sub(t) >= retry);
                    if due {
                        out.push(CoreAction::Notify {
                            host: Some(name.into()),
                            message: format!("Rejoining '{name}' to the active master '{}': its GTID set holds nothing the writer lacks", a.name),
                        });
                        self.rejoin_replication(now, name, out);
                        if let Some(r) = self.host_mut(name) {
                            r.repointed = Some((a.ip, now));
                        }
                    }
                    return;
                }
                if !(rep_backlog && rep_threads) {
                    return;
                }
                if active.is_some() && (!checked || (h.mode == HostMode::Master && !follows)) {
                    return;
                }
                let in_state = now.saturating_sub(h.since);
                let auto = self.config.monitor.auto_set_online.map(ms);
                if h.flapping {
                    let quiet = now.saturating_sub(h.flaps.departures.last().copied().unwrap_or(0));
                    if auto.is_some() && quiet >= ms(self.config.monitor.flap_duration) {
                        let reason = format!("flapping host, auto_set_online and flap_duration passed without another failure, after {}s in AWAITING_RECOVERY", in_state / 1000);
                        self.set_state(now, name, HostState::Online, reason, out);
                    }
                    return;
                }
                if let (Some(before), Some(view)) = (h.uptime_at_failure, h.view.as_ref()) {
                    let diff = i64::from(view.uptime_s) - i64::from(before);
                    if before > 0 && diff > 0 && diff < 60 {
                        self.set_state(
                            now,
                            name,
                            HostState::Online,
                            format!("it was down for only {diff} seconds"),
                            out,
                        );
                        return;
                    }
                }
                if let Some(a) = auto {
                    if in_state >= a {
                        let reason = format!(
                            "auto_set_online({}s), it was in AWAITING_RECOVERY for {}s",
                            a / 1000,
                            in_state / 1000
                        );
                        self.set_state(now, name, HostState::Online, reason, out);
                    }
                }
            }
            HostState::HardOffline => {
                if !alive {
                    return;
                }
                let can_be_master = self
                    .roles
                    .role_hosts(self.roles.writer_role())
                    .contains(&h.name);
                // A master comes back through AWAITING_RECOVERY: its replication must be
                // rejoined to the writer (set_online does it) and its GTID set checked.
                if (active.is_some() || !can_be_master) && h.mode == HostMode::Slave {
                    if !rep_threads {
                        self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                        return;
                    }
                    if !rep_backlog {
                        self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                        return;
                    }
                }
                self.set_state(now, name, HostState::AwaitingRecovery, String::new(), out);
                // Before it may rejoin: does it hold transactions the writer lacks?
                out.push(CoreAction::QueryStatus { host: name.into() });
                if let Some(w) = active {
                    out.push(CoreAction::QueryStatus { host: w });
                }
            }
            HostState::ReplicationFail | HostState::ReplicationDelay => {
                if !alive {
                    self.set_state(now, name, HostState::HardOffline, why_dead(), out);
                    return;
                }
                if h.state == HostState::ReplicationFail && !rep_backlog && rep_threads {
                    self.set_state(now, name, HostState::ReplicationDelay, String::new(), out);
                    return;
                }
                if h.state == HostState::ReplicationDelay && !rep_threads {
                    self.set_state(now, name, HostState::ReplicationFail, String::new(), out);
                    return;
                }
                if (rep_backlog && rep_threads) || !source_online {
                    if h.flapping {
                        self.set_state(
                            now,
                            name,
                            HostState::AwaitingRecovery,
                            "because it's flapping".into(),
                            out,
                        );
                    } else {
                        self.set_state(now, name, HostState::Online, String::new(), out);
                    }
                }
            }
            HostState::AdminOffline => {}
        }
    }

    /// A host's GTID set compared with the writer's: one holding transactions the writer
    /// lacks must not rejoin (an errant transaction).
    pub(super) fn check_errant(&mut self, _now: Millis, name: &str, out: &mut Vec<CoreAction>) {
        let Some(writer) = self.active_master().map(str::to_string) else {
            return;
        };
        let targets: Vec<String> = if name == writer {
            self.hosts
                .iter()
                .filter(|h| h.state == HostState::AwaitingRecovery)
                .map(|h| h.name.clone())
                .collect()
        } else {
            vec![name.to_string()]
        };
        // A set that was reported but cannot be compared (unreadable, unparseable) keeps
        // the host waiting, with the reason: it might hold errant transactions.
        let wset = match self.host(&writer) {
            Some(w) => match (&w.gtid, &w.gtid_unknown) {
                (_, Some(why)) => Err(format!(
                    "possible errant transactions (the GTID set of the writer {writer} cannot be compared: {why})"
                )),
                (Some(set), None) => Ok(set.clone()),
                (None, None) => return,
            },
            None => return,
        };
        for t in targets {
            let Some(h) = self.host(&t) else { continue };
            if h.state != HostState::AwaitingRecovery {
                continue;
            }
            let errant = match (&wset, &h.gtid, &h.gtid_unknown) {
                (_, _, Some(why)) => Some(format!(
                    "possible errant transactions (its GTID set cannot be compared with the writer's: {why})"
                )),
                (Err(why), _, None) => Some(why.clone()),
                (Ok(wset), Some(set), None) => {
                    let missing = set.missing_from(wset);
                    (!wset.contains(set))
                        .then(|| format!("errant transactions {missing} not on the writer {writer}"))
                }
                (Ok(_), None, None) => continue,
            };
            let h = self.host_mut(&t).expect("host exists");
            if h.errant != errant {
                if let Some(reason) = &errant {
                    out.push(CoreAction::Notify {
                        host: Some(t.clone()),
                        message: format!("Host '{t}' stays AWAITING_RECOVERY: {reason}"),
                    });
                    h.reason = reason.clone();
                }
                h.errant = errant;
            }
        }
    }

    /// Each host's own deadlines: traps running out, a source settling, a waiting host's
    /// auto_set_online, flap window and GTID refresh, a re-point's retry.
    pub(super) fn host_deadlines(&self, d: &mut Deadlines) {
        let auto = self.config.monitor.auto_set_online.map(ms);
        let flap = ms(self.config.monitor.flap_duration);
        let retry = ms(self.config.monitor.promotion_timeout);
        for h in &self.hosts {
            for c in CheckKind::ALL {
                if let Some(t) = h
                    .check(*c)
                    .trap_expires(self.trap(*c), h.trap_start(*c, self.network_back))
                {
                    d.at(t);
                }
            }
            // Replication failures count again once a source has settled.
            if h.state == HostState::Online {
                d.at(h.online_since + SOURCE_SETTLE);
            }
            if h.state == HostState::AwaitingRecovery {
                if let Some(a) = auto {
                    d.at(h.since + a);
                }
                if h.flapping {
                    d.at(h.flaps.departures.last().copied().unwrap_or(0) + flap);
                }
                if let Some(t) = h.status_asked {
                    d.at(t + RECOVERING_REFRESH);
                }
            }
            if let Some((_, t)) = h.repointed {
                d.at(t + retry);
            }
        }
    }

    /// Removes roles from hosts that are not ONLINE (on entering active mode).
    pub(crate) fn cleanup_offline_roles(&mut self, now: Millis, out: &mut Vec<CoreAction>) {
        let names: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.state != HostState::Online)
            .map(|h| h.name.clone())
            .collect();
        for n in names {
            self.clear_roles(now, &n, out);
        }
    }
}
