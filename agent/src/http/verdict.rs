//! What `/writer`, `/reader` and `/health` answer, decided from a snapshot of the agent's
//! state without IO, so that every rule is tested on its own.
//!
//! A load balancer acts on these answers alone: a 200 that outlives the writer role would
//! send writes to a host that gives them up, so `/writer` says yes only while every
//! condition of the role holds at once: this host is to be the writer and holds a valid
//! permit (its lease or its etcd lease runs, no fence), holds the writer VIP (or, with a
//! writer role without VIP, has the role), and mysqld answered recently with read_only off.
//! Everything else is a 503 with the first reason that fails.

use mmm_common::proto::{ProbeState, Replication};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The agent's state as the answers need it (`super::snapshot` reads it from the agent).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// How long ago mysqld last answered; None: not since the agent started.
    pub answered_ago: Option<Duration>,
    /// An answer older than this counts as none.
    pub fresh: Duration,
    /// The probe saw mysqld's process exit (and no new one listening yet).
    pub mysqld_exited: bool,
    /// read_only as last read.
    pub read_only: Option<bool>,
    pub held_vips: Vec<Ipv4Addr>,
    /// The writer role's VIPs (empty: a writer role without VIP, `ips = []`).
    pub writer_vips: BTreeSet<Ipv4Addr>,
    /// Every other role's VIPs.
    pub reader_vips: BTreeSet<Ipv4Addr>,
    /// The desired state makes this host writable and the permit is valid now
    /// (`Lease::writer_wanted`).
    pub writer_wanted: bool,
    pub permit: Permit,
    /// Why the agent reports itself fenced, when it does (the lease's fence, no permit for
    /// a writer role it was given, a hung server held off).
    pub self_fenced: Option<String>,
    pub replication: Option<Replication>,
    /// The lag a replica may have and still serve reads (`checks.rep_backlog.max_backlog`,
    /// where the monitor takes its reader roles away).
    pub max_lag: Duration,
    /// For `/metrics` only.
    pub probe: Option<ProbeState>,
    /// Fences of the lease since the agent started.
    pub fences: u64,
    /// In a fleet: the agent's etcd lease.
    pub etcd: Option<EtcdRenewal>,
    /// The config file's loads (start, SIGHUP): crate::reload.
    pub config_load: mmm_common::config::reload::LoadState,
}

/// In a fleet: whether etcd renews the agent's own lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdRenewal {
    /// Renewed within two keepalive periods.
    pub ok: bool,
    /// How long ago it was last renewed; None: not since the agent started.
    pub ago: Option<Duration>,
}

/// The writer permit: the agent's lease (or, in a fleet, its etcd lease).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permit {
    /// False with `fencing = "none"`: no permit is needed.
    pub enforced: bool,
    /// Time left; None once expired.
    pub left: Option<Duration>,
    /// The lease's fence, while it holds.
    pub fenced: Option<String>,
    /// In a fleet: renewed by the agent's etcd lease (else by the monitor's heartbeats).
    pub etcd: bool,
}

impl Permit {
    pub fn valid(&self) -> bool {
        !self.enforced || (self.left.is_some() && self.fenced.is_none())
    }
}

/// A check's answer: 200 or 503, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
}

fn yes(reason: impl Into<String>) -> Verdict {
    Verdict {
        ok: true,
        reason: reason.into(),
    }
}

fn no(reason: impl Into<String>) -> Verdict {
    Verdict {
        ok: false,
        reason: reason.into(),
    }
}

impl Snapshot {
    /// mysqld answered within `fresh`, and the probe has not seen it exit since.
    fn mysql_up(&self) -> Result<Duration, Verdict> {
        if self.mysqld_exited {
            return Err(no("mysqld exited (seen by the probe)"));
        }
        match self.answered_ago {
            None => Err(no("mysqld has not answered the agent")),
            Some(ago) if ago > self.fresh => Err(no(format!(
                "mysqld has not answered the agent for {:.1}s",
                ago.as_secs_f64()
            ))),
            Some(ago) => Ok(ago),
        }
    }

    fn holds(&self, vips: &BTreeSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
        self.held_vips
            .iter()
            .copied()
            .filter(|ip| vips.contains(ip))
            .collect()
    }
}

