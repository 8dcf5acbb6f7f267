//! `[hosts.NAME]` over `[defaults]`: addresses, modes and master pairs, ports, users
//! and their secrets.

use super::Collector;
use crate::config::raw::{RawConfig, RawHostFields};
use crate::config::Host;
use crate::types::HostMode;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub(super) fn hosts(c: &mut Collector, raw: &RawConfig) -> Vec<Host> {
    if raw.hosts.is_empty() {
        c.problem("hosts", "no hosts configured");
    }
    let defaults: &RawHostFields = &raw.defaults;
    let modes: BTreeMap<&str, Option<HostMode>> = raw
        .hosts
        .iter()
        .map(|(n, h)| (n.as_str(), h.mode.as_deref().and_then(|m| m.parse().ok())))
        .collect();
    let peers: BTreeMap<&str, Option<&str>> = raw
        .hosts
        .iter()
        .map(|(n, h)| (n.as_str(), h.peer.as_deref()))
        .collect();

    let mut out = Vec::new();
    for (name, h) in &raw.hosts {
        let key = |k: &str| format!("hosts.{name}.{k}");
        if !valid_name(name) {
            c.problem(
                format!("hosts.{name}"),
                "host names may use letters, digits, '-', '_' and '.' only, and start with a letter, a digit or '_'",
            );
        }
        let ip = match &h.ip {
            Some(ip) => c.ipv4(&key("ip"), ip),
            None => {
                c.problem(key("ip"), "missing");
                None
            }
        };
        let mode = match &h.mode {
            None => {
                c.problem(key("mode"), "missing (master or slave)");
                HostMode::Slave
            }
            some => c.named(&key("mode"), some, HostMode::Slave),
        };
        match (mode, h.peer.as_deref()) {
            (HostMode::Master, None) => {
                c.problem(key("peer"), "a master needs a peer (the other master)")
            }
            (HostMode::Slave, Some(_)) => c.problem(key("peer"), "only masters have a peer"),
            (HostMode::Master, Some(peer)) => match modes.get(peer) {
                None => c.problem(key("peer"), format!("unknown host {peer:?}")),
                Some(_) if peer == name => {
                    c.problem(key("peer"), "a master cannot be its own peer")
                }
                Some(Some(HostMode::Master)) => {
                    if peers.get(peer).copied().flatten() != Some(name.as_str()) {
                        c.problem(
                            key("peer"),
                            format!("{peer:?} does not name {name:?} as its peer"),
                        );
                    }
                }
                Some(_) => c.problem(key("peer"), format!("{peer:?} is not a master")),
            },
            (HostMode::Slave, None) => {}
        }
        let f = h.or(defaults);
        let ports = |c: &mut Collector, k: &str, v: Option<u16>, d: u16| match v {
            Some(0) => {
                c.problem(key(k), "port 0 is not a port");
                d
            }
            other => other.unwrap_or(d),
        };
        let agent_port = ports(c, "agent_port", f.agent_port, 9989);
        let mysql_port = ports(c, "mysql_port", f.mysql_port, 3306);
        let cluster_interface = f.cluster_interface.clone().unwrap_or_else(|| "eth0".into());
        if cluster_interface.is_empty()
            || cluster_interface.len() > 15
            || cluster_interface.contains(['/', ' '])
        {
            c.problem(
                key("cluster_interface"),
                format!("{cluster_interface:?} is not an interface name"),
            );
        }
        out.push(Host {
            name: name.clone(),
            ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            mode,
            peer: h.peer.clone().filter(|_| mode == HostMode::Master),
            cluster_interface,
            agent_port,
            mysql_port,
            agent_user: f.agent_user.clone().unwrap_or_else(|| "mmm_agent".into()),
            agent_password: c.secret(
                &key("agent_password"),
                &f.agent_password,
                &f.agent_password_file,
            ),
            monitor_user: f
                .monitor_user
                .clone()
                .unwrap_or_else(|| "mmm_monitor".into()),
            monitor_password: c.secret(
                &key("monitor_password"),
                &f.monitor_password,
                &f.monitor_password_file,
            ),
            replication_user: f.replication_user.clone().unwrap_or_else(|| "repl".into()),
            replication_password: c.secret(
                &key("replication_password"),
                &f.replication_password,
                &f.replication_password_file,
            ),
            mysql_pid_file: f.mysql_pid_file.clone().map(PathBuf::from),
            mysql_tls: crate::config::tls::validate(c, name, &f),
        });
    }
    out
}

/// Names reach command lines (kill_host_bin gets the host name as an argument): a leading
/// '-' or '.' would read as an option or a path there.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
}
