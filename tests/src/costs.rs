//! What the daemons cost, read from the kernel: CPU time and memory of processes from
//! /proc, and the payload bytes on the monitor's agent links from the sockets' TCP_INFO
//! (`ss -ti`), so heartbeat traffic is measured, not computed from frame sizes.

use crate::netns::Net;
use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux we run on).
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// CPU time (user + system) a process has used, in ms; None once it is gone.
pub fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (proc(5)), so 11 and 12 here.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / ticks_per_second())
}

/// A `VmRSS` / `VmHWM` style field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Payload bytes sent plus received on every established TCP connection of `node`'s
/// namespace to `port`, and how many connections there were.
pub fn link_bytes(net: &Net, node: &str, port: u16) -> (u64, usize) {
    let out = net.try_exec(
        node,
        &[
            "ss",
            "-Htin",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // ss prints each connection on two lines: addresses, then TCP_INFO.
    let infos: Vec<&str> = text.lines().filter(|l| l.contains("rtt:")).collect();
    let bytes = infos
        .iter()
        .map(|l| field(l, "bytes_sent:") + field(l, "bytes_received:"))
        .sum();
    (bytes, infos.len())
}

/// A moment's readings of the monitor, the agents and the agent links.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    monitor_cpu_ms: u64,
    agents_cpu_ms: u64,
    link_bytes: u64,
    links: usize,
}

impl Snapshot {
    pub fn take(net: &Net, monitor: u32, agents: &[u32]) -> Snapshot {
        Snapshot::take_on(net, "mon", monitor, agents)
    }

    /// As [`take`](Self::take), for a monitor running in the lab node `node`.
    pub fn take_on(net: &Net, node: &str, monitor: u32, agents: &[u32]) -> Snapshot {
        let (link_bytes, links) = link_bytes(net, node, 9989);
        Snapshot {
            at: Instant::now(),
            monitor_cpu_ms: cpu_ms(monitor).unwrap_or(0),
            agents_cpu_ms: agents.iter().filter_map(|p| cpu_ms(*p)).sum(),
            link_bytes,
            links,
        }
    }
}

/// Costs over a window between two snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Costs {
    pub window_ms: u64,
    /// Percent of one core.
    pub monitor_cpu_pct: f64,
    /// Percent of one core, the mean of the agents.
    pub agent_cpu_pct: f64,
    pub monitor_rss_kib: u64,
    /// The largest agent's resident set.
    pub agent_rss_kib: u64,
    /// Payload bytes per second on one agent link, both directions (TCP/IP headers not
    /// counted).
    pub link_bytes_per_s: f64,
}

impl Costs {
    pub fn between(a: &Snapshot, b: &Snapshot, monitor: u32, agents: &[u32]) -> Costs {
        let window_ms = (b.at - a.at).as_millis().max(1) as u64;
        let pct = |ms: u64| ms as f64 * 100.0 / window_ms as f64;
        let links = b.links.max(1) as f64;
        Costs {
            window_ms,
            monitor_cpu_pct: pct(b.monitor_cpu_ms.saturating_sub(a.monitor_cpu_ms)),
            agent_cpu_pct: pct(b.agents_cpu_ms.saturating_sub(a.agents_cpu_ms))
                / agents.len().max(1) as f64,
            monitor_rss_kib: status_kib(monitor, "VmRSS").unwrap_or(0),
            agent_rss_kib: agents
                .iter()
                .filter_map(|p| status_kib(*p, "VmRSS"))
                .max()
                .unwrap_or(0),
            link_bytes_per_s: b.link_bytes.saturating_sub(a.link_bytes) as f64 * 1000.0
                / window_ms as f64
                / links,
        }
    }
}

