//! etcd having a bad minute under client writes, measured (`cargo xtask bench fleet`'s
//! etcd group, issue 21's "Measured"): etcd's raft leader or a follower SIGKILLed, etcd's
//! majority lost for 30 s (both followers SIGKILLed), or the writer's host cut from every
//! etcd member for 30 s (blackhole routes on the members, as scenario f22; the fleet fails
//! it over by design). What the client writing through the writer VIP saw (failed writes,
//! its longest gap against its usual one, acknowledged writes lost or duplicated), the
//! fleet's leader and term before and after, and for the cut when `show` named the new
//! writer. Runs on [`FleetLab::start_per_rule`] (etcd 500/50 ms, session_ttl 4 s).
//!
//! [`undergo`] leaves the lab ready for a writer failure right after the event: a killed
//! member stays down (the failure is handled with one member of three lost) until
//! [`recover`]; the majority comes back, and the cut heals, within the event.

use crate::fleet_lab::FleetLab;
use crate::handover::{client, ClientView};
use crate::netns::wait_for;
use serde::Serialize;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// How long etcd's majority is lost, and the writer cut from etcd.
pub const OUTAGE: Duration = Duration::from_secs(30);
/// How long the client goes on writing after a single member's kill: past the session
/// TTL (4 s), so a lease that could not be renewed would have lapsed.
const AFTER_KILL: Duration = Duration::from_secs(6);
/// How long it goes on writing once etcd's majority is back or the cut healed.
const AFTER_HEAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EtcdEvent {
    /// The member that leads etcd's raft (`etcdctl endpoint status`) SIGKILLed.
    RaftLeaderKill,
    /// A member that does not lead it SIGKILLed.
    FollowerKill,
    /// Both followers SIGKILLed, started again on their data after [`OUTAGE`].
    MajorityLost,
    /// Blackhole routes to the writer (db1) on every member for [`OUTAGE`].
    WriterCut,
}

impl EtcdEvent {
    pub const ALL: [EtcdEvent; 4] = [
        EtcdEvent::RaftLeaderKill,
        EtcdEvent::FollowerKill,
        EtcdEvent::MajorityLost,
        EtcdEvent::WriterCut,
    ];

