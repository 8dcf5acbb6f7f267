//! `mmm-control check-cluster` against the real lab: a healthy cluster passes (exit 0);
//! planted problems are each found (exit 1): a duplicate server_id, equal
//! auto_increment_offset on the masters, a writable passive master, a missing grant, a
//! master and a slave without log_slave_updates.
//! Needs root; in CI it must run.

use mmm_tests::bin;
use mmm_tests::lab::Cluster;
use mmm_tests::netns::{require_root, wait_for};
use std::time::Duration;

fn check(c: &Cluster) -> (i32, String) {
    let out = c.lab.net.try_exec(
        "mon",
        &[
            bin("mmm-control").to_str().unwrap(),
            "--config",
            c.lab.config.to_str().unwrap(),
            "--timeout",
            "10",
            "check-cluster",
        ],
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_cluster_passes_a_healthy_lab_and_finds_planted_problems() {
    if !require_root("check_cluster_passes_a_healthy_lab_and_finds_planted_problems") {
        return;
    }
    let mut c = Cluster::start("chk", &[]);
    c.start_monitor("monitor.log");
    c.bring_online();
    // Replication settles (the active master's link back to its peer starts last).
    let healthy = wait_for(Duration::from_secs(20), || {
        let (code, out) = check(&c);
        (code == 0).then_some(out)
    });
    let out = healthy.unwrap_or_else(|| {
        panic!(
            "a healthy lab fails check-cluster:\n{}\nshow:\n{}",
            check(&c).1,
            c.control(&["show"]).1
        )
    });
    assert!(out.contains("OK: 3 servers checked, no errors"), "{out}");

    // Nobody may repair what we plant: no monitor, no agents.
    c.stop_monitor();
    for pid in c.agents.clone() {
        c.lab.net.signal(pid, "TERM");
        assert!(c.lab.net.wait_exit(pid, Duration::from_secs(10)));
    }
    // log_slave_updates is not dynamic: the master and the slave come back without it.
    for (i, host) in [(1, "db2"), (2, "db3")] {
        c.dbs[i].restart_with(&c.lab.net, |args| {
            for a in args
                .iter_mut()
                .filter(|a| a.starts_with("--log-slave-updates"))
            {
                *a = "--log-slave-updates=0".into();
            }
        });
        c.db(host).sql("START SLAVE");
        assert_eq!(c.db(host).sql("SELECT @@log_slave_updates"), "0");
    }
    c.db("db3").sql("SET GLOBAL server_id = 1");
    c.db("db2").sql("SET GLOBAL auto_increment_offset = 1");
    c.db("db2").sql("SET GLOBAL read_only = 0");
    c.db("db2")
        .sql("SET sql_log_bin = 0; REVOKE REPLICATION SLAVE ON *.* FROM 'repl'@'%'");
    let (code, out) = check(&c);
    assert_eq!(code, 1, "{out}");
    for needle in [
        "ERROR: server_id 1 is used by db1, db3",
        "ERROR: masters db1 and db2 can generate the same AUTO_INCREMENT values",
        "ERROR: more than one server is writable: db1, db2",
        "ERROR: db2: the replication user lacks REPLICATION SLAVE",
        // A promoted db2 would not pass db1's transactions on to the re-pointed slaves.
        "ERROR: db2: log_slave_updates is off: slaves cannot follow it after a failover",
        "WARNING: db3: log_slave_updates is off",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}