fn list(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/writer`.
pub fn writer(s: &Snapshot) -> Verdict {
    if let Some(fence) = &s.permit.fenced {
        return no(format!("self-fenced: {fence}"));
    }
    if !s.permit.valid() {
        return no(if s.permit.etcd {
            "no writer permit: the agent's etcd lease is not renewed"
        } else {
            "no writer permit: the lease ran out (no renewal from the monitor)"
        });
    }
    if !s.writer_wanted {
        return no("not the writer: the monitor has not made this host writable");
    }
    if let Some(why) = &s.self_fenced {
        return no(format!("self-fenced: {why}"));
    }
    if let Err(down) = s.mysql_up() {
        return down;
    }
    if s.read_only != Some(false) {
        return no("read_only is on");
    }
    let vips = if s.writer_vips.is_empty() {
        "the writer role (it has no VIP)".to_string()
    } else {
        let held = s.holds(&s.writer_vips);
        if held.is_empty() {
            let wanted: Vec<Ipv4Addr> = s.writer_vips.iter().copied().collect();
            return no(format!(
                "the writer VIP is not held here ({})",
                list(&wanted)
            ));
        }
        format!("the writer VIP {}", list(&held))
    };
    let permit = match (s.permit.enforced, s.permit.left) {
        (true, Some(left)) => format!(", the permit runs {:.1}s more", left.as_secs_f64()),
        _ => String::new(),
    };
    yes(format!("writable with {vips}{permit}"))
}

/// `/reader`: mysqld answers and the host holds a reader role, or replicates in sync
/// enough: both threads running and no further behind than `max_lag` (a NULL lag is not
/// in sync). A writer answers 200 only that way too (in master-master, it replicates from
/// its peer).
pub fn reader(s: &Snapshot) -> Verdict {
    if let Err(down) = s.mysql_up() {
        return down;
    }
    let roles = s.holds(&s.reader_vips);
    if !roles.is_empty() {
        return yes(format!("holds the reader VIP {}", list(&roles)));
    }
    let Some(r) = &s.replication else {
        return no("holds no reader VIP and replicates from nobody");
    };
    let source = format!("{}:{}", r.source_host, r.source_port);
    match (r.io_running, r.sql_running, r.seconds_behind) {
        (false, _, _) | (_, false, _) => no(format!(
            "holds no reader VIP and replication from {source} is stopped (IO thread {}, SQL thread {}){}",
            if r.io_running { "running" } else { "stopped" },
            if r.sql_running { "running" } else { "stopped" },
            if r.last_error.is_empty() { String::new() } else { format!(": {}", r.last_error) },
        )),
        (true, true, None) => no(format!(
            "holds no reader VIP and its lag behind {source} is unknown"
        )),
        (true, true, Some(lag)) if Duration::from_secs(lag.into()) > s.max_lag => no(format!(
            "holds no reader VIP and is {lag}s behind {source} (more than {}s)",
            s.max_lag.as_secs()
        )),
        (true, true, Some(lag)) => yes(format!("replicating from {source}, {lag}s behind")),
    }
}

/// `/health`: the agent answers (it does, or nothing would) and so does mysqld.
pub fn health(s: &Snapshot) -> Verdict {
    match s.mysql_up() {
        Err(down) => down,
        Ok(ago) => yes(format!(
            "the agent runs; mysqld answered {}ms ago",
            ago.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const READER_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);

    /// The writer as it should be: every condition of `/writer` holds.
    fn writer_now() -> Snapshot {
        Snapshot {
            answered_ago: Some(Duration::from_millis(200)),
            fresh: Duration::from_secs(2),
            read_only: Some(false),
            held_vips: vec![VIP],
            writer_vips: [VIP].into(),
            reader_vips: [READER_VIP].into(),
            writer_wanted: true,
            permit: Permit {
                enforced: true,
                left: Some(Duration::from_millis(700)),
                fenced: None,
                etcd: false,
            },
            max_lag: Duration::from_secs(60),
            ..Snapshot::default()
        }
    }

    fn replica(io: bool, sql: bool, lag: Option<u32>) -> Replication {
        Replication {
            source_host: "10.0.0.11".into(),
            source_port: 3306,
            io_running: io,
            sql_running: sql,
            seconds_behind: lag,
            last_error: String::new(),
        }
    }

    #[track_caller]
    fn refused(v: Verdict, reason: &str) {
        assert!(!v.ok, "{v:?}");
        assert!(v.reason.contains(reason), "{:?} lacks {reason:?}", v.reason);
    }

    #[test]
    fn the_writer_answers_yes_only_while_every_condition_holds() {
        let v = writer(&writer_now());
        assert!(v.ok, "{v:?}");
        assert_eq!(
            v.reason,
            "writable with the writer VIP 10.0.0.100, the permit runs 0.7s more"
        );
        let with = |change: fn(&mut Snapshot)| {
            let mut s = writer_now();
            change(&mut s);
            writer(&s)
        };
        refused(with(|s| s.permit.left = None), "the lease ran out");
        refused(
            with(|s| {
                s.permit.left = None;
                s.permit.etcd = true;
            }),
            "etcd lease is not renewed",
        );
        refused(
            with(|s| s.permit.fenced = Some("no renewal within the lease".into())),
            "self-fenced: no renewal within the lease",
        );
        refused(with(|s| s.writer_wanted = false), "not the writer");
        refused(
            with(|s| s.self_fenced = Some("no writer permit".into())),
            "self-fenced: no writer permit",
        );
        refused(with(|s| s.read_only = Some(true)), "read_only is on");
        refused(
            with(|s| s.held_vips.clear()),
            "writer VIP is not held here (10.0.0.100)",
        );
        refused(
            with(|s| s.held_vips = vec![READER_VIP]),
            "writer VIP is not held",
        );
        refused(with(|s| s.mysqld_exited = true), "mysqld exited");
        refused(with(|s| s.answered_ago = None), "has not answered");
        // A stalled refresh: the last answer, writable as it was, is too old to count.
        refused(
            with(|s| s.answered_ago = Some(Duration::from_secs(3))),
            "has not answered the agent for 3.0s",
        );
    }

    #[test]
    fn a_writer_role_without_vip_needs_the_role_and_no_vip() {
        let mut s = writer_now();
        s.writer_vips.clear();
        s.held_vips.clear();
        let v = writer(&s);
        assert!(v.ok, "{v:?}");
        assert!(
            v.reason.contains("the writer role (it has no VIP)"),
            "{v:?}"
        );
        s.writer_wanted = false;
        refused(writer(&s), "not the writer");
    }

    #[test]
    fn with_fencing_none_no_permit_is_needed() {
        let mut s = writer_now();
        s.permit = Permit {
            enforced: false,
            ..Permit::default()
        };
        let v = writer(&s);
        assert!(v.ok && !v.reason.contains("permit"), "{v:?}");
    }

    #[test]
    fn a_reader_holds_a_reader_role_or_replicates_in_sync_enough() {
        let reader_now = || Snapshot {
            held_vips: vec![],
            replication: Some(replica(true, true, Some(3))),
            read_only: Some(true),
            writer_wanted: false,
            ..writer_now()
        };
        let v = reader(&reader_now());
        assert_eq!(v, yes("replicating from 10.0.0.11:3306, 3s behind"),);
        let with = |change: fn(&mut Snapshot)| {
            let mut s = reader_now();
            change(&mut s);
            reader(&s)
        };
        refused(
            with(|s| s.replication = Some(replica(false, true, None))),
            "is stopped (IO thread stopped, SQL thread running)",
        );
        refused(
            with(|s| s.replication = Some(replica(true, true, None))),
            "lag behind 10.0.0.11:3306 is unknown",
        );
        refused(
            with(|s| s.replication = Some(replica(true, true, Some(61)))),
            "61s behind 10.0.0.11:3306 (more than 60s)",
        );
        refused(with(|s| s.replication = None), "replicates from nobody");
        // A reader role is enough, whatever replication does (the monitor judges it).
        let v = with(|s| {
            s.replication = None;
            s.held_vips = vec![READER_VIP];
        });
        assert_eq!(v, yes("holds the reader VIP 10.0.0.101"));
        refused(with(|s| s.answered_ago = None), "has not answered");
        // The writer VIP is no reader role.
        refused(
            with(|s| {
                s.replication = None;
                s.held_vips = vec![VIP];
            }),
            "holds no reader VIP",
        );
    }

    #[test]
    fn health_is_mysqld_answering() {
        assert!(health(&writer_now()).ok);
        let mut s = writer_now();
        s.permit.fenced = Some("x".into());
        s.read_only = Some(true);
        assert!(health(&s).ok, "a fenced, read-only host is healthy");
        s.mysqld_exited = true;
        refused(health(&s), "mysqld exited");
    }
}