    pub fn key(self) -> &'static str {
        match self {
            EtcdEvent::RaftLeaderKill => "etcd-leader-kill9",
            EtcdEvent::FollowerKill => "etcd-follower-kill9",
            EtcdEvent::MajorityLost => "etcd-majority-lost",
            EtcdEvent::WriterCut => "etcd-writer-cut",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            EtcdEvent::RaftLeaderKill => "etcd's raft leader SIGKILL",
            EtcdEvent::FollowerKill => "an etcd follower SIGKILL",
            EtcdEvent::MajorityLost => "etcd's majority lost 30 s (both followers SIGKILL)",
            EtcdEvent::WriterCut => "the writer (db1) cut from every etcd member 30 s",
        }
    }

    pub fn parse(s: &str) -> Option<EtcdEvent> {
        EtcdEvent::ALL.into_iter().find(|x| x.key() == s)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EtcdOutcome {
    /// The members SIGKILLed.
    pub members: Vec<String>,
    /// Members still down after the event (started again by [`recover`]).
    pub down: Vec<String>,
    /// The fleet's (leader, term) before the event and once it was over.
    pub fleet_before: (String, u64),
    pub fleet_after: (String, u64),
    /// The writer `show` names once the event was over (db1, or db2 after the cut): the
    /// host whose failure follows.
    pub writer: String,
    /// The cut only: event -> the first `show` naming db2 the writer, ms.
    pub writer_moved_ms: Option<i64>,
    /// The cut only: the old writer did not replicate from the new one 5 s after the
    /// cut healed, and was rejoined with `set_offline` and `set_online`.
    pub rejoined_by_admin: bool,
    #[serde(flatten)]
    pub client: ClientView,
}

/// The event under the hand-over client (a row every 5 ms through the writer VIP), db1
/// the writer and two monitors running; waits until it is over and measures.
pub fn undergo(f: &mut FleetLab, event: EtcdEvent) -> EtcdOutcome {
    let fleet_before = f.wait_leader("mon1", None, T);
    let leader = fleet_before.0.clone();
    f.etcd.wait_raft_leader(T);
    let writer = client(f);
    let started = Instant::now();
    let mut o = EtcdOutcome {
        fleet_before,
        ..Default::default()
    };
    match event {
        EtcdEvent::RaftLeaderKill | EtcdEvent::FollowerKill => {
            let raft_leader = f.etcd.wait_raft_leader(T);
            let member = match event {
                EtcdEvent::RaftLeaderKill => raft_leader,
                _ => f.etcd.followers(T).remove(0),
            };
            f.etcd.kill(&member);
            o.members = vec![member.clone()];
            o.down = vec![member];
            std::thread::sleep(AFTER_KILL);
        }
        EtcdEvent::MajorityLost => {
            o.members = f.etcd.followers(T);
            for m in &o.members {
                f.etcd.kill(m);
            }
            std::thread::sleep(OUTAGE);
            for m in &o.members {
                f.etcd.restart_in(&f.c.lab.net, m);
            }
            f.etcd.wait_healthy(T);
            std::thread::sleep(AFTER_HEAL);
        }
        EtcdEvent::WriterCut => {
            let cut = |op: &str| {
                for m in &f.etcd.members {
                    f.c.lab
                        .net
                        .exec(&m.name, &["ip", "route", op, "blackhole", "192.0.2.11/32"]);
                }
            };
            cut("add");
            o.writer_moved_ms = wait_for(OUTAGE, || {
                (f.shown_writer(&leader).as_deref() == Some("db2"))
                    .then(|| started.elapsed().as_millis() as i64)
            });
            std::thread::sleep(OUTAGE.saturating_sub(started.elapsed()));
            cut("del");
            std::thread::sleep(AFTER_HEAL);
            if o.writer_moved_ms.is_some() && !replicates(f, "db1", "db2") {
                // Seen: the old writer stays REPLICATION_FAIL with its replication
                // stopped after a long cut; an operator's set_offline + set_online
                // rejoins it to the new writer.
                o.rejoined_by_admin = true;
                for command in ["set_offline", "set_online"] {
                    let (code, out) = f.control(&leader, &[command, "db1"]);
                    assert_eq!(code, 0, "{command} db1 after the cut: {out}");
                }
            }
        }
    }
    let log = writer.stop();
    o.fleet_after = f.wait_leader("mon1", None, T);
    o.writer = wait_for(T, || f.shown_writer(&o.fleet_after.0)).unwrap_or_else(|| {
        panic!(
            "after {}: show names no writer:\n{}",
            event.key(),
            f.control(&o.fleet_after.0, &["show"]).1
        )
    });
    let others: Vec<&str> = ["db1", "db2", "db3"]
        .into_iter()
        .filter(|h| *h != o.writer)
        .collect();
    crate::assert::assert_servers(&f.c, &o.writer, &others);
    o.client = ClientView::of(f, &log);
    o
}

/// Whether `host` replicates from `source` with both threads running (given 5 s).
fn replicates(f: &FleetLab, host: &str, source: &str) -> bool {
    let ip = f.c.lab.net.node(source).ip.to_string();
    wait_for(Duration::from_secs(5), || {
        let db = f.c.db(host);
        (db.slave_status("Master_Host") == ip
            && db.slave_status("Slave_IO_Running") == "Yes"
            && db.slave_status("Slave_SQL_Running") == "Yes")
            .then_some(())
    })
    .is_some()
}

/// The members [`undergo`] left down started again on their data; waits until every
/// member is healthy.
pub fn recover(f: &mut FleetLab, o: &EtcdOutcome) {
    for m in &o.down {
        f.etcd.restart_in(&f.c.lab.net, m);
    }
    f.etcd.wait_healthy(T);
}
