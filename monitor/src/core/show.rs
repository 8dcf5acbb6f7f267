//! `show` and `checks` as MMM printed them, plus `show --json`.

use super::{Cluster, Millis};
use mmm_common::types::{CheckKind, MonitorMode};

/// MMM's `yyyy/MM/dd HH:mm:ss` of `t` (ms since the epoch, already shifted to local time).
pub fn format_time(t: Millis) -> String {
    let secs = (t / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The agent answers but cannot reach the mysqld the monitor reaches: wrong grants (MMM's
/// were network-scoped), or a bind-address that excludes the agent's address.
fn agent_cut_off(h: &super::HostRec) -> bool {
    h.agent_up
        && h.view.as_ref().is_some_and(|v| !v.mysql_up)
        && h.check(CheckKind::Mysql).failing.is_none()
        && !h.probe_dead
}

impl super::HostRec {
    /// The agent's probe is loaded but watches no mysqld process while mysqld answers
    /// (the agent's own connection or the monitor's check): its death would be seen by
    /// the mysql check only, a second or more later. The agent logs why.
    pub fn probe_blind(&self) -> bool {
        let answers = |v: &super::AgentView| {
            let check = self.check(CheckKind::Mysql);
            v.mysql_up || (check.failing.is_none() && check.last_ok.is_some())
        };
        !self.probe_dead
            && self
                .view
                .as_ref()
                .is_some_and(|v| v.probe == mmm_common::proto::ProbeState::Searching && answers(v))
    }

    /// The probe's state in one word (`show --json`'s `probe_state`, the metric's label).
    pub fn probe_state(&self) -> &'static str {
        use mmm_common::proto::ProbeState;
        match self.view.as_ref().map(|v| v.probe) {
            None => "unknown",
            Some(ProbeState::Off) => "off",
            Some(ProbeState::Searching) => "searching",
            Some(ProbeState::Watching) => "watching",
        }
    }
}

/// What `show` says of a blind probe (see [`super::HostRec::probe_blind`]).
const BLIND: &str = "the eBPF probe watches no mysqld process though mysqld answers: its death is seen by the mysql check only (seconds, not milliseconds); the agent's log says why";

/// The probe's line in `checks` and its field in `show --json`.
fn probe_text(h: &super::HostRec) -> String {
    use mmm_common::proto::ProbeState;
    match (h.view.as_ref().map(|v| v.probe), h.probe_dead) {
        (_, true) => "ERROR: mysqld died (probe event)".into(),
        (None, _) => "unknown (agent not heard)".into(),
        (Some(ProbeState::Watching), _) => "OK: watching mysqld".into(),
        (Some(ProbeState::Searching), _) if h.probe_blind() => format!("ERROR: {BLIND}"),
        (Some(ProbeState::Searching), _) => "OK: loaded, waiting for mysqld to listen".into(),
        (Some(ProbeState::Off), _) => "off".into(),
    }
}

impl Cluster {
    /// MMM's `show`: passive banner and unreachable agents, one line per host (sorted by
    /// name), preference notes; then our notes (promotion, refusals, errant hosts).
    pub fn show(&self, now: Millis) -> String {
        let mut out = String::new();
        if self.mode.is(MonitorMode::Passive) {
            out.push_str("# --- Monitor is in PASSIVE MODE ---\n");
            out.push_str(&format!("# Cause: {}\n", self.mode.passive_cause()));
        }
        let mut hosts: Vec<_> = self.hosts.iter().collect();
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        for h in &hosts {
            if h.agent_seen.is_some() && !h.agent_up {
                out.push_str(&format!(
                    "# Warning: agent on host {} is not reachable\n",
                    h.name
                ));
            } else if agent_cut_off(h) {
                out.push_str(&format!(
                    "# Warning: agent on host {} cannot reach its own mysqld (its grants must allow it from the host's ip or socket): the host cannot be promoted\n",
                    h.name
                ));
            }
            if h.probe_blind() {
                out.push_str(&format!("# Warning: on host {}, {BLIND}\n", h.name));
            }
        }
        for h in &hosts {
            out.push_str(&format!(
                "  {}({}) {}/{}. Roles: {}\n",
                h.name,
                h.ip,
                h.mode,
                h.state,
                self.roles.host_role_labels(&h.name).join(", ")
            ));
        }
        if let Some(w) = self.roles.writer() {
            if let Some(p) = &w.prefer {
                match w.holder.as_deref() {
                    Some(x) if x == p => out.push_str(&format!("# Role {} is assigned to it's preferred host {p}.\n", w.role)),
                    Some(x) => out.push_str(&format!(
                        "# Role {} has {p} configured as it's preferred host but is assigned to {x} at the moment.\n",
                        w.role
                    )),
                    None => out.push_str(&format!("# Role {} has {p} configured as it's preferred host.\n", w.role)),
                }
            }
        }
        if let Some(p) = &self.promotion {
            out.push_str(&format!(
                "# Moving the {} role to '{}' ({}): {}\n",
                self.roles.writer_role(),
                p.to,
                p.reason,
                p.timeline.last().map(|(_, s)| s.as_str()).unwrap_or("")
            ));
        }
        if let Some((until, reason)) = &self.blocked {
            if now < *until {
                out.push_str(&format!("# {reason}\n"));
            }
        }
        for h in &hosts {
            if let Some(e) = &h.errant {
                out.push_str(&format!(
                    "# Host {} has {e}: it is not set online automatically\n",
                    h.name
                ));
            } else if h.flapping {
                out.push_str(&format!("# Host {} is flapping\n", h.name));
            }
        }
        if !self.network_ok {
            out.push_str(
                "# Network is down (no ping_ips answer): no state changes until it returns\n",
            );
        }
        if let Some(f) = &self.fleet {
            let standby = if f.standbys.is_empty() {
                "no standby".to_string()
            } else {
                format!("standby {}", f.standbys.join(", "))
            };
            out.push_str(&format!(
                "# monitor fleet: leader {} (term {}, epoch {:016x}), {standby}\n",
                f.leader, f.term, f.epoch
            ));
            if let Some(t) = &f.etcd {
                out.push_str(&format!("# etcd: {t}\n"));
            }
        }
        out
    }

    /// MMM's `checks [HOST|all [CHECK|all]]` lines (hosts in config order).
    pub fn checks(&self, host: Option<&str>, check: Option<CheckKind>) -> Result<String, String> {
        if let Some(h) = host {
            if self.host(h).is_none() {
                return Err(format!("ERROR: Unknown host name '{h}'!"));
            }
        }
        let width = self.hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for h in self
            .hosts
            .iter()
            .filter(|h| host.is_none_or(|n| n == h.name))
        {
            let checks: Vec<CheckKind> = match check {
                Some(c) => vec![c],
                None => CheckKind::ALL.to_vec(),
            };
            for c in checks {
                let t = h.check(c);
                let name = if check.is_some() {
                    c.to_string()
                } else {
                    format!("{:<11}", c.to_string())
                };
                let hostname = if host.is_some() {
                    h.name.clone()
                } else {
                    format!("{:<width$}", h.name)
                };
                out.push_str(&format!(
                    "{hostname}  {name}  [last change: {}]  {}\n",
                    format_time(
                        t.last_change
                            .saturating_add_signed(self.utc_offset_s * 1000)
                    ),
                    t.message
                ));
            }
            if check.is_none() {
                let hostname = if host.is_some() {
                    h.name.clone()
                } else {
                    format!("{:<width$}", h.name)
                };
                out.push_str(&format!("{hostname}  {:<11}  {}\n", "probe", probe_text(h)));
                let agent = match (&h.view, agent_cut_off(h)) {
                    (None, _) => "unknown (agent not heard)",
                    (Some(_), true) => "ERROR: the agent cannot reach its own mysqld",
                    (Some(_), false) => "OK",
                };
                out.push_str(&format!("{hostname}  {:<11}  {agent}\n", "agent"));
            }
        }
        Ok(out)
    }

    /// `show --json`: the same facts, for scripts.
    pub fn show_json(&self, now: Millis) -> String {
        let hosts: Vec<serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.name,
                    "ip": h.ip.to_string(),
                    "mode": h.mode.to_string(),
                    "state": h.state.to_string(),
                    "reason": h.reason,
                    "roles": self.roles.host_role_labels(&h.name),
                    "agent_reachable": h.agent_up,
                    "probe": probe_text(h),
                    "probe_state": h.probe_state(),
                    "probe_blind": h.probe_blind(),
                    "flapping": h.flapping,
                    "errant": h.errant,
                    "checks": CheckKind::ALL.iter().map(|c| (c.to_string(), serde_json::json!({
                        "ok": self.check_ok(h, *c, now),
                        "message": h.check(*c).message,
                        "last_change_ms": h.check(*c).last_change,
                    }))).collect::<serde_json::Map<_, _>>(),
                    "state_since_ms": h.since,
                    "vips": self.roles.ips().iter()
                        .filter(|r| r.holder.as_deref() == Some(h.name.as_str()))
                        .map(|r| serde_json::json!({"role": r.role, "ip": r.ip.map(|ip| ip.to_string())}))
                        .collect::<Vec<_>>(),
                    "agent": h.view.as_ref().map(|v| serde_json::json!({
                        "mysql_up": v.mysql_up,
                        "read_only": v.read_only,
                        "self_fenced": v.self_fenced,
                        "held_vips": v.held_vips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "source": v.source.map(|(ip, port)| format!("{ip}:{port}")),
                        "replicating": v.replicating,
                        "uptime_s": v.uptime_s,
                    })),
                    "replication": self.replication_json(&h.name),
                    "gtid": h.gtid.as_ref().map(ToString::to_string),
                    "gtid_at_ms": h.gtid_at,
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "mode": self.mode.get().to_string().to_uppercase(),
            "active_master": self.active_master(),
            // Where to write, for proxies and applications that do not use a VIP.
            "writer": self.active_master().and_then(|w| self.host(w)).map(|h| serde_json::json!({
                "host": h.name,
                "ip": h.ip.to_string(),
                "port": h.mysql_port,
                "vip": self.roles.writer_ip().map(|ip| ip.to_string()),
            })),
            "network_ok": self.network_ok,
            "fleet": self.fleet.as_ref().map(|f| serde_json::json!({"leader": f.leader, "term": f.term, "epoch": format!("{:016x}", f.epoch), "standby": f.standbys, "etcd": f.etcd})),
            "promotion": self.promotion.as_ref().map(|p| serde_json::json!({"to": p.to, "from": p.from, "reason": p.reason, "started_ms": p.started, "steps": super::history::steps(p)})),
            "hosts": hosts,
            "transitions": self.history.transitions().collect::<Vec<_>>(),
            "failovers": self.history.failovers().collect::<Vec<_>>(),
        }))
        .expect("JSON values always serialise")
    }
}

impl Cluster {
    /// `host`'s last replication reading, its source named as a configured host where
    /// its address is one.
    fn replication_json(&self, host: &str) -> serde_json::Value {
        let Some(r) = self.replication(host) else {
            return serde_json::Value::Null;
        };
        let mut v = serde_json::to_value(r).expect("a reading always serialises");
        let source = r.replication.source_host.as_deref().and_then(|s| {
            self.hosts
                .iter()
                .find(|h| h.ip.to_string() == s || h.name == s)
                .map(|h| h.name.clone())
        });
        if let Some(m) = v.as_object_mut() {
            m.insert("source".into(), source.into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_mmm_timestamps() {
        assert_eq!(format_time(0), "1970/01/01 00:00:00");
        assert_eq!(format_time(1_795_833_906_000), "2026/11/28 02:45:06");
    }
}
