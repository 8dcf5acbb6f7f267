//! The monitor daemon against real agents and MariaDB in namespaces: MMM's control
//! texts round trip, checks turn stopped / hung / lagging servers into the right states,
//! a failover moves the writer, a restart of the monitor keeps every role where it was,
//! and a garbage control line changes nothing.

use mmm_tests::lab::{ip, Cluster};
use mmm_tests::netns::{require_root, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn bring_online(c: &Cluster) {
    for h in ["db1", "db2", "db3"] {
        // Checks need a moment to report before set_online is accepted.
        let reply = wait_for(T, || {
            let (code, out) = c.control(&["set_online", h]);
            (code == 0).then_some(out)
        });
        assert_eq!(
            reply.as_deref(),
            Some(format!("OK: State of '{h}' changed to ONLINE. Now you can wait some time and check its new roles!\n").as_str()),
            "set_online {h}; show:\n{}",
            c.control(&["show"]).1
        );
    }
    c.wait_show("db1", "writer(192.0.2.100)", T);
    for h in ["db2", "db3"] {
        c.wait_show(h, "reader(", T);
    }
}

#[test]
fn monitor_runs_the_cluster_through_failures_restarts_and_commands() {
    if !require_root("monitor_runs_the_cluster_through_failures_restarts_and_commands") {
        return;
    }
    let mut c = Cluster::start(
        "mon",
        &[(
            "[checks.default]",
            "[checks.rep_backlog]\nmax_backlog = \"3s\"\n\n[checks.default]",
        )],
    );
    c.start_monitor("monitor.log");
    let (_, show) = c.control(&["show"]);
    assert!(
        show.contains("  db1(192.0.2.11) master/AWAITING_RECOVERY. Roles: \n"),
        "first start: {show}"
    );
    bring_online(&c);
    assert!(!c.db("db1").read_only(), "the writer is writable");
    assert!(c.db("db2").read_only() && c.db("db3").read_only());
    assert!(c
        .lab
        .net
        .addresses("db1")
        .contains(&"192.0.2.100/32".to_string()));

    // Exact MMM texts, and refusals exit 1.
    assert_eq!(c.control(&["mode"]), (0, "ACTIVE\n".into()));
    assert_eq!(
        c.control(&["set_online", "db2"]),
        (
            0,
            "OK: This host is already ONLINE. Skipping command.\n".into()
        )
    );
    assert_eq!(
        c.control(&["set_online", "db9"]),
        (1, "ERROR: Unknown host name 'db9'!\n".into())
    );
    let (code, checks) = c.control(&["checks", "db1"]);
    assert_eq!(code, 0);
    assert!(
        checks.contains("db1  mysql        [last change: ") && checks.contains("]  OK"),
        "{checks}"
    );

    // A garbage line on the control socket: an ERROR, nothing changes.
    let before = c.control(&["show"]).1;
    let garbage = c.lab.net.try_exec(
        "mon",
        &[
            "/usr/bin/python3",
            "-c",
            &format!(
                "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\n\
                 s.sendall(b'xyzzy plugh\\n')\nprint(s.makefile().read(), end='')",
                c.lab.dir.path().join("control.sock").to_str().unwrap()
            ),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&garbage.stdout),
        "ERROR: Unknown command 'xyzzy'\n"
    );
    assert_eq!(c.control(&["show"]).1, before);

    // A restart of the monitor keeps every role where it was.
    c.stop_monitor();
    c.start_monitor("monitor-2.log");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.control(&["show"]).1, before, "restart moved something");
    let agent_log = c.lab.log("agent-db1.log");
    let after_restart = agent_log
        .rsplit("monitor authenticated")
        .next()
        .unwrap_or_default();
    assert!(
        !after_restart.contains("RemoveVip"),
        "the restart made db1 drop a VIP:\n{agent_log}"
    );

    // A lagging slave: db3 applies with a delay while db1 takes writes (after the
    // monitor's settle time for freshly online sources).
    std::thread::sleep(Duration::from_secs(8));
    c.db("db3")
        .sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 30; START SLAVE");
    for i in 0..6 {
        c.db("db1").sql(&format!("CREATE TABLE IF NOT EXISTS app.lag (id INT PRIMARY KEY); INSERT INTO app.lag VALUES ({i})"));
        std::thread::sleep(Duration::from_millis(700));
    }
    let delayed = wait_for(T, || {
        c.show_line("db3")
            .contains("slave/REPLICATION_DELAY")
            .then_some(())
    });
    assert!(
        delayed.is_some(),
        "db3 not REPLICATION_DELAY:\n{}\nbehind: {:?}, delay: {:?}",
        c.control(&["checks", "db3"]).1,
        c.db("db3").slave_status("Seconds_Behind_Master"),
        c.db("db3").slave_status("SQL_Delay")
    );
    c.db("db3")
        .sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE");
    c.wait_show("db3", "slave/ONLINE", T);

    // A hung server (SIGSTOP): only the SQL check notices, after trap_period.
    let db3 = c.db("db3").pid;
    c.lab.net.signal(db3, "STOP");
    c.wait_show("db3", "slave/HARD_OFFLINE", T);
    c.lab.net.signal(db3, "CONT");
    c.wait_show("db3", "slave/ONLINE", T);

    // The active master's mysqld stopped: failover to db2, db3 follows db2.
    let db1 = c.db("db1").pid;
    c.lab.net.signal(db1, "TERM");
    c.wait_show("db1", "master/HARD_OFFLINE", T);
    c.wait_show("db2", "writer(192.0.2.100)", T);
    assert!(!c.db("db2").read_only());
    let follows = wait_for(T, || {
        (c.db("db3").slave_status("Master_Host") == "192.0.2.12"
            && c.db("db3").slave_status("Slave_SQL_Running") == "Yes")
            .then_some(())
    });
    assert!(
        follows.is_some(),
        "db3 not replicating from db2: {}",
        c.db("db3").slave_status("Last_IO_Error")
    );
    assert!(c
        .lab
        .net
        .addresses("db2")
        .contains(&format!("{}/32", ip(100))));
    c.stop_monitor();
}
