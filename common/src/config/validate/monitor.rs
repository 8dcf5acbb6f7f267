//! `[monitor]`: the control socket, the network guard, heartbeats and the timings of
//! failover.

use super::Collector;
use crate::config::raw::RawConfig;
use crate::config::{ControlAddr, MonitorConfig};
use crate::types::MonitorMode;
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound::{Excluded, Unbounded};
use std::path::PathBuf;
use std::time::Duration;

/// The control socket when none is configured: a unix socket for the monitor's user
/// (a TCP one, loopback included, needs the cluster key).
const DEFAULT_CONTROL: &str = "/run/mmm/mmm-monitor.sock";

pub(super) fn monitor(c: &mut Collector, raw: &RawConfig) -> MonitorConfig {
    let m = &raw.monitor;
    let control = match m.control.as_deref() {
        None => ControlAddr::Unix(DEFAULT_CONTROL.into()),
        Some(s) if s.starts_with('/') => ControlAddr::Unix(s.into()),
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => ControlAddr::Tcp(a),
            Err(_) => {
                c.problem(
                    "monitor.control",
                    format!("{s:?} is neither IP:PORT nor an absolute unix socket path"),
                );
                ControlAddr::Unix(DEFAULT_CONTROL.into())
            }
        },
    };
    let ping_ips = match &m.ping_ips {
        None => {
            c.problem(
                "monitor.ping_ips",
                "missing: the network guard needs addresses to ping (MMM required them too)",
            );
            vec![]
        }
        Some(list) => {
            if list.is_empty() {
                c.problem(
                    "monitor.ping_ips",
                    "empty: the network guard needs at least one address",
                );
            }
            list.iter()
                .filter_map(|s| match s.parse::<IpAddr>() {
                    Ok(ip @ IpAddr::V4(_)) => Some(ip),
                    // The guard pings over ICMPv4 only: an IPv6 target would be dropped
                    // silently and could leave it with nothing to ping.
                    Ok(IpAddr::V6(_)) => {
                        c.problem(
                            "monitor.ping_ips",
                            format!("{s:?} is IPv6: the network guard pings IPv4 addresses only"),
                        );
                        None
                    }
                    Err(_) => {
                        c.problem("monitor.ping_ips", format!("{s:?} is not an IP address"));
                        None
                    }
                })
                .collect()
        }
    };
    let heartbeat_interval = c.positive_duration(
        "monitor.heartbeat_interval",
        &m.heartbeat_interval,
        Duration::from_millis(100),
    );
    let agent_timeout = c.positive_duration(
        "monitor.agent_timeout",
        &m.agent_timeout,
        Duration::from_millis(500),
    );
    c.within(
        "monitor.agent_timeout",
        agent_timeout,
        (Excluded(heartbeat_interval), Unbounded),
        || "must be longer than monitor.heartbeat_interval".into(),
    );
    let flap_count = m.flap_count.unwrap_or(3);
    if flap_count == 0 {
        c.problem("monitor.flap_count", "must be at least 1");
    }
    let metrics = c.address("monitor.metrics", &m.metrics);
    let http = c.address("monitor.http", &m.http);
    if metrics.is_some() && metrics == http {
        c.problem(
            "monitor.metrics",
            "is monitor.http's address: the HTTP listener serves /metrics too, leave monitor.metrics out",
        );
    }
    let http_token_file = m.http_token_file.as_deref().map(PathBuf::from);
    match &http_token_file {
        Some(p) if !p.is_absolute() => {
            c.problem("monitor.http_token_file", "must be an absolute path")
        }
        Some(_) if http.is_none() => c.problem(
            "monitor.http_token_file",
            "set without monitor.http: there is no HTTP listener for it to protect",
        ),
        _ => {}
    }
    MonitorConfig {
        control,
        status_path: m
            .status_path
            .clone()
            .unwrap_or_else(|| "/var/lib/mmm/status".into())
            .into(),
        ping_ips,
        ping_interval: c.positive_duration(
            "monitor.ping_interval",
            &m.ping_interval,
            Duration::from_secs(1),
        ),
        heartbeat_interval,
        agent_timeout,
        flap_duration: c.positive_duration(
            "monitor.flap_duration",
            &m.flap_duration,
            Duration::from_secs(3600),
        ),
        flap_count,
        auto_set_online: c.optional_duration("monitor.auto_set_online", &m.auto_set_online),
        failback: m.failback.unwrap_or(false),
        kill_host_bin: m
            .kill_host_bin
            .clone()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        notify_command: {
            let cmd = m
                .notify_command
                .clone()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            if cmd.as_ref().is_some_and(|p| !p.is_absolute()) {
                c.problem(
                    "monitor.notify_command",
                    "must be an absolute path to an executable (or empty: off)",
                );
            }
            cmd
        },
        careful_startup: m.careful_startup.unwrap_or(true),
        mode: c.named("monitor.mode", &m.mode, MonitorMode::Active),
        wait_for_other_master: c.duration(
            "monitor.wait_for_other_master",
            &m.wait_for_other_master,
            Duration::from_secs(120),
        ),
        promotion_timeout: c.positive_duration(
            "monitor.promotion_timeout",
            &m.promotion_timeout,
            Duration::from_secs(10),
        ),
        metrics,
        http,
        http_token_file,
    }
}
