//! `[agent]`: fencing, the gratuitous ARP burst, paths, and the HTTP listener every agent
//! binds.

use super::Collector;
use crate::config::raw::RawConfig;
use crate::config::{AgentConfig, Host};
use crate::types::{Fencing, ProbeMode};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Bounds of the gratuitous ARP burst.
const MAX_GARP_COUNT: u32 = 100;
const MAX_GARP_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn agent(c: &mut Collector, raw: &RawConfig) -> AgentConfig {
    let a = &raw.agent;
    let garp_count = a.garp_count.unwrap_or(5);
    if garp_count == 0 {
        c.problem(
            "agent.garp_count",
            "must be at least 1: clients keep the old MAC for ~40 s without a gratuitous ARP",
        );
    }
    if garp_count > MAX_GARP_COUNT {
        c.problem(
            "agent.garp_count",
            format!("must be at most {MAX_GARP_COUNT}: a longer burst only floods the segment"),
        );
    }
    let garp_interval = c.positive_duration(
        "agent.garp_interval",
        &a.garp_interval,
        Duration::from_millis(50),
    );
    if garp_interval > MAX_GARP_INTERVAL {
        c.problem(
            "agent.garp_interval",
            format!(
                "must be at most {MAX_GARP_INTERVAL:?}: the burst exists to switch clients at once"
            ),
        );
    }
    let state_dir = PathBuf::from(a.state_dir.as_deref().unwrap_or("/run/mmm"));
    if !state_dir.is_absolute() {
        c.problem("agent.state_dir", "must be an absolute path");
    }
    let mysql_socket = a
        .mysql_socket
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if mysql_socket.as_ref().is_some_and(|p| !p.is_absolute()) {
        c.problem(
            "agent.mysql_socket",
            "must be an absolute path (or empty: the host's ip)",
        );
    }
    let mut monitor_ips = Vec::new();
    for (i, text) in a.monitor_ips.iter().flatten().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => monitor_ips.push(ip),
            Err(_) => c.problem(
                format!("agent.monitor_ips[{i}]"),
                format!("{text:?} is not an IP address"),
            ),
        }
    }
    AgentConfig {
        probe: c.named("agent.probe", &a.probe, ProbeMode::Auto),
        fencing: c.named("agent.fencing", &a.fencing, Fencing::Lease),
        lease: c.positive_duration("agent.lease", &a.lease, Duration::from_secs(1)),
        max_kill_retries: a.max_kill_retries.unwrap_or(10),
        garp_count,
        garp_interval,
        garp_refresh: c.optional_duration("agent.garp_refresh", &a.garp_refresh),
        state_dir,
        monitor_ips,
        mysql_socket,
        http: c.address("agent.http", &a.http),
        block_users: {
            let list = a.block_users.clone().unwrap_or_default();
            for (i, p) in list.iter().enumerate() {
                if p.trim().is_empty() || p.chars().all(|c| c == '%') {
                    c.problem(
                        format!("agent.block_users[{i}]"),
                        format!("{p:?} would lock every account: name the application users"),
                    );
                }
            }
            list
        },
    }
}

/// `agent.http` is bound by every agent: its port must be free on each database host,
/// where the agent's own port and mysqld's already listen (at the host's ip, which an
/// unspecified address covers too).
pub(super) fn check_agent_http(c: &mut Collector, http: Option<SocketAddr>, hosts: &[Host]) {
    let Some(addr) = http else { return };
    for h in hosts {
        let overlaps = addr.ip().is_unspecified() || addr.ip() == IpAddr::V4(h.ip);
        for (key, port) in [("agent_port", h.agent_port), ("mysql_port", h.mysql_port)] {
            if overlaps && addr.port() == port {
                c.problem(
                    "agent.http",
                    format!("{addr} takes hosts.{}.{key} ({port}): give the HTTP listener a port of its own", h.name),
                );
            }
        }
    }
}
