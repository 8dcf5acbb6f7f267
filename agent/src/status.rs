//! What the agent reports: the status snapshot the reconciler refreshes, and its two
//! encodings, the heartbeat's flags (answered at once, never waiting on SQL) and the full
//! status report.

use mmm_common::proto::*;
use std::net::Ipv4Addr;

/// What the agent reports; refreshed by the reconciler and read by every connection.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub applied_epoch: u32,
    pub server: Option<ServerKind>,
    pub mysql_up: bool,
    pub read_only: Option<bool>,
    pub held_vips: Vec<Ipv4Addr>,
    pub replication: Option<Replication>,
    pub gtid_executed: String,
    pub binlog: Option<(String, u64)>,
    pub fenced_reason: String,
    /// The desired state gives this host the writer role and it holds no permit to take it
    /// (its lease or etcd permit ran out): reported as self-fenced until it can.
    pub permitless: bool,
    pub probe: Option<ProbeState>,
    /// The server may accept writes: it said read_only = 0, or it stopped answering after
    /// it last did, or a lift of read_only may still run. Never "mysqld cannot be reached"
    /// for a process that may wake up: only a read back read_only = 1 (or the probe seeing
    /// the process exit) clears it.
    pub possibly_writable: bool,
    /// mysqld does not answer and may be writable, and what keeps clients from it holds
    /// whatever it does when it wakes up: the writer VIPs are gone, no lift of read_only
    /// can still run, the agent kills what it left in the server and sets read_only again
    /// the moment it answers. Reported as self-fenced: the demotion is confirmed by that,
    /// never by mysqld being unreachable.
    pub stall_fenced: bool,
    /// When mysqld last answered (its read_only read): the HTTP health checks count an
    /// older answer as none, so a stalled refresh never keeps a host in a load balancer.
    pub answered: Option<std::time::Instant>,
}

impl Status {
    pub(crate) fn heartbeat(&self) -> AgentHeartbeat {
        let mut flags = 0;
        if self.read_only == Some(true) && !self.possibly_writable {
            flags |= hb_flags::READ_ONLY;
        }
        // A hung server that may wake up writable is not "down": a monitor must not take
        // its silence for a demotion.
        if self.mysql_up || self.possibly_writable {
            flags |= hb_flags::MYSQL_UP;
        }
        if !self.fenced_reason.is_empty() || self.permitless || self.stall_fenced {
            flags |= hb_flags::SELF_FENCED;
        }
        if let Some(r) = &self.replication {
            if r.io_running {
                flags |= hb_flags::IO_RUNNING;
            }
            if r.sql_running {
                flags |= hb_flags::SQL_RUNNING;
            }
        }
        AgentHeartbeat {
            applied_epoch: self.applied_epoch,
            uptime_s: host_uptime_s(),
            flags,
            probe: self.probe.unwrap_or(ProbeState::Off),
            source: self
                .replication
                .as_ref()
                .and_then(|r| Some((r.source_host.parse().ok()?, r.source_port))),
            held_vips: self.held_vips.clone(),
        }
    }

    pub(crate) fn report(&self) -> StatusReport {
        StatusReport {
            applied_epoch: self.applied_epoch,
            uptime_s: host_uptime_s(),
            server: self.server.unwrap_or(ServerKind::Unknown),
            mysql_up: self.mysql_up || self.possibly_writable,
            read_only: self.read_only == Some(true) && !self.possibly_writable,
            held_vips: self.held_vips.clone(),
            replication: self.replication.clone(),
            gtid_executed: self.gtid_executed.clone(),
            gtid_unreadable: String::new(),
            binlog: self.binlog.clone(),
            probe: self.probe.unwrap_or(ProbeState::Off),
            fenced_reason: if !self.fenced_reason.is_empty() {
                self.fenced_reason.clone()
            } else if self.permitless {
                "the writer role cannot be taken: no writer permit (lease not renewed)".into()
            } else if self.stall_fenced {
                "mysqld does not answer and may wake up writable: the writer VIPs are gone, and read_only is set again the moment it answers".into()
            } else {
                String::new()
            },
        }
    }
}

/// Seconds since the host booted (MMM's reboot detection compares these).
pub(crate) fn host_uptime_s() -> u32 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0)
}
