//! mmm-control's commands against the cluster, with MMM 2.2.1's preconditions and reply
//! texts; our additions (errant transactions, the fenced promotion behind move_role)
//! keep MMM's style.

use super::{Cluster, ControlCommand, CoreAction, Millis};
use crate::control::command::{help, CheckSelector};
use mmm_common::proto;
use mmm_common::types::{CheckKind, HostMode, HostState, MonitorMode, RoleMode};
use std::time::Duration;

impl Cluster {
    /// Runs a command; `None` when the reply comes later (a writer move replies when the
    /// promotion ends).
    pub(crate) fn command(
        &mut self,
        now: Millis,
        reply: u64,
        command: ControlCommand,
        out: &mut Vec<CoreAction>,
    ) -> Option<String> {
        let text = match command {
            ControlCommand::Help => help().trim_end().to_string(),
            ControlCommand::Ping => "OK: Pinged successfully!".into(),
            ControlCommand::Show { json: false } => self.show(now),
            ControlCommand::Show { json: true } => self.show_json(now),
            ControlCommand::Checks { host, check } => {
                let check = match check {
                    CheckSelector::All => None,
                    CheckSelector::One(c) => Some(c),
                };
                self.checks(host.as_deref(), check).unwrap_or_else(|e| e)
            }
            ControlCommand::Mode => self.mode.get().to_string().to_uppercase(),
            ControlCommand::SetOnline { host } => self.set_online(now, &host, out),
            ControlCommand::SetOffline { host } => self.set_offline(now, &host, out),
            ControlCommand::MoveRole { force, role, host } => {
                return self.move_role(now, reply, force, &role, &host, out)
            }
            ControlCommand::SetIp { ip, host } => self.set_ip(now, ip, &host, out),
            ControlCommand::SetActive => self.set_mode(now, MonitorMode::Active, out),
            ControlCommand::SetManual => self.set_mode(now, MonitorMode::Manual, out),
            ControlCommand::SetPassive => self.set_mode(now, MonitorMode::Passive, out),
        };
        Some(text)
    }

    fn set_online(&mut self, now: Millis, host: &str, out: &mut Vec<CoreAction>) -> String {
        let Some(h) = self.host(host).cloned() else {
            return format!("ERROR: Unknown host name '{host}'!");
        };
        if h.state == HostState::Online {
            return "OK: This host is already ONLINE. Skipping command.".into();
        }
        if !matches!(
            h.state,
            HostState::AdminOffline | HostState::AwaitingRecovery
        ) {
            return format!(
                "ERROR: Host '{host}' is '{}' at the moment. It can't be switched to ONLINE.",
                h.state
            );
        }
        if !self.check_ok(&h, CheckKind::Ping, now)
            || !self.check_ok(&h, CheckKind::Mysql, now)
            || h.probe_dead
        {
            return format!("ERROR: Checks ping and/or mysql are not ok for host '{host}'. It can't be switched to ONLINE.");
        }
        if let Some(reason) = &h.errant {
            return format!("ERROR: Host '{host}' has {reason}. It can't be switched to ONLINE until they are resolved.");
        }
        // The peer's replication matters unless the peer is the active master: its
        // replication from this host was stopped at promotion and is rejoined now.
        let active = self.active_master().map(str::to_string);
        if let Some(peer) = h
            .peer
            .as_deref()
            .filter(|p| Some(*p) != active.as_deref())
            .and_then(|p| self.host(p))
        {
            if peer.state == HostState::Online
                && (!self.check_ok(peer, CheckKind::RepThreads, now)
                    || !self.check_ok(peer, CheckKind::RepBacklog, now))
            {
                return format!("ERROR: Some replication checks failed on peer '{}'. We can't set '{host}' online now. Please, wait some time.", peer.name);
            }
        }
        if !h.agent_up {
            return format!("ERROR: Can't reach agent daemon on '{host}'! Can't switch its state!");
        }
        out.push(CoreAction::Notify {
            host: Some(host.into()),
            message: format!("Admin changed state of '{host}' from {} to ONLINE", h.state),
        });
        let from = h.state;
        let reason = format!("set online by admin (was {from})");
        self.hosts.force_state(now, host, HostState::Online, reason);
        if let Some(r) = self.host_mut(host) {
            r.online_since = now;
            r.flapping = false;
            r.flaps.clear();
        }
        self.remember_transition(now, host, from, HostState::Online, "set online by admin");
        self.rejoin_replication(now, host, out);
        self.after_changes(now, out);
        format!("OK: State of '{host}' changed to ONLINE. Now you can wait some time and check its new roles!")
    }

