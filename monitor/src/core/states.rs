//! Host states from evidence: MMM's _check_host_states with evidence grading, the
//! transitions it makes (each logged once, with its reason), errant-transaction checks,
//! WAIT mode, and the silent writer whose link is held down while trap_period counts.
//! Every transition goes through [`Cluster::set_state`]; after any of them every host is
//! judged again ([`Cluster::settle`]), since a replica's state depends on its source's.

#[allow(unused_imports)]
use super::*;

impl Cluster {
    /// A host's state depends on others' (a replica's source went down, the writer moved):
    /// after any transition every host is judged again until nothing changes, so nothing
    /// waits for a later Tick. Bounded: each pass needs a new transition to continue.
    pub(super) fn settle(
        &mut self,
        now: Millis,
        mut transitions: u64,
        mut writer: Option<String>,
        out: &mut Vec<Action>,
    ) {
        for _ in 0..8 {
            let moved = self.roles.writer_holder() != writer.as_deref();
            if self.transitions == transitions && !moved {
                return;
            }
            transitions = self.transitions;
            writer = self.roles.writer_holder().map(str::to_string);
            self.evaluate_all(now, out);
        }
    }

    /// Re-evaluates every host, then distributes roles and advances the promotion.
    pub(super) fn evaluate_all(&mut self, now: Millis, out: &mut Vec<Action>) {
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        for name in &names {
            self.evaluate_host(now, name, out);
        }
        self.after_changes(now, out);
    }

