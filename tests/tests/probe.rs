//! The eBPF liveness probe in a real agent (uid 65534, four capabilities) watching a real
//! mariadbd in its namespace: events arrive at the monitor's link unasked, name the right
//! process, ignore other namespaces, follow a restarted mysqld, and stay silent for a
//! frozen (SIGSTOP) one. Without mysql_pid_file the agent finds a running mysqld itself;
//! a probe that watches none is shown in `show`, `checks`, check-cluster and metrics.

use mmm_common::proto::{ProbeEventKind, ProbeState};
use mmm_tests::assert::assert_writer;
use mmm_tests::lab::{probe_events, Cluster, Lab, Spec, T};
use mmm_tests::mariadb::{Mariadb, Setup};
use mmm_tests::netns::{require_root, wait_for};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on the waits of the full-lab tests.
const LONG: Duration = Duration::from_secs(30);

fn next(
    rx: &mpsc::Receiver<(Instant, ProbeEventKind, u32)>,
    within: Duration,
) -> Option<(ProbeEventKind, u32)> {
    rx.recv_timeout(within).ok().map(|(_, k, t)| (k, t))
}

fn lab_with_pid_file(tag: &str) -> Lab {
    let lab = Lab::new(tag, "");
    let pid = lab.dir.path().join("db1.pid");
    let text = std::fs::read_to_string(&lab.config).unwrap().replacen(
        "ip = \"192.0.2.11\"\n",
        &format!(
            "ip = \"192.0.2.11\"\nmysql_pid_file = \"{}\"\n",
            pid.display()
        ),
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
    lab
}

#[test]
fn probe_reports_mysqld_death_with_its_pid_and_ignores_other_namespaces() {
    if !require_root("probe_reports_mysqld_death_with_its_pid_and_ignores_other_namespaces") {
        return;
    }
    let lab = lab_with_pid_file("probe1");
    let mut db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    // Another server on the same port, in another namespace.
    let db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let status = lab.with_link(
        "db1",
        |mut l| async move { l.heartbeat(0, T).await.unwrap() },
    );
    assert_eq!(
        status.probe,
        ProbeState::Watching,
        "{}",
        lab.log("agent-db1.log")
    );
    let rx = probe_events(&lab, "db1");

    // db2's mysqld dies: not ours.
    lab.net.signal(db2.pid, "KILL");
    assert_eq!(
        next(&rx, Duration::from_secs(2)),
        None,
        "an event for another namespace's mysqld"
    );

    // SIGTERM: the listening socket closes (then the process exits).
    lab.net.signal(db1.pid, "TERM");
    assert_eq!(next(&rx, T), Some((ProbeEventKind::ListenClose, db1.pid)));
    // A clean shutdown flushes InnoDB first: on a loaded 2-core machine that alone can
    // take several seconds, so the exit gets a wider bound than the close.
    assert_eq!(
        next(&rx, Duration::from_secs(30)),
        Some((ProbeEventKind::ProcessExit, db1.pid)),
        "{}",
        lab.log("agent-db1.log")
    );

    // Restarted: the probe follows the new process from its LISTEN.
    db1.restart(&lab.net);
    assert_eq!(next(&rx, T), Some((ProbeEventKind::ListenOpen, db1.pid)));

    // SIGSTOP: nothing (the SQL check catches a hung server, see tests/monitor.rs).
    lab.net.signal(db1.pid, "STOP");
    assert_eq!(next(&rx, Duration::from_secs(2)), None);
    lab.net.signal(db1.pid, "CONT");

    // kill -9: the exit of the new process, first.
    lab.net.signal(db1.pid, "KILL");
    assert_eq!(next(&rx, T), Some((ProbeEventKind::ProcessExit, db1.pid)));
}

/// A local user who listens on [::]:3306 with IPV6_V6ONLY (beside mysqld's 0.0.0.0:3306)
/// and closes it again must not make the probe report anything: a failover caused by any
/// local user would be a denial of service without the key.
#[test]
fn another_local_process_on_the_mysql_port_moves_nothing() {
    if !require_root("another_local_process_on_the_mysql_port_moves_nothing") {
        return;
    }
    let lab = lab_with_pid_file("probe2");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let rx = probe_events(&lab, "db1");
    let squat = "import socket, time\n\
                 for _ in range(3):\n\
                 \x20   s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n\
                 \x20   s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
                 \x20   s.bind(('::', 3306))\n\
                 \x20   s.listen()\n\
                 \x20   time.sleep(0.2)\n\
                 \x20   s.close()\n\
                 print('squatted')\n";
    // As nobody, and as a process that calls itself mysqld: neither may pass.
    for argv0 in ["python3", "mysqld"] {
        let out = lab.net.exec(
            "db1",
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
                "-c",
                &format!(
                    "import ctypes; ctypes.CDLL(None).prctl(15, b'{argv0}\\0', 0, 0, 0)\n{squat}"
                ),
            ],
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("squatted"),
            "{out:?}"
        );
    }
    assert_eq!(
        next(&rx, Duration::from_secs(2)),
        None,
        "another process's listen and close reached the monitor:\n{}",
        lab.log("agent-db1.log")
    );
    let status = lab.with_link(
        "db1",
        |mut l| async move { l.heartbeat(0, T).await.unwrap() },
    );
    assert_eq!(status.probe, ProbeState::Watching);
    // mysqld itself is still watched: its death is reported with its pid.
    lab.net.signal(db1.pid, "KILL");
    assert_eq!(
        next(&rx, T),
        Some((ProbeEventKind::ProcessExit, db1.pid)),
        "{}",
        lab.log("agent-db1.log")
    );
}

