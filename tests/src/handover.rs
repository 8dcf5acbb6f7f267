//! The monitor fleet losing its leader under client writes, measured: how long until the
//! standby leads (from its own "elected leader" log line, and from `show` naming it), and
//! what the client saw meanwhile (failed writes, its longest gap between acknowledged
//! writes against its usual one). Also what a round needs to leave the fleet as it found
//! it: the old leader back as a standby, the old writer back as the writer. Used by
//! `cargo xtask lab --fleet` and `cargo xtask bench fleet`.

use crate::assert::assert_servers;
use crate::client::{verify, Policy, WriteLog, Writer};
use crate::failover::{log_time_ms, wall_ms, Watched};
use crate::fleet_lab::FleetLab;
use crate::netns::wait_for;
use serde::Serialize;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The hand-over client's ids: apart from the failover measurement's clients.
pub const POLICY: Policy = Policy {
    first_id: 2_000_000_000,
    ..Policy::LAB
};

/// What happens to the leading monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LeaderLoss {
    /// SIGKILL: its etcd session lapses after the TTL.
    Kill,
    /// SIGSTOP and its namespace's link down: a frozen host.
    Frozen,
    /// SIGTERM: it resigns.
    Term,
}

impl LeaderLoss {
    pub const ALL: [LeaderLoss; 3] = [LeaderLoss::Kill, LeaderLoss::Frozen, LeaderLoss::Term];

    pub fn key(self) -> &'static str {
        match self {
            LeaderLoss::Kill => "leader-kill9",
            LeaderLoss::Frozen => "leader-frozen",
            LeaderLoss::Term => "leader-sigterm",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            LeaderLoss::Kill => "leading monitor SIGKILL",
            LeaderLoss::Frozen => "leading monitor's host frozen (SIGSTOP, link down)",
            LeaderLoss::Term => "leading monitor SIGTERM",
        }
    }

    pub fn parse(s: &str) -> Option<LeaderLoss> {
        LeaderLoss::ALL.into_iter().find(|x| x.key() == s)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Handover {
    pub old_leader: String,
    pub new_leader: String,
    pub old_term: u64,
    pub new_term: u64,
    /// Event -> the new leader's "elected leader of the monitor fleet" line, ms.
    pub elected_ms: Option<i64>,
    /// Event -> the first `show` through the new leader that names it, ms.
    pub show_ms: Option<i64>,
    #[serde(flatten)]
    pub client: ClientView,
}

/// What the client writing through the writer VIP saw over an event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientView {
    pub acked: usize,
    /// Client writes that failed or got no answer.
    pub failed: usize,
    /// The client's longest time between two acknowledged writes, ms.
    pub longest_gap_ms: Option<f64>,
    /// Its usual one (p50 of every gap), ms.
    pub normal_gap_ms: Option<f64>,
    /// Acknowledged writes missing or duplicated on db1..db3.
    pub missing: usize,
    pub duplicated: usize,
}

impl ClientView {
    /// The client's log once it stopped: its gaps, and every acknowledged write looked
    /// for on db1..db3 (each given 10 s to catch up).
    pub fn of(f: &FleetLab, log: &WriteLog) -> ClientView {
        let (longest_gap_ms, normal_gap_ms) = gaps_ms(log);
        let mut v = ClientView {
            acked: log.acked.len(),
            failed: log.failed.len(),
            longest_gap_ms,
            normal_gap_ms,
            ..Default::default()
        };
        for db in ["db1", "db2", "db3"] {
            let _ = wait_for(Duration::from_secs(10), || {
                verify(f.c.db(db), &log.acked).0.is_empty().then_some(())
            });
            let (missing, dup) = verify(f.c.db(db), &log.acked);
            v.missing += missing.len();
            v.duplicated += dup.len();
        }
        v
    }
}

/// A client writing a row through the writer VIP every 5 ms (ids from [`POLICY`]), once
/// it has written 100.
pub fn client(f: &FleetLab) -> Writer {
    let client_ns = f.c.lab.net.node("client").ns.clone();
    let writer = Writer::with_policy(&client_ns, "192.0.2.100", Duration::from_millis(5), POLICY);
    let warm = wait_for(Duration::from_secs(10), || {
        (writer.log().acked.len() > 100).then_some(())
    });
    assert!(
        warm.is_some(),
        "the client cannot write through the writer VIP: {:?}",
        writer.log().failed.last()
    );
    writer
}

