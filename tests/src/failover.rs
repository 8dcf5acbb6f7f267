//! One kill -9 failover of the active master under client writes, measured: the timeline
//! from the monitor's own log (detection, fencing, promotion steps), the client's view
//! (ARP entry switched, first write on the new master), the slave re-pointed, and the data
//! (acknowledged writes missing or duplicated, replication errors). Used by `mmm-lab` and
//! by `cargo xtask bench failover`.

use crate::client::{verify, Writer, TABLE};
use crate::lab::{ip, Cluster};
use crate::netns::wait_for;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Default)]
pub struct Failover {
    /// (step, ms after the kill); None when not seen.
    pub steps: Vec<(String, Option<i64>)>,
    pub acked: usize,
    pub missing: usize,
    pub duplicated: usize,
    pub replication_errors: Vec<String>,
    pub failed_attempts: usize,
}

/// Wall-clock ms of a tracing line's timestamp (`2026-11-22T05:33:58.146913Z`).
fn log_time_ms(line: &str) -> Option<u64> {
    let t = line.find('T').map(|i| &line[i + 1..])?;
    let (h, m, s) = (
        t.get(0..2)?.parse::<u64>().ok()?,
        t.get(3..5)?.parse::<u64>().ok()?,
        t.get(6..15)?.parse::<f64>().ok()?,
    );
    let day_ms = (h * 3600 + m * 60) * 1000 + (s * 1000.0) as u64;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(now - now % 86_400_000 + day_ms)
}

/// Kills db1's mysqld (the writer) while a client writes through the VIP, waits for the
/// failover to db2 and returns what was measured. `monitor_log` names the monitor's log.
pub fn kill_writer(c: &Cluster, monitor_log: &str) -> Failover {
    c.db("db1").sql(TABLE);
    std::thread::sleep(Duration::from_millis(300));
    let writer = Writer::start(
        &c.lab.net.node("client").ns,
        "192.0.2.100",
        Duration::from_millis(5),
    );
    let warm = wait_for(Duration::from_secs(10), || {
        (writer.log().acked.len() > 20).then_some(())
    });
    assert!(
        warm.is_some(),
        "the client cannot write through the writer VIP: {:?}",
        writer.log().failed.last()
    );
    let kill_wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let kill = Instant::now();
    c.lab.net.signal(c.db("db1").pid, "KILL");
    let t = Duration::from_secs(15);
    let db2_mac = c.lab.net.node("db2").mac.clone();
    let arp = wait_for(t, || {
        (c.lab.net.neigh_mac("client", ip(100)).as_deref() == Some(db2_mac.as_str()))
            .then(|| kill.elapsed())
    });
    let resumed = wait_for(t, || {
        let first = c
            .db("db2")
            .try_sql("SELECT MIN(id) FROM app.w WHERE sid = 2")
            .ok()?
            .parse::<u64>()
            .ok()?;
        writer
            .log()
            .acked
            .iter()
            .find(|(id, _)| *id == first)
            .map(|(_, at)| *at - kill)
    });
    let repointed = wait_for(t, || {
        (c.db("db3").slave_status("Master_Host") == "192.0.2.12"
            && c.db("db3").slave_status("Slave_SQL_Running") == "Yes")
            .then(|| kill.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = writer.stop();

    let mlog: String = c
        .monitor_log(monitor_log)
        .chars()
        .filter(|ch| !ch.is_control() || *ch == '\n')
        .collect();
    let at = |needle: &str| {
        mlog.lines()
            .rev()
            .find(|l| l.contains(needle))
            .and_then(log_time_ms)
            .map(|ms| ms as i64 - kill_wall)
    };
    let mut steps = vec![(
        "monitor: db1 HARD_OFFLINE (detected)".to_string(),
        at("changed from ONLINE to HARD_OFFLINE"),
    )];
    if let Some(line) = mlog
        .lines()
        .rev()
        .find(|l| l.contains("is the new writer after"))
    {
        let start = at("Moving the writer role to");
        if let Some(all) = line
            .split(" ms: ")
            .nth(1)
            .map(|s| s.split(" host=").next().unwrap_or(s))
        {
            for step in all.split("; ") {
                let (off, what) = step.trim().split_once("ms ").unwrap_or(("", step));
                let off: Option<i64> = off.trim_start_matches('+').parse().ok();
                steps.push((
                    format!("monitor: {}", what.trim()),
                    start.zip(off).map(|(s, o)| s + o),
                ));
            }
        }
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as i64);
    steps.push((
        "client's ARP entry for 192.0.2.100 -> db2's MAC".into(),
        ms(arp),
    ));
    steps.push((
        "first client write accepted on the new master".into(),
        ms(resumed),
    ));
    steps.push(("db3 replicating from db2".into(), ms(repointed)));

    let mut f = Failover {
        steps,
        acked: log.acked.len(),
        failed_attempts: log.failed.len(),
        ..Default::default()
    };
    for h in ["db2", "db3"] {
        let _ = wait_for(Duration::from_secs(10), || {
            verify(c.db(h), &log.acked).0.is_empty().then_some(())
        });
        let (missing, dup) = verify(c.db(h), &log.acked);
        f.missing += missing.len();
        f.duplicated += dup.len();
        for field in ["Last_IO_Errno", "Last_SQL_Errno"] {
            let e = c.db(h).slave_status(field);
            if ["1062", "1236", "1950"].contains(&e.as_str()) {
                f.replication_errors.push(format!("{h} {field} {e}"));
            }
        }
    }
    f
}
