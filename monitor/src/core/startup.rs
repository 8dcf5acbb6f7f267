//! The start-up vote (MMM's careful_startup, made explicit): who holds the writer role
//! when the monitor starts, from the stored status and what the agents report.

use super::{ms, AgentView, Cluster, CoreAction, Millis};
use mmm_common::types::{HostState, MonitorMode};

impl Cluster {
    /// The start-up vote (MMM's careful_startup, made explicit): who is the writer, from
    /// the stored status and what each reachable agent reports (writer VIP held, server
    /// writable, slaves replicating from it). One clear answer is adopted; conflicting
    /// answers put the monitor in passive mode with careful_startup (an operator decides
    /// with set_ip / set_active), or keep the stored writer and demote the others without
    /// it. Hosts holding VIPs they may hold keep them, so a monitor restart moves nothing.
    pub fn startup(&mut self, now: Millis, reports: &[(String, AgentView)]) -> Vec<CoreAction> {
        let mut out = Vec::new();
        let writer_ip = self.roles.writer_ip();
        let masters = self.roles.role_hosts(self.roles.writer_role());
        let stored = self.active_master().map(str::to_string);
        let mut claims: Vec<String> = Vec::new();
        for (host, view) in reports {
            if let Some(h) = self.host_mut(host) {
                h.view = Some(view.clone());
                h.agent_up = true;
                h.agent_seen = Some(now);
            }
            let holds_vip = writer_ip.is_some_and(|ip| view.held_vips.contains(&ip));
            let writable = view.mysql_up && !view.read_only;
            // An operator took it offline: it is not adopted as the writer (a promotion
            // elsewhere fences it first, as its report shows it may still write).
            let admin_offline = self
                .host(host)
                .is_some_and(|h| h.state == HostState::AdminOffline);
            if masters.contains(host) && (holds_vip || writable) && !admin_offline {
                claims.push(host.clone());
            }
        }
        // Slaves replicating from a master are a vote for it.
        let votes = |m: &str, c: &Cluster| {
            let Some(mh) = c.host(m) else { return 0 };
            reports
                .iter()
                .filter(|(_, v)| v.source.is_some_and(|(ip, _)| ip == mh.ip))
                .count()
        };
        let decided: Option<String> = match claims.as_slice() {
            [] => stored.clone(),
            [one] => Some(one.clone()),
            many => {
                let names = many.join(" and ");
                if self.config.monitor.careful_startup {
                    self.mode.go_passive(format!("the {} role is claimed by {names} at startup (careful_startup): check them, then use set_ip and set_active", self.roles.writer_role()));
                    out.push(CoreAction::Notify {
                        host: None,
                        message: format!(
                            "Switching to passive mode: {}",
                            self.mode.passive_cause()
                        ),
                    });
                    None
                } else {
                    let best = stored
                        .filter(|s| many.contains(s))
                        .or_else(|| many.iter().max_by_key(|m| votes(m, self)).cloned());
                    out.push(CoreAction::Notify {
                        host: None,
                        message: format!(
                            "The {} role is claimed by {names} at startup; keeping it on {}",
                            self.roles.writer_role(),
                            best.clone().unwrap_or_default()
                        ),
                    });
                    best
                }
            }
        };
        // The writer chosen is not writing yet while a master has not reported: that one
        // may still write (a monitor that took over cannot know what it was told), so the
        // role moves through a promotion, which fences it first.
        let unheard: Vec<&String> = masters
            .iter()
            .filter(|m| Some(*m) != decided.as_ref() && !reports.iter().any(|(h, _)| h == *m))
            .collect();
        let resume = decided
            .clone()
            .filter(|d| !claims.contains(d) && !unheard.is_empty());
        if !self.mode.is(MonitorMode::Passive) && resume.is_some() {
            out.push(CoreAction::Notify {
                host: None,
                message: format!(
                    "The {} role goes to {} through a promotion: {} not heard from at startup",
                    self.roles.writer_role(),
                    resume.clone().unwrap_or_default(),
                    unheard
                        .iter()
                        .map(|m| format!("'{m}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if !self.mode.is(MonitorMode::Passive) {
            self.roles
                .set_writer_holder(decided.clone().filter(|_| resume.is_none()));
            // Reader VIPs where they are, if the table has no holder for them.
            for (host, view) in reports {
                // Only hosts that may hold roles after this vote (ONLINE, or made so below).
                let adoptable = self.host(host).is_some_and(|h| {
                    matches!(
                        h.state,
                        HostState::Online | HostState::AwaitingRecovery | HostState::HardOffline
                    )
                });
                if !adoptable {
                    continue;
                }
                for ip in &view.held_vips {
                    self.roles.adopt(*ip, host);
                }
            }
            // A host that holds roles and reports in order is ONLINE, whatever the file said.
            for (host, _) in reports {
                let has_roles = !self.roles.host_roles(host).is_empty();
                if let Some(h) = self.host_mut(host) {
                    // HARD_OFFLINE too: the record can predate what happened since (a
                    // promotion that a monitor now gone finished while the host was cut off).
                    if has_roles
                        && matches!(
                            h.state,
                            HostState::AwaitingRecovery | HostState::HardOffline
                        )
                    {
                        h.state = HostState::Online;
                        h.reason = "holds roles at monitor start".into();
                        h.since = now;
                        h.online_since = now;
                    }
                }
            }
        }
        if let Some(w) = decided.as_deref().filter(|_| resume.is_none()) {
            if !self.mode.is(MonitorMode::Passive) {
                self.restart_stopped_replicas(w, reports, &mut out);
            }
        }
        if let Some(to) = resume.filter(|_| !self.mode.is(MonitorMode::Passive)) {
            let reason = "resuming the writer role at monitor start".to_string();
            self.start_promotion(now, None, to, reason, None, &mut out);
        }
        self.after_changes(now, &mut out);
        if std::mem::take(&mut self.persist_due) {
            self.persist(now, &mut out);
        }
        self.timer = self.compute_next_deadline(self.last_tick);
        out
    }

    /// Servers that replicate from the adopted writer with their IO thread stopped: a
    /// monitor before this one stopped it for a promotion or a silent writer and lost
    /// its leadership (or stopped) before it re-pointed or restarted them, and nothing
    /// else would (the writer is adopted, not promoted). Hosts an operator took offline
    /// are left as they are, and so is a stopped SQL thread alone (a backup's
    /// safe-slave stop keeps the IO thread running).
    fn restart_stopped_replicas(
        &mut self,
        writer: &str,
        reports: &[(String, AgentView)],
        out: &mut Vec<CoreAction>,
    ) {
        let Some(source) = self.host(writer).map(|w| (w.ip, w.mysql_port)) else {
            return;
        };
        let deadline = std::time::Duration::from_millis(ms(self.config.monitor.promotion_timeout));
        for (host, view) in reports {
            let offline = self.host(host).is_none_or(|h| {
                matches!(h.state, HostState::AdminOffline | HostState::HardOffline)
            });
            if host == writer
                || offline
                || !view.mysql_up
                || view.io_running
                || view.source != Some(source)
            {
                continue;
            }
            out.push(CoreAction::Notify {
                host: Some(host.clone()),
                message: format!("Replication on '{host}' from the writer '{writer}' is stopped at monitor start (an earlier monitor's unfinished promotion, say): starting it"),
            });
            let id = self.next_id();
            out.push(CoreAction::AgentAction {
                host: host.clone(),
                id,
                action: mmm_common::proto::Action::StartReplication,
                deadline,
            });
        }
    }
}