    /// A master coming back next to the active master replicates from it again, and the
    /// active master from it (master-master restored); MMM left that to the operator.
    pub(crate) fn rejoin_replication(
        &mut self,
        now: Millis,
        host: &str,
        out: &mut Vec<CoreAction>,
    ) {
        // A promotion re-points and stops replication itself: a rejoin now would race it
        // (two re-points of one slave, or a back link the promotion then stops). It is
        // done when the promotion ends.
        if self.promotion.is_some() {
            self.rejoin_after_promotion.insert(host.to_string());
            return;
        }
        let Some(active) = self.active_master().map(str::to_string) else {
            return;
        };
        if active == host {
            return;
        }
        let Some(h) = self.host(host).cloned() else {
            return;
        };
        let Some(a) = self.host(&active).cloned() else {
            return;
        };
        let deadline = Duration::from_millis(super::ms(self.config.monitor.promotion_timeout));
        let position =
            proto::Position::Gtid(a.gtid.as_ref().map(|g| g.position()).unwrap_or_default());
        // Replicating from `to` with both threads running; anything else is re-pointed (a
        // restarted server keeps its source but not its threads: MMM left it stopped).
        let replicates_from = |v: &Option<super::AgentView>, to: &super::HostRec| {
            v.as_ref()
                .is_some_and(|v| v.replicating && v.source == Some((to.ip, to.mysql_port)))
        };
        if !replicates_from(&h.view, &a) {
            if let Some(r) = self.host_mut(host) {
                r.repointed = Some((a.ip, now));
            }
            let id = self.next_id();
            out.push(CoreAction::AgentAction {
                host: host.into(),
                id,
                action: proto::Action::ChangeMaster {
                    host: a.ip,
                    port: a.mysql_port,
                    position: position.clone(),
                },
                deadline,
            });
        }
        if h.mode == HostMode::Master
            && h.peer.as_deref() == Some(active.as_str())
            && !replicates_from(&a.view, &h)
        {
            let id = self.next_id();
            // The active master resumes from what it applied from this host; asking with
            // its own newest GTIDs would find the passive behind (error 1236).
            let back = proto::Position::GtidSlavePos;
            out.push(CoreAction::AgentAction {
                host: active,
                id,
                action: proto::Action::ChangeMaster {
                    host: h.ip,
                    port: h.mysql_port,
                    position: back,
                },
                deadline,
            });
        }
    }

    fn set_offline(&mut self, now: Millis, host: &str, out: &mut Vec<CoreAction>) -> String {
        let Some(h) = self.host(host).cloned() else {
            return format!("ERROR: Unknown host name '{host}'!");
        };
        if h.state == HostState::AdminOffline {
            return "OK: This host is already ADMIN_OFFLINE. Skipping command.".into();
        }
        if !matches!(
            h.state,
            HostState::Online | HostState::ReplicationFail | HostState::ReplicationDelay
        ) {
            return format!("ERROR: Host '{host}' is '{}' at the moment. It can't be switched to ADMIN_OFFLINE.", h.state);
        }
        if !h.agent_up {
            return format!("ERROR: Can't reach agent daemon on '{host}'! Can't switch its state!");
        }
        out.push(CoreAction::Notify {
            host: Some(host.into()),
            message: format!(
                "Admin changed state of '{host}' from {} to ADMIN_OFFLINE",
                h.state
            ),
        });
        self.hosts.force_state(
            now,
            host,
            HostState::AdminOffline,
            "set offline by admin".into(),
        );
        self.remember_transition(
            now,
            host,
            h.state,
            HostState::AdminOffline,
            "set offline by admin",
        );
        self.clear_roles(now, host, out);
        // MMM's turn_off_slave: an offline host stops replicating (maintenance, backups);
        // set_online re-points it at the active master and starts it again.
        let id = self.next_id();
        out.push(CoreAction::AgentAction {
            host: host.into(),
            id,
            action: proto::Action::StopReplication,
            deadline: Duration::from_millis(super::ms(self.config.monitor.promotion_timeout)),
        });
        self.after_changes(now, out);
        format!("OK: State of '{host}' changed to ADMIN_OFFLINE. Now you can wait some time and check all roles!")
    }