/// When the probe has seen mysqld exit, the demotion runs no SQL against the dead server:
/// the VIP removal is the fence, and the desired state applies without failures.
#[test]
fn a_demotion_after_mysqld_exited_needs_no_sql() {
    if !require_root("a_demotion_after_mysqld_exited_needs_no_sql") {
        return;
    }
    let lab = lab_with_pid_file("probe3");
    lab.without_lease();
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let apply = |d: mmm_common::proto::DesiredState| {
        lab.with_link(
            "db1",
            move |mut l| async move { l.apply(d, T).await.unwrap() },
        )
    };
    let applied = apply(mmm_tests::lab::desired(1, true, &[("writer", 100)]));
    assert!(applied.failures.is_empty(), "{:?}", applied.failures);
    let rx = probe_events(&lab, "db1");
    lab.net.signal(db1.pid, "KILL");
    assert_eq!(next(&rx, T), Some((ProbeEventKind::ProcessExit, db1.pid)));
    let applied = apply(mmm_tests::lab::desired(2, false, &[]));
    let log = lab.log("agent-db1.log");
    assert!(applied.failures.is_empty(), "{:?}\n{log}", applied.failures);
    assert!(
        !lab.net
            .addresses("db1")
            .iter()
            .any(|a| a.starts_with("192.0.2.100")),
        "writer VIP still held"
    );
    assert!(log.contains("skipped: the probe saw mysqld exit"), "{log}");
}

/// The `checks` line of `host`'s probe.
fn probe_check(c: &Cluster, host: &str) -> String {
    let (_, out) = c.control(&["checks", host]);
    out.lines()
        .find(|l| l.contains(" probe "))
        .unwrap_or_default()
        .to_string()
}