/// Sum of every sample of `metric` (any labels) in a Prometheus text exposition.
pub fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bytes received plus sent on `eth0` of a node's namespace (/proc/net/dev is per
/// namespace).
pub fn eth0_bytes(net: &Net, node: &str) -> u64 {
    let out = net.try_exec(node, &["cat", "/proc/net/dev"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("eth0:"))
        .map(|rest| {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // receive bytes is the first field, transmit bytes the ninth.
            f.first().copied().unwrap_or(0) + f.get(8).copied().unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A moment's readings of a monitor fleet: the etcd members' own counters (fetched from
/// their /metrics), their network devices, and the monitors' and agents' CPU time.
#[derive(Debug, Clone)]
pub struct FleetSnapshot {
    at: Instant,
    /// gRPC calls the members finished, summed over the members.
    grpc_requests: f64,
    /// gRPC messages the members received (each message of a stream counts, such as a
    /// lease keep-alive), summed.
    grpc_messages: f64,
    /// gRPC payload bytes the members received and sent to clients, summed.
    grpc_bytes: f64,
    /// Raft proposals committed (the first member's count: every member commits each).
    proposals: f64,
    /// Bytes in and out of the members' eth0 (client and peer traffic), summed.
    eth_bytes: u64,
    /// CPU ms of each monitor given, in order.
    monitors_cpu_ms: Vec<u64>,
    agents_cpu_ms: u64,
}

impl FleetSnapshot {
    /// `members`: (node, client URL) of each etcd member.
    pub fn take(
        net: &Net,
        members: &[(String, String)],
        monitors: &[u32],
        agents: &[u32],
    ) -> FleetSnapshot {
        let mut s = FleetSnapshot {
            at: Instant::now(),
            grpc_requests: 0.0,
            grpc_messages: 0.0,
            grpc_bytes: 0.0,
            proposals: 0.0,
            eth_bytes: 0,
            monitors_cpu_ms: monitors.iter().map(|p| cpu_ms(*p).unwrap_or(0)).collect(),
            agents_cpu_ms: agents.iter().filter_map(|p| cpu_ms(*p)).sum(),
        };
        for (i, (node, url)) in members.iter().enumerate() {
            let out = net.try_exec(
                node,
                &["curl", "-s", "--max-time", "2", &format!("{url}/metrics")],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            s.grpc_requests += metric_sum(&text, "grpc_server_handled_total");
            s.grpc_messages += metric_sum(&text, "grpc_server_msg_received_total");
            s.grpc_bytes += metric_sum(&text, "etcd_network_client_grpc_received_bytes_total")
                + metric_sum(&text, "etcd_network_client_grpc_sent_bytes_total");
            if i == 0 {
                s.proposals = metric_sum(&text, "etcd_server_proposals_committed_total");
            }
            s.eth_bytes += eth0_bytes(net, node);
        }
        s
    }
}

/// What a monitor fleet costs over a window between two [`FleetSnapshot`]s.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetCosts {
    pub window_ms: u64,
    /// gRPC calls per second the etcd cluster finished (every member's sum): unary
    /// requests; a stream counts once, when it ends.
    pub etcd_requests_per_s: f64,
    /// gRPC messages per second the etcd cluster received: requests and every message on
    /// a stream (lease keep-alives, watches).
    pub etcd_messages_per_s: f64,
    /// Raft proposals committed per second (writes: lease keep-alives are not proposals).
    pub etcd_proposals_per_s: f64,
    /// gRPC payload bytes per second between etcd and its clients, both directions.
    pub etcd_client_bytes_per_s: f64,
    /// Bytes per second on the members' links (clients and raft peers; each peer
    /// message counted at both ends).
    pub etcd_link_bytes_per_s: f64,
    /// Percent of one core, per monitor given (leader first).
    pub monitors_cpu_pct: Vec<f64>,
    pub monitors_rss_kib: Vec<u64>,
    /// Percent of one core, the mean of the agents.
    pub agent_cpu_pct: f64,
    /// The largest agent's resident set.
    pub agent_rss_kib: u64,
}

impl FleetCosts {
    pub fn between(
        a: &FleetSnapshot,
        b: &FleetSnapshot,
        monitors: &[u32],
        agents: &[u32],
    ) -> FleetCosts {
        let window_ms = (b.at - a.at).as_millis().max(1) as u64;
        let per_s = |d: f64| d * 1000.0 / window_ms as f64;
        let pct = |ms: u64| ms as f64 * 100.0 / window_ms as f64;
        FleetCosts {
            window_ms,
            etcd_requests_per_s: per_s(b.grpc_requests - a.grpc_requests),
            etcd_messages_per_s: per_s(b.grpc_messages - a.grpc_messages),
            etcd_proposals_per_s: per_s(b.proposals - a.proposals),
            etcd_client_bytes_per_s: per_s(b.grpc_bytes - a.grpc_bytes),
            etcd_link_bytes_per_s: per_s(b.eth_bytes.saturating_sub(a.eth_bytes) as f64),
            monitors_cpu_pct: a
                .monitors_cpu_ms
                .iter()
                .zip(&b.monitors_cpu_ms)
                .map(|(x, y)| pct(y.saturating_sub(*x)))
                .collect(),
            monitors_rss_kib: monitors
                .iter()
                .map(|p| status_kib(*p, "VmRSS").unwrap_or(0))
                .collect(),
            agent_cpu_pct: pct(b.agents_cpu_ms.saturating_sub(a.agents_cpu_ms))
                / agents.len().max(1) as f64,
            agent_rss_kib: agents
                .iter()
                .filter_map(|p| status_kib(*p, "VmRSS"))
                .max()
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# HELP grpc_server_handled_total x\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 12\n\
                    grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"LeaseKeepAlive\"} 3\n\
                    grpc_server_handled_total_other 99\n\
                    etcd_server_proposals_committed_total 1.5e+03\n";
        assert_eq!(super::metric_sum(text, "grpc_server_handled_total"), 15.0);
        assert_eq!(
            super::metric_sum(text, "etcd_server_proposals_committed_total"),
            1500.0
        );
    }
}