/// The fleet lab with two monitors, mon1 leading and mon2 standing by, the cluster
/// online through mon1 (db1 the writer) and the client's table created.
pub fn up(tag: &str) -> FleetLab {
    up_fleet(FleetLab::start(tag))
}

/// As [`up`], on a fleet lab already started (say [`FleetLab::start_per_rule`]).
pub fn up_fleet(mut f: FleetLab) -> FleetLab {
    f.start_monitor("mon1");
    let (leader, _) = f.wait_leader("mon1", None, T);
    assert_eq!(leader, "mon1", "the first monitor started leads");
    f.start_monitor("mon2");
    f.bring_online("mon1");
    f.c.db("db1").sql(crate::client::TABLE);
    let standby = wait_for(T, || {
        f.fleet_line("mon1")
            .filter(|(_, _, s)| s == &["mon2".to_string()])
    });
    assert!(
        standby.is_some(),
        "mon2 is not listed as standby: {:?}",
        f.fleet_line("mon1")
    );
    f
}

/// (longest, p50) of the gaps between a log's acknowledged writes, ms.
pub fn gaps_ms(log: &WriteLog) -> (Option<f64>, Option<f64>) {
    let mut at: Vec<Instant> = log.acked.iter().map(|(_, t)| *t).collect();
    at.sort();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    match crate::bench::Summary::of_durations(&gaps) {
        Some(s) => (Some(s.max), Some(s.p50)),
        None => (None, None),
    }
}

/// The other running monitor of a two-monitor fleet.
pub fn other(f: &FleetLab, slot: &str) -> String {
    f.monitors
        .iter()
        .find(|(k, m)| k.as_str() != slot && m.pid.is_some())
        .map(|(k, _)| k.clone())
        .expect("a second monitor runs")
}

/// The monitor `slot` as a failover measurement watches it.
pub fn watched<'a>(f: &'a FleetLab, slot: &str) -> Watched<'a> {
    let m = &f.monitors[slot];
    Watched {
        pid: m.pid.expect("the monitor runs"),
        node: &m.node,
        log: &m.log,
    }
}

/// `leader` (leading, with one standby running and db1 the writer) is lost as `loss`
/// says while a client writes through the VIP every 5 ms; waits for the standby to lead
/// and measures. The old leader stays down (frozen: stopped and cut off) until
/// [`rejoin`]. The client's rows stay in app.w (ids from [`POLICY`]).
pub fn hand_over(f: &mut FleetLab, leader: &str, loss: LeaderLoss) -> Handover {
    let standby = other(f, leader);
    let (was, old_term, _) = f.fleet_line(&standby).expect("a fleet line in show");
    assert_eq!(was, leader, "{leader} must lead before it is lost");
    let writer = client(f);
    let pid = f.monitors[leader].pid.expect("the leader runs");
    let node = f.monitors[leader].node.clone();
    let net = &f.c.lab.net;
    let event_wall = wall_ms();
    let event = Instant::now();
    match loss {
        LeaderLoss::Kill => net.signal(pid, "KILL"),
        LeaderLoss::Term => net.signal(pid, "TERM"),
        LeaderLoss::Frozen => {
            net.signal(pid, "STOP");
            net.exec(&node, &["ip", "link", "set", "eth0", "down"]);
        }
    }
    let shown = wait_for(T, || {
        f.fleet_line(&standby)
            .filter(|(l, _, _)| *l == standby)
            .map(|(_, t, _)| (event.elapsed(), t))
    });
    let (show_ms, new_term) = match shown {
        Some((d, t)) => (Some(d.as_millis() as i64), t),
        None => (None, 0),
    };
    // The writer's lease is its own: a second more of writes under the new leader.
    std::thread::sleep(Duration::from_secs(1));
    let log = writer.stop();
    if loss != LeaderLoss::Frozen {
        assert!(
            net.wait_exit(pid, Duration::from_secs(15)),
            "monitor {leader} did not exit after {loss:?}"
        );
        f.monitors.get_mut(leader).expect("known slot").pid = None;
    }
    let mlog: String = f
        .log(&standby)
        .chars()
        .filter(|ch| !ch.is_control() || *ch == '\n')
        .collect();
    let elected_ms = mlog
        .lines()
        .rev()
        .find(|l| l.contains("elected leader of the monitor fleet"))
        .and_then(log_time_ms)
        .map(|ms| ms as i64 - event_wall);
    Handover {
        old_leader: leader.to_string(),
        new_leader: if shown.is_some() {
            standby
        } else {
            String::new()
        },
        old_term,
        new_term,
        elected_ms,
        show_ms,
        client: ClientView::of(f, &log),
    }
}

