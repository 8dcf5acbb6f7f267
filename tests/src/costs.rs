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
        let (link_bytes, links) = link_bytes(net, "mon", 9989);
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