    fn move_role(
        &mut self,
        now: Millis,
        reply: u64,
        force: bool,
        role: &str,
        host: &str,
        out: &mut Vec<CoreAction>,
    ) -> Option<String> {
        if self.mode.is(MonitorMode::Passive) {
            return Some("ERROR: This command is not allowed in passive mode".into());
        }
        if !self.roles.role_exists(role) {
            return Some(format!("ERROR: Unknown role name '{role}'!"));
        }
        let Some(h) = self.host(host).cloned() else {
            return Some(format!("ERROR: Unknown host name '{host}'!"));
        };
        let writer = self.roles.writer_role().to_string();
        if force && role != writer {
            return Some(
                "ERROR: move_role --forced may be used for the active master role only!".into(),
            );
        }
        if self.roles.role_mode(role) == Some(RoleMode::Balanced) {
            self.roles.take_role_from(role, host);
            self.after_changes(now, out);
            return Some(format!("OK: Balanced role {role} has been removed from host '{host}'. Now you can wait some time and check new roles info!"));
        }
        let allowed = if force {
            matches!(
                h.state,
                HostState::ReplicationFail | HostState::ReplicationDelay
            )
        } else {
            h.state == HostState::Online
        };
        if !allowed {
            return Some(if force {
                format!(
                    "ERROR: Can't force move of role to host with state {}.",
                    h.state
                )
            } else {
                format!("ERROR: Can't move role to host with state {}.", h.state)
            });
        }
        let hosts = self.roles.role_hosts(role);
        if !hosts.iter().any(|x| x == host) {
            return Some(format!(
                "ERROR: Host '{host}' can't handle role '{role}'. Only following hosts could: {}",
                hosts.join(", ")
            ));
        }
        let owner = self.roles.first_of(role).and_then(|r| r.holder.clone());
        if owner.as_deref() == Some(host) {
            return Some(format!(
                "OK: Role is on '{host}' already. Skipping command."
            ));
        }
        if !h.agent_up {
            return Some(format!(
                "ERROR: Can't reach agent daemon on '{host}'! Can't move roles there!"
            ));
        }
        // With failback the role would go straight back to its preferred host: MMM refused
        // the move instead of letting it be undone a moment later.
        let preferred = self.roles.first_of(role).and_then(|r| r.prefer.clone());
        if !force
            && self.mode.is(MonitorMode::Active)
            && self.config.monitor.failback
            && owner.is_some()
            && preferred == owner
        {
            return Some(format!(
                "ERROR: Role '{role}' is assigned to preferred host '{}'. Can't move it!",
                owner.unwrap_or_default()
            ));
        }
        if role != writer {
            self.roles.give_first(role, host);
            self.after_changes(now, out);
            return Some(format!(
                "OK: Role '{role}' has been moved from '{}' to '{host}'. Now you can wait some time and check new roles info!",
                owner.unwrap_or_default()
            ));
        }
        if self.promotion.is_some() {
            return Some(format!(
                "ERROR: The {writer} role is being moved already. Please, wait some time."
            ));
        }
        if force {
            out.push(CoreAction::Notify {
                host: Some(host.into()),
                message: format!(
                    "Admin forced move of role '{role}' from '{}' to '{host}'",
                    owner.clone().unwrap_or_default()
                ),
            });
            self.hosts
                .force_state(now, host, HostState::Online, "move_role --force".into());
        } else {
            out.push(CoreAction::Notify {
                host: Some(host.into()),
                message: format!(
                    "Admin moved role '{role}' from '{}' to '{host}'",
                    owner.clone().unwrap_or_default()
                ),
            });
        }
        self.blocked = None;
        self.start_promotion(
            now,
            owner,
            host.into(),
            "move_role by admin".into(),
            Some(reply),
            out,
        );
        self.after_changes(now, out);
        None
    }

    fn set_ip(
        &mut self,
        now: Millis,
        ip: std::net::Ipv4Addr,
        host: &str,
        out: &mut Vec<CoreAction>,
    ) -> String {
        if !self.mode.is(MonitorMode::Passive) {
            return "ERROR: This command is only allowed in passive mode".into();
        }
        let Some(i) = self.roles.find_ip(ip) else {
            return format!("ERROR: Unknown ip '{ip}'!");
        };
        let Some(h) = self.host(host).cloned() else {
            return format!("ERROR: Unknown host name '{host}'!");
        };
        let role = self.roles.ip_at(i).role.clone();
        if !self.roles.ip_at(i).hosts.iter().any(|x| x == host) {
            return format!(
                "ERROR: Host '{host}' can't handle role '{role}'. Following hosts could: {}",
                self.roles.ip_at(i).hosts.join(", ")
            );
        }
        if h.state != HostState::Online {
            return format!(
                "ERROR: Host '{host}' is '{}' at the moment. Can't move role with ip '{ip}' there.",
                h.state
            );
        }
        // An exclusive role has one holder: the writer is never on two hosts, even here.
        self.roles.set_holder(i, Some(host.into()));
        out.push(CoreAction::Notify {
            host: Some(host.into()),
            message: format!("Admin set role '{role}({ip})' to host '{host}'"),
        });
        self.after_changes(now, out);
        format!("OK: Set role '{role}({ip})' to host '{host}'.")
    }

    fn set_mode(&mut self, now: Millis, mode: MonitorMode, out: &mut Vec<CoreAction>) -> String {
        let name = mode.to_string();
        if self.mode.is(mode) {
            return format!("OK: Already in {name} mode.");
        }
        let old = self.mode.get();
        out.push(CoreAction::Notify {
            host: None,
            message: format!(
                "Admin changed mode from '{}' to '{}'",
                old.to_string().to_uppercase(),
                name.to_uppercase()
            ),
        });
        self.mode.switch(mode);
        if old == MonitorMode::Passive {
            // Agents hear the whole picture again.
            for h in &mut self.hosts {
                h.last_sent = None;
            }
        }
        if mode == MonitorMode::Active {
            self.cleanup_offline_roles(now, out);
        }
        self.after_changes(now, out);
        format!("OK: Switched into {name} mode.")
    }
}