    pub(super) fn set_state(
        &mut self,
        now: Millis,
        name: &str,
        to: HostState,
        reason: String,
        out: &mut Vec<Action>,
    ) {
        let flap_window = ms(self.config.monitor.flap_duration);
        let flap_count = self.config.monitor.flap_count;
        let Some(h) = self.host(name) else { return };
        if h.state == to {
            return;
        }
        self.transitions += 1;
        let Some(h) = self.host_mut(name) else { return };
        let from = h.state;
        if from == HostState::Online {
            h.uptime_at_failure = h.view.as_ref().map(|v| v.uptime_s);
            if h.flaps.depart(now, flap_window, flap_count) && !h.flapping {
                h.flapping = true;
                out.push(Action::Notify {
                    host: Some(name.into()),
                    message: format!("Host '{name}' is flapping!"),
                });
            }
        }
        if to == HostState::Online {
            h.online_since = now;
        }
        h.state = to;
        h.since = now;
        h.reason = reason.clone();
        out.push(Action::Notify {
            host: Some(name.into()),
            message: format!(
                "State of host '{name}' changed from {from} to {to}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        });
        self.remember_transition(now, name, from, to, &reason);
        // Roles live only on ONLINE hosts; MMM kept them in manual mode.
        if to != HostState::Online
            && !matches!(
                self.mode,
                MonitorMode::Manual | MonitorMode::Wait | MonitorMode::Passive
            )
        {
            self.clear_roles(now, name, out);
        }
    }

    pub(crate) fn clear_roles(&mut self, now: Millis, name: &str, out: &mut Vec<Action>) {
        if self.promotion.as_ref().is_some_and(|p| p.to == name) {
            self.abort_promotion(now, format!("'{name}' is no longer ONLINE"), out);
        }
        if self.roles.clear_host(name) {
            out.push(Action::Notify {
                host: Some(name.into()),
                message: format!(
                    "Removed the {} role from host '{name}'",
                    self.roles.writer_role
                ),
            });
            self.writer_lost(now, name, out);
        }
    }

    /// When the writer, silent on every channel, is to be held down (`None`: not the
    /// writer, already held, or it answers). Silence counts from the later of its agent's
    /// last answer and its last answered ping; agent_timeout of it is enough, since the
    /// ping check keeps asking (every heartbeat_interval while held) and the first
    /// answer releases it.
    pub(super) fn isolation_due(&self, h: &HostRec) -> Option<Millis> {
        let eligible = self.config.agent.fencing == Fencing::Lease
            && self.promotion.is_none()
            && self.network_ok
            && h.isolated_since.is_none()
            && self.roles.writer_holder() == Some(h.name.as_str());
        if !eligible {
            return None;
        }
        let agent_timeout = ms(self.timing.agent_timeout);
        Self::silent_since(h, self.network_back).map(|t| t + agent_timeout)
    }

    /// The writer's agent and its ping both silent: its lease starts now, in parallel with
    /// trap_period, by holding its link down (nothing can renew the lease until Release).
    /// If trap_period then fails the host, the promotion counts the lease from here instead
    /// of waiting it out afterwards. If a ping sent after the hold answers (or pings stop
    /// telling anything), the link is released: a blip costs the writer at most a
    /// self-fence and its undoing, never a failover.
    pub(super) fn isolate_silent_writer(&mut self, now: Millis, out: &mut Vec<Action>) {
        self.unhold_former_writers(out);
        let Some(w) = self.roles.writer_holder().map(str::to_string) else {
            return;
        };
        let Some(h) = self.host(&w) else {
            return;
        };
        let ping = h.check(CheckKind::Ping);
        let silent = self.isolation_due(h).is_some_and(|t| now >= t);
        let ping_failing = ping.failing.is_some() && !ping.unknown;
        let released = |held: Millis| ping.unknown || ping.last_ok.is_some_and(|ok| ok >= held);
        match h.isolated_since {
            None if silent => {
                if let Some(h) = self.host_mut(&w) {
                    h.isolated_since = Some(now);
                }
                out.push(Action::Isolate { host: w.clone() });
                out.push(Action::Notify {
                    host: Some(w.clone()),
                    message: format!("Agent and ping of writer '{w}' are silent: its link is held down, so its lease runs out while trap_period is counted"),
                });
                // Its replicas keep their IO threads: it may still commit until its
                // lease is over (`early_stop_due`), and a replica stopped before that
                // lets semi-sync fall back to async and lose what it acknowledges.
                self.early_stopped = None;
            }
            Some(held) if self.promotion.is_none() && released(held) => {
                if let Some(h) = self.host_mut(&w) {
                    h.isolated_since = None;
                }
                out.push(Action::Release { host: w.clone() });
                out.push(Action::Notify {
                    host: Some(w.clone()),
                    message: format!("Writer '{w}' answers ping again: its link is released"),
                });
                let deadline = Duration::from_millis(ms(self.config.monitor.promotion_timeout));
                for s in self.early_stopped.take().unwrap_or_default() {
                    let id = self.next_id();
                    out.push(Action::AgentAction {
                        host: s,
                        id,
                        action: proto::Action::StartReplication,
                        deadline,
                    });
                }
            }
            Some(_) if ping_failing && self.early_stop_due().is_some_and(|due| now >= due) => {
                self.stop_replicas_early(&w, out);
            }
            _ => {}
        }
    }

    /// When the held-down writer's replicas may stop their IO threads ahead of the
    /// promotion: once it can commit nothing more. A replica's IO thread stopped while its
    /// master may still commit lets semi-sync time out and fall back to async, and the
    /// master then acknowledges writes that no replica has (lost at the failover). Alone,
    /// the hold renews nothing, so the lease is over `lease + heartbeat_interval` after it
    /// (the promotion's own count). In a fleet the permit is the agent's etcd lease, which
    /// no hold ends: only the promotion's EndLease does, so nothing stops early. `None`:
    /// nothing to stop, or not yet known when.
    pub(super) fn early_stop_due(&self) -> Option<Millis> {
        if self.config.agent.fencing != Fencing::Lease
            || self.config.coordination.is_some()
            || self.promotion.is_some()
            || self.early_stopped.is_some()
            || !self.network_ok
        {
            return None;
        }
        let held = self.host(self.roles.writer_holder()?)?.isolated_since?;
        Some(held + ms(self.timing.monitor_counts_lease_over))
    }

    /// Their STOP SLAVE would wait for the vanished master (semi-sync's kill-connection):
    /// started while trap_period is counted, once the writer's lease is over and a ping has
    /// failed too (an agent that merely died, or one lost echo reply, stops no replica).
    fn stop_replicas_early(&mut self, writer: &str, out: &mut Vec<Action>) {
        let stopped = self.stop_io_threads_of(writer, out);
        self.early_stopped = Some(stopped.into_iter().collect());
    }

    /// A held host that lost the writer role with no promotion to fence it (no candidate,
    /// a refused promotion) gets the link's bounded stay-away instead of an endless hold:
    /// its agent may come back and be heard.
    fn unhold_former_writers(&mut self, out: &mut Vec<Action>) {
        if self.promotion.is_some() {
            return;
        }
        let writer = self.roles.writer_holder().map(str::to_string);
        for h in &mut self.hosts {
            if h.isolated_since.is_some() && writer.as_deref() != Some(h.name.as_str()) {
                h.isolated_since = None;
                out.push(Action::Disconnect {
                    host: h.name.clone(),
                });
            }
        }
    }

    /// MMM's _check_host_states for one host, with evidence grading: definitive failures
    /// are already `Failed` without waiting trap_period (see [`health::CheckTrack`]).
    pub(super) fn evaluate_host(&mut self, now: Millis, name: &str, out: &mut Vec<Action>) {
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
                        out.push(Action::Notify {
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
                    .role_hosts(&self.roles.writer_role.clone())
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
                out.push(Action::QueryStatus { host: name.into() });
                if let Some(w) = active {
                    out.push(Action::QueryStatus { host: w });
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
    pub(super) fn check_errant(&mut self, _now: Millis, name: &str, out: &mut Vec<Action>) {
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
                    out.push(Action::Notify {
                        host: Some(t.clone()),
                        message: format!("Host '{t}' stays AWAITING_RECOVERY: {reason}"),
                    });
                    h.reason = reason.clone();
                }
                h.errant = errant;
            }
        }
    }

    /// MMM's WAIT mode: act like manual until both masters are ONLINE, or one has been
    /// ONLINE for wait_for_other_master.
    pub(super) fn wait_mode(&mut self, now: Millis, out: &mut Vec<Action>) {
        if self.mode != MonitorMode::Wait {
            return;
        }
        let masters = self.roles.role_hosts(&self.roles.writer_role.clone());
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
            && now.saturating_sub(online[0].online_since.max(self.wait_since)) >= wait
        {
            Some(format!("The other master did not come online for {}s (wait_for_other_master). Switching from mode 'WAIT' to 'ACTIVE'", wait / 1000))
        } else {
            None
        };
        if let Some(message) = switch {
            self.mode = MonitorMode::Active;
            out.push(Action::Notify {
                host: None,
                message,
            });
            self.cleanup_offline_roles(now, out);
        }
    }

    /// Removes roles from hosts that are not ONLINE (on entering active mode).
    pub(crate) fn cleanup_offline_roles(&mut self, now: Millis, out: &mut Vec<Action>) {
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