/// The config names no mysql_pid_file (as docs/operations.md's operators leave it out)
/// and mysqld runs before the agent: each agent, as nobody, finds its mysqld by the
/// socket listening on mysql_port, and a SIGKILL of the writer's mysqld is failed over on
/// the probe's event.
#[test]
fn without_a_pid_file_the_probe_finds_the_running_mysqld_and_drives_the_failover() {
    if !require_root(
        "without_a_pid_file_the_probe_finds_the_running_mysqld_and_drives_the_failover",
    ) {
        return;
    }
    let spec = Spec {
        mysql_pid_file: false,
        ..Spec::three(Setup::default())
    };
    let mut c = Cluster::start_spec("probe4", &[], &spec);
    let config = std::fs::read_to_string(&c.lab.config).unwrap();
    assert!(!config.contains("mysql_pid_file"), "{config}");
    c.start_monitor("monitor.log");
    c.bring_online();
    for host in ["db1", "db2", "db3"] {
        let watching = wait_for(LONG, || {
            probe_check(&c, host)
                .contains("OK: watching mysqld")
                .then_some(())
        });
        assert!(
            watching.is_some(),
            "{host}: {}\n{}",
            probe_check(&c, host),
            c.lab.log(&format!("agent-{host}.log"))
        );
    }
    let log = c.lab.log("agent-db1.log");
    assert!(
        log.contains("mysqld found listening on mysql_port"),
        "{log}"
    );

    c.lab.net.signal(c.db("db1").pid, "KILL");
    c.wait_show("db1", "master/HARD_OFFLINE", LONG);
    let log = c.monitor_log("monitor.log");
    let line = log
        .lines()
        .find(|l| l.contains("changed from ONLINE to HARD_OFFLINE"))
        .unwrap_or_default();
    assert!(
        line.contains("mysqld process exited (probe)"),
        "{line}\n{log}"
    );
    assert_writer(&c, "db2", &["db3"]);
}

/// A probe that watches no mysqld while mysqld answers (here mysqld runs under another
/// name, which neither the probe's program nor the agent's search accepts) is shown:
/// a `show` warning, an ERROR in `checks` and in check-cluster, and the metrics.
#[test]
fn a_probe_that_watches_nothing_is_shown_everywhere() {
    if !require_root("a_probe_that_watches_nothing_is_shown_everywhere") {
        return;
    }
    let spec = Spec {
        mysql_pid_file: false,
        ..Spec::three(Setup::default())
    };
    let mut c = Cluster::start_spec(
        "probe5",
        &[("[monitor]\n", "[monitor]\nmetrics = \"127.0.0.1:9990\"\n")],
        &spec,
    );
    c.start_monitor("monitor.log");
    c.bring_online();
    let renamed = c.lab.dir.path().join("sqld");
    std::os::unix::fs::symlink("/usr/sbin/mariadbd", &renamed).unwrap();
    c.dbs[2].restart_with(&c.lab.net, |args| {
        args[0] = renamed.to_str().unwrap().into()
    });

    let warning =
        "# Warning: on host db3, the eBPF probe watches no mysqld process though mysqld answers";
    let shown = wait_for(LONG, || {
        let (_, show) = c.control(&["show"]);
        show.contains(warning).then_some(show)
    });
    assert!(
        shown.is_some(),
        "{}\n{}",
        c.control(&["show"]).1,
        c.lab.log("agent-db3.log")
    );
    assert!(
        probe_check(&c, "db3").contains("ERROR: the eBPF probe watches no mysqld process"),
        "{}",
        probe_check(&c, "db3")
    );
    // The agent says why, at its next look (once per reason).
    let said = wait_for(LONG, || {
        let log = c.lab.log("agent-db3.log");
        log.contains("probe watches no mysqld: port 3306 is listened on")
            .then_some(())
    });
    assert!(said.is_some(), "{}", c.lab.log("agent-db3.log"));

    let out = c.lab.net.try_exec(
        "mon",
        &[
            mmm_tests::bin("mmm-control").to_str().unwrap(),
            "--config",
            c.lab.config.to_str().unwrap(),
            "--timeout",
            "10",
            "check-cluster",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ERROR: db3: the agent's eBPF probe watches no mysqld process"),
        "{text}"
    );
    assert!(
        !text.contains("ERROR: db1: the agent's eBPF probe"),
        "{text}"
    );

    let metrics = c.lab.net.exec(
        "mon",
        &[
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9990/metrics').read().decode())",
        ],
    );
    let text = String::from_utf8_lossy(&metrics.stdout);
    for needle in [
        "mmm_probe_blind{host=\"db3\"} 1",
        "mmm_probe_blind{host=\"db1\"} 0",
        "mmm_probe_state{host=\"db3\",state=\"searching\"} 1",
        "mmm_probe_state{host=\"db1\",state=\"watching\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