/// The lost leader back as a standby: restarted (SIGKILL, SIGTERM) or woken up and
/// reconnected (frozen); waits until `show` through it lists it as a standby.
pub fn rejoin(f: &mut FleetLab, slot: &str, loss: LeaderLoss) {
    match loss {
        LeaderLoss::Kill | LeaderLoss::Term => {
            f.start_monitor(slot);
        }
        LeaderLoss::Frozen => {
            let node = f.monitors[slot].node.clone();
            f.c.lab
                .net
                .exec(&node, &["ip", "link", "set", "eth0", "up"]);
            f.signal(slot, "CONT");
        }
    }
    let back = wait_for(T, || {
        f.fleet_line(slot)
            .filter(|(l, _, s)| l != slot && s.iter().any(|x| x == slot))
    });
    assert!(
        back.is_some(),
        "{slot} is not back as a standby: {:?}\n{}",
        f.fleet_line(slot),
        f.log(slot)
    );
}

/// After db1's mysqld was killed and db2 took over: db1's mysqld started again, set
/// online, the writer role moved back to it through `leader`, and app.w emptied on every
/// server, so the next round starts as the first did. Err (at once) when db1 came back
/// with an errant transaction: a write in flight at the kill, committed by db1 alone and
/// never acknowledged; the monitor rightly keeps such a host out, and the lab has no
/// rebuild of it.
pub fn restore_db1(f: &mut FleetLab, leader: &str) -> Result<(), String> {
    restore(f, leader, "db1")
}

/// As [`restore_db1`] after the mysqld of `killed` (db1 or db2, the writer then) was
/// killed: it is started again and set online, and the writer role goes back to db1
/// unless db1 already holds it.
pub fn restore(f: &mut FleetLab, leader: &str, killed: &str) -> Result<(), String> {
    let net = &f.c.lab.net;
    let i =
        f.c.dbs
            .iter()
            .position(|d| d.node == killed)
            .unwrap_or_else(|| panic!("no server {killed}"));
    f.c.dbs[i].restart(net);
    f.wait_show(leader, killed, "master/AWAITING_RECOVERY", T);
    let online = wait_for(T, || {
        let (code, out) = f.control(leader, &["set_online", killed]);
        if out.contains("has errant transactions") {
            return Some(Err(out.trim().to_string()));
        }
        (code == 0).then_some(Ok(()))
    });
    match online {
        Some(Ok(())) => {}
        Some(Err(errant)) => return Err(errant),
        None => panic!(
            "set_online {killed}: {}",
            f.control(leader, &["set_online", killed]).1
        ),
    }
    f.wait_show(leader, killed, "master/ONLINE", T);
    if killed == "db1" {
        move_writer_to_db1(f, leader);
    } else {
        // Whatever the round left: db1 writes again, db2 and db3 replicate from it.
        f.wait_show(leader, "db1", "writer(192.0.2.100)", T);
    }
    assert_servers(&f.c, "db1", &["db2", "db3"]);
    f.c.db("db1").sql("TRUNCATE TABLE app.w");
    for db in ["db2", "db3"] {
        let empty = wait_for(T, || {
            (f.c.db(db).try_sql("SELECT COUNT(*) FROM app.w").ok()? == "0").then_some(())
        });
        assert!(empty.is_some(), "app.w not emptied on {db}");
    }
    Ok(())
}

/// `move_role writer db1` through `leader`, until `show` names db1 the writer.
fn move_writer_to_db1(f: &FleetLab, leader: &str) {
    let moved = wait_for(T, || {
        let (code, out) = f.control(leader, &["move_role", "writer", "db1"]);
        (code == 0).then_some(out)
    });
    assert!(
        moved.is_some(),
        "move_role writer db1: {}",
        f.control(leader, &["move_role", "writer", "db1"]).1
    );
    f.wait_show(leader, "db1", "writer(192.0.2.100)", T);
}
