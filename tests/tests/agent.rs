//! The agent against the real kernel and real MariaDB, in namespaces made here: VIPs
//! through rtnetlink, gratuitous ARP seen by a client, least privilege, MySQL actions,
//! lease fencing, and bad input. Needs root; in CI it must run (see `require_root`).

use mmm_common::config::ClusterKey;
use mmm_common::proto::*;
use mmm_monitor::agents::client::{AgentLink, LinkError};
use mmm_tests::lab::{desired, ip, Lab};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn apply_ok(lab: &Lab, host: &str, d: DesiredState) {
    // A bound against a hang, not a timing: a first pass after a restart may wait on a
    // loaded server's connection set-up.
    let bound = Duration::from_secs(20);
    // A session the agent closed (its freeze detection, on a loaded machine) is opened
    // again and the state re-sent, as the monitor does.
    let attempt = || {
        let d = d.clone();
        lab.with_link(host, move |mut l| async move { l.apply(d, bound).await })
    };
    let mut applied = attempt();
    for _ in 0..2 {
        if !matches!(applied, Err(LinkError::Conn { .. })) {
            break;
        }
        applied = attempt();
    }
    let applied = applied.unwrap_or_else(|e| {
        panic!(
            "applying on {host}: {}\n{}",
            mmm_common::error_chain(&e),
            lab.logs_of(host)
        )
    });
    assert!(
        applied.failures.is_empty(),
        "{host} failed to apply: {:?}",
        applied.failures
    );
}

/// Effective and permitted capability masks and uid of a process.
fn proc_caps(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    (field("Uid:"), field("CapEff:"), field("CapPrm:"))
}

#[test]
fn agent_moves_a_vip_announces_it_and_restarts_without_flapping() {
    if !require_root("agent_moves_a_vip_announces_it_and_restarts_without_flapping") {
        return;
    }
    let lab = Lab::new("vip", "");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let _db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    let pid1 = lab.agent("db1", "agent-db1.log");
    lab.agent("db2", "agent-db2.log");

    // Least privilege: uid 65534, started with exactly NET_ADMIN(12) NET_RAW(13)
    // PERFMON(38) BPF(39); once the probe is loaded and the ARP socket open, every thread
    // keeps NET_ADMIN alone (capabilities are per thread).
    let (uid, _, _) = proc_caps(pid1);
    assert_eq!(uid, "65534");
    let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid1}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert!(tasks.len() > 1, "the agent runs its runtime's threads");
    for tid in tasks {
        let status = std::fs::read_to_string(format!("/proc/{pid1}/task/{tid}/status")).unwrap();
        for field in ["CapEff:", "CapPrm:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .unwrap()
                .trim();
            assert_eq!(value, "0000000000001000", "thread {tid} {field}");
        }
    }
    let log = lab.log("agent-db1.log");
    assert!(
        log.contains("capabilities held") && log.contains("eBPF liveness probe loaded"),
        "{log}"
    );

    // db2 holds reader VIP .101; the client learns db2's MAC for it.
    apply_ok(&lab, "db2", desired(1, false, &[("reader", 101)]));
    assert!(lab
        .net
        .addresses("db2")
        .contains(&"192.0.2.101/32".to_string()));
    lab.net
        .exec("client", &["ping", "-c1", "-W2", "192.0.2.101"]);
    assert_eq!(
        lab.net.neigh_mac("client", ip(101)).as_deref(),
        Some("02:00:00:00:00:0c")
    );

    // Move it: removed from db2, added on db1, and the GARP switches the client's entry.
    apply_ok(&lab, "db2", desired(2, false, &[]));
    assert!(!lab
        .net
        .addresses("db2")
        .iter()
        .any(|a| a.starts_with("192.0.2.101")));
    apply_ok(&lab, "db1", desired(1, false, &[("reader", 101)]));
    let switched = wait_for(Duration::from_secs(3), || {
        (lab.net.neigh_mac("client", ip(101)).as_deref() == Some("02:00:00:00:00:0b")).then_some(())
    });
    assert!(
        switched.is_some(),
        "client's ARP entry for .101 still {:?}",
        lab.net.neigh_mac("client", ip(101))
    );
    assert!(db1.read_only(), "a reader stays read-only");

    // Restart: the new agent learns the VIP from the kernel and keeps it.
    lab.net.signal(pid1, "KILL");
    assert!(lab.net.wait_exit(pid1, T));
    assert!(lab
        .net
        .addresses("db1")
        .contains(&"192.0.2.101/32".to_string()));
    lab.agent("db1", "agent-db1-restarted.log");
    let hb = lab
        .with_link("db1", |mut l| async move { l.heartbeat(1, T).await })
        .unwrap_or_else(|e| {
            panic!(
                "a heartbeat to the restarted agent: {e:?}\n{}",
                lab.log("agent-db1-restarted.log")
            )
        });
    let learned = wait_for(T, || {
        let hb = lab
            .with_link("db1", |mut l| async move { l.heartbeat(1, T).await })
            .unwrap();
        hb.held_vips.contains(&ip(101)).then_some(hb)
    });
    assert!(
        learned.is_some(),
        "restarted agent does not report the VIP it holds: {hb:?}"
    );
    apply_ok(&lab, "db1", desired(1, false, &[("reader", 101)]));
    let log = lab.log("agent-db1-restarted.log");
    assert!(
        !log.contains("RemoveVip") && !log.contains("AddVip"),
        "restart flapped the VIP:\n{log}"
    );
    let hb = lab
        .with_link("db1", |mut l| async move { l.heartbeat(1, T).await })
        .unwrap();
    assert_eq!(hb.applied_epoch, 1);
    assert_eq!(hb.flags & hb_flags::READ_ONLY, hb_flags::READ_ONLY);
}

#[test]
fn agent_toggles_read_only_kills_sessions_and_repoints_a_slave() {
    if !require_root("agent_toggles_read_only_kills_sessions_and_repoints_a_slave") {
        return;
    }
    let lab = Lab::new("sql", "");
    // These steps are apart by more than a lease with no monitor heartbeating: the lease
    // would (rightly) demote db1 midway. Fencing is the lease test's subject, not this one's.
    lab.without_lease();
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let agent2 = lab.agent("db2", "agent-db2.log");

    // Writer: read_only lifted, then the VIP.
    apply_ok(&lab, "db1", desired(1, true, &[("writer", 100)]));
    assert!(!db1.read_only(), "writer must be writable");
    db1.sql("CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))");

    // An application session through the VIP, busy in a query.
    let client = lab.net.spawn(
        "client",
        &[
            "mariadb",
            "--no-defaults",
            "-h",
            "192.0.2.100",
            "-uapp",
            "-plab-app",
            "-e",
            "SELECT SLEEP(60)",
        ],
        &lab.dir.path().join("client.log"),
    );
    let seen = wait_for(T, || {
        (db1.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'") == "1")
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "the app session never reached db1: {}",
        lab.log("client.log")
    );

    // Demotion: VIP gone, read_only set, the session killed.
    apply_ok(&lab, "db1", desired(2, false, &[]));
    assert!(db1.read_only());
    assert!(!lab
        .net
        .addresses("db1")
        .iter()
        .any(|a| a.starts_with("192.0.2.100")));
    // The session is gone from the server. (The client itself learns of it only when its
    // TCP connection times out: its local address, the VIP, was removed first.)
    let killed = wait_for(T, || {
        (db1.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'") == "0")
            .then_some(())
    });
    assert!(
        killed.is_some(),
        "the app session survived demotion:\n{}",
        lab.log("agent-db1.log")
    );
    lab.net.signal(client, "KILL");
    let log = lab.log("agent-db1.log");
    let (rm, ro, kill) = (
        log.find("RemoveVip"),
        log.find("SetReadOnly(true)"),
        log.find("KillSessions"),
    );
    assert!(
        rm < ro && ro < kill && rm.is_some(),
        "demotion order wrong:\n{log}"
    );

    // Re-point db2 at db1 with GTID; a write on db1 arrives on db2; catch-up succeeds.
    apply_ok(&lab, "db1", desired(3, true, &[("writer", 100)]));
    let pos = db1.sql("SELECT @@GLOBAL.gtid_current_pos");
    let result = lab.with_link("db2", move |mut l| async move {
        l.action(
            Action::ChangeMaster {
                host: ip(11),
                port: 3306,
                position: Position::Gtid(pos),
            },
            T,
        )
        .await
    });
    let result = result.unwrap();
    assert_eq!(result.outcome, ActionOutcome::Ok, "{}", result.detail);
    let running = wait_for(T, || {
        (db2.slave_status("Slave_IO_Running") == "Yes"
            && db2.slave_status("Slave_SQL_Running") == "Yes")
            .then_some(())
    });
    assert!(
        running.is_some(),
        "replication not running: {}",
        db2.slave_status("Last_IO_Error")
    );
    assert_eq!(db2.slave_status("Master_Host"), "192.0.2.11");
    assert_eq!(db2.slave_status("Using_Gtid"), "Slave_Pos");
    db1.sql("INSERT INTO app.t VALUES (1, 'replicated')");
    let target = db1.sql("SELECT @@GLOBAL.gtid_current_pos");
    let caught = lab.with_link("db2", move |mut l| async move {
        l.action(
            Action::CatchUp {
                target: Some(Position::Gtid(target)),
            },
            T,
        )
        .await
    });
    let caught = caught.unwrap();
    assert_eq!(caught.outcome, ActionOutcome::Ok, "{}", caught.detail);
    assert_eq!(db2.sql("SELECT v FROM app.t WHERE id = 1"), "replicated");
    let stopped = lab.with_link("db2", |mut l| async move {
        l.action(Action::StopReplication, T).await
    });
    assert_eq!(stopped.unwrap().outcome, ActionOutcome::Ok);
    assert_eq!(db2.slave_status("Slave_IO_Running"), "No");

    // A source presumed dead: the IO thread stops and the semi-sync master wait is
    // suspended (the candidate's own semi-sync replica is the dead master), until the
    // server goes writable.
    let semi = |db: &Mariadb| db.sql("SELECT @@GLOBAL.rpl_semi_sync_master_enabled");
    db2.sql("START SLAVE");
    assert_eq!(semi(&db2), "1");
    let io = lab.with_link("db2", |mut l| async move {
        l.action(Action::StopIoThread { source: ip(11) }, T).await
    });
    let io = io.unwrap();
    assert_eq!(io.outcome, ActionOutcome::Ok, "{}", io.detail);
    assert!(
        io.detail.contains("semi-sync master wait suspended"),
        "{}",
        io.detail
    );
    assert_eq!(db2.slave_status("Slave_IO_Running"), "No");
    assert_eq!(semi(&db2), "0");
    // The prohibit route to the source (semi-sync's kill-connection fails at once) lived
    // only while the stop ran.
    let ours = || {
        String::from_utf8_lossy(
            &lab.net
                .exec("db2", &["ip", "-4", "route", "show", "proto", "109"])
                .stdout,
        )
        .trim()
        .to_string()
    };
    assert_eq!(ours(), "", "a prohibit route outlived the stop");
    assert!(
        !lab.log("agent-db2.log").contains("prohibit route"),
        "{}",
        lab.log("agent-db2.log")
    );
    // The promotion fetches from a slave that is ahead: re-pointed, db2 stays suspended
    // (its only semi-sync replica is gone; each fetched commit would otherwise wait
    // rpl_semi_sync_master_timeout).
    let pos = db1.sql("SELECT @@GLOBAL.gtid_current_pos");
    let fetch = lab.with_link("db2", move |mut l| async move {
        l.action(
            Action::ChangeMaster {
                host: ip(11),
                port: 3306,
                position: Position::Gtid(pos),
            },
            T,
        )
        .await
    });
    assert_eq!(fetch.unwrap().outcome, ActionOutcome::Ok);
    assert_eq!(semi(&db2), "0", "re-pointed, still suspended");
    // The agent restarts meanwhile: the hold is on disk, the new agent restores it.
    lab.net.signal(agent2, "TERM");
    assert!(lab.net.wait_exit(agent2, T), "db2's agent did not stop");
    // As if it had died during a stop: its route is removed by the next agent.
    lab.net.exec(
        "db2",
        &[
            "ip",
            "route",
            "add",
            "prohibit",
            "192.0.2.11/32",
            "proto",
            "109",
        ],
    );
    lab.agent("db2", "agent-db2-2.log");
    let cleared = wait_for(T, || {
        (ours().is_empty()
            && lab
                .log("agent-db2-2.log")
                .contains("removed prohibit routes a previous agent left"))
        .then_some(())
    });
    assert!(
        cleared.is_some(),
        "a previous agent's prohibit route was left: {}",
        ours()
    );
    apply_ok(&lab, "db2", desired(4, true, &[]));
    assert_eq!(semi(&db2), "1", "writable without the semi-sync wait");
    assert!(!db2.read_only());
}

fn holds(lab: &Lab, host: &str, vip: &str) -> bool {
    lab.net.addresses(host).iter().any(|a| a.starts_with(vip))
}

#[test]
fn agent_fences_itself_when_the_lease_runs_out() {
    if !require_root("agent_fences_itself_when_the_lease_runs_out") {
        return;
    }
    let lab = Lab::new("lease", "");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    // Link A applies the writer role and falls silent; link B (a second monitor, or a
    // passive one) keeps heartbeating the whole time: it must keep nothing alive.
    let (addr, key) = (lab.agent_addr("db1"), lab.key.clone());
    let (hb, after) = lab.with_link("db1", move |mut a| async move {
        let applied = a
            .apply(desired(1, true, &[("writer", 100), ("reader", 101)]), T)
            .await
            .unwrap();
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        let hb = a.heartbeat(1, T).await.unwrap();
        let mut b = AgentLink::connect(addr, &key, "other-monitor", "db1", T)
            .await
            .expect("second link");
        let mut after = None;
        for _ in 0..100 {
            match b.heartbeat(1, T).await {
                Ok(hb) if hb.flags & hb_flags::SELF_FENCED != 0 => {
                    after = Some(hb);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(30)).await,
                // The fence closes every session: B learns it that way.
                Err(_) => break,
            }
        }
        // A frame on a session from before the fence lifts nothing.
        let refused = a
            .apply(desired(2, true, &[("writer", 100), ("reader", 101)]), T)
            .await;
        (hb, (after, refused.ok()))
    });
    assert_eq!(hb.applied_epoch, 1);
    // The fence's log lines may land a few milliseconds after the sessions closed.
    let fenced = wait_for(T, || {
        let log = lab.log("agent-db1.log");
        (log.contains("lease expired") && log.contains("fence: writer VIP removed")).then_some(())
    });
    let log = lab.log("agent-db1.log");
    assert!(
        fenced.is_some(),
        "the lease task did not fence despite another session's heartbeats:\n{log}"
    );
    if let (_, Some(applied)) = &after {
        assert!(
            !applied.failures.is_empty(),
            "a desired state on a session from before the fence was applied"
        );
    }
    let fenced = wait_for(Duration::from_secs(5), || {
        (db1.read_only() && !holds(&lab, "db1", "192.0.2.100")).then_some(())
    });
    assert!(
        fenced.is_some(),
        "agent kept the writer role without a monitor:\n{}",
        lab.log("agent-db1.log")
    );
    assert!(holds(&lab, "db1", "192.0.2.101"), "reader VIP stays");
    let (hb, status) = lab.with_link("db1", |mut l| async move {
        (l.heartbeat(1, T).await.unwrap(), l.status(T).await.unwrap())
    });
    assert_eq!(
        hb.flags & hb_flags::SELF_FENCED,
        hb_flags::SELF_FENCED,
        "next report says so"
    );
    assert_eq!(hb.applied_epoch, 0);
    assert!(
        status.fenced_reason.contains("no renewal from the monitor"),
        "{status:?}"
    );
    // A monitor on a new connection lifts the fence with a desired state.
    apply_ok(
        &lab,
        "db1",
        desired(3, true, &[("writer", 100), ("reader", 101)]),
    );
    assert!(holds(&lab, "db1", "192.0.2.100"), "writer VIP back");
}

#[test]
fn a_restarted_agent_keeps_its_lease_deadline_and_the_lease_needs_no_sql() {
    if !require_root("a_restarted_agent_keeps_its_lease_deadline_and_the_lease_needs_no_sql") {
        return;
    }
    let lab = Lab::new("lease2", "");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let agent = lab.agent("db1", "agent-db1.log");
    apply_ok(&lab, "db1", desired(1, true, &[("writer", 100)]));
    assert!(holds(&lab, "db1", "192.0.2.100"));
    // Killed with the writer VIP held: the successor must not grant itself a lease.
    lab.net.signal(agent, "KILL");
    assert!(lab.net.wait_exit(agent, T));
    assert!(holds(&lab, "db1", "192.0.2.100"), "VIPs outlive the agent");
    // mysqld hangs: the fence must not wait for SQL.
    lab.net.signal(db1.pid, "STOP");
    std::thread::sleep(Duration::from_millis(700));
    lab.agent("db1", "agent-db1-2.log");
    let gone = wait_for(Duration::from_secs(5), || {
        (!holds(&lab, "db1", "192.0.2.100")).then_some(())
    });
    let log = lab.log("agent-db1-2.log");
    lab.net.signal(db1.pid, "CONT");
    assert!(
        gone.is_some(),
        "a restarted agent kept the writer VIP without a monitor (mysqld hung):\n{log}"
    );
    assert!(
        log.contains("lease starts expired") && log.contains("fence: writer VIP removed"),
        "{log}"
    );
}

#[test]
fn agent_refuses_bad_input_and_keeps_its_state() {
    if !require_root("agent_refuses_bad_input_and_keeps_its_state") {
        return;
    }
    let lab = Lab::new("bad", "");
    // Configured for an interface its host does not have, db3's agent refuses to start
    // (every VIP step would fail on it) and names the interface its ip is on.
    let good = std::fs::read_to_string(&lab.config).unwrap();
    let text = good.replace(
        "ip = \"192.0.2.13\"\n",
        "ip = \"192.0.2.13\"\ncluster_interface = \"eth9\"\n",
    );
    std::fs::write(&lab.config, text).unwrap();
    let pid = lab.agent_with_caps(
        "db3",
        "agent-db3-eth9.log",
        "-all,+net_admin,+net_raw,+bpf,+perfmon",
    );
    assert!(
        lab.net.wait_exit(pid, T),
        "an agent on a missing interface kept running"
    );
    let log = lab.log("agent-db3-eth9.log");
    assert!(
        log.contains("hosts.db3.cluster_interface \"eth9\" does not exist")
            && log.contains("192.0.2.13, this host's ip, is on \"eth0\""),
        "{log}"
    );
    std::fs::write(&lab.config, good).unwrap();
    lab.agent("db3", "agent-db3.log");
    let before = lab.net.addresses("db3");

    // A monitor with another cluster key: both sides name the cause.
    let addr = lab.agent_addr("db3");
    let err = block_on_in(&lab.net.node("mon").ns.clone(), move || async move {
        let other = ClusterKey::from_hex(&ClusterKey::generate_hex().unwrap()).unwrap();
        AgentLink::connect(addr, &other, "mon", "db3", T)
            .await
            .err()
    });
    let err = format!(
        "{:#}",
        anyhow::Error::from(err.expect("a wrong key must not authenticate"))
    );
    assert!(err.contains("different cluster key"), "{err}");

    // Garbage bytes: the agent drops the connection.
    let closed = block_on_in(&lab.net.node("mon").ns.clone(), move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        tokio::time::timeout(T, s.read(&mut buf))
            .await
            .map(|r| r.map(|n| n == 0).unwrap_or(true))
    });
    assert_eq!(
        closed.ok(),
        Some(true),
        "garbage did not close the connection"
    );

    // Roles that are not db3's: refused whole.
    let applied = lab.with_link("db3", |mut l| async move {
        l.apply(desired(2, true, &[("writer", 100), ("reader", 77)]), T)
            .await
            .unwrap()
    });
    assert!(
        applied
            .failures
            .iter()
            .any(|f| f.contains("192.0.2.77 is not an IP of any configured role")),
        "{:?}",
        applied.failures
    );
    assert!(
        applied
            .failures
            .iter()
            .any(|f| f.contains("role writer may not be held by db3")),
        "{:?}",
        applied.failures
    );
    assert_eq!(lab.net.addresses("db3"), before, "held state changed");
    // A replication source that is not another configured host: refused, not applied.
    for (source, port) in [(ip(66), 3306), (ip(11), 3307), (ip(13), 3306)] {
        let result = lab.with_link("db3", move |mut l| async move {
            l.action(
                Action::ChangeMaster {
                    host: source,
                    port,
                    position: Position::GtidSlavePos,
                },
                T,
            )
            .await
            .unwrap()
        });
        assert_eq!(result.outcome, ActionOutcome::Failed, "{source}:{port}");
        assert!(
            result
                .detail
                .contains("not the ip and mysql_port of another configured host"),
            "{result:?}"
        );
    }
    let log = lab.log("agent-db3.log");
    assert!(log.contains("different cluster key"), "{log}");
    assert!(log.contains("bad magic"), "{log}");
    // The agent still serves a correct monitor afterwards.
    let hb = lab.with_link("db3", |mut l| async move { l.heartbeat(0, T).await });
    assert!(
        hb.is_ok(),
        "{:?}",
        hb.err().map(|e: LinkError| e.to_string())
    );
}

#[test]
fn agent_names_the_feature_a_missing_capability_disables() {
    if !require_root("agent_names_the_feature_a_missing_capability_disables") {
        return;
    }
    let lab = Lab::new("caps", "");
    // Without CAP_NET_RAW it runs, and says gratuitous ARP is unavailable.
    lab.agent_with_caps("db1", "no-raw.log", "-all,+net_admin,+bpf,+perfmon");
    let said = wait_for(T, || {
        lab.log("no-raw.log")
            .contains("listening for the monitor")
            .then_some(())
    });
    assert!(said.is_some(), "{}", lab.log("no-raw.log"));
    let log = lab.log("no-raw.log");
    assert!(
        log.contains("CAP_NET_RAW missing: gratuitous ARP (packet socket) unavailable"),
        "{log}"
    );
    assert!(
        log.contains("VIPs will move without gratuitous ARP"),
        "{log}"
    );
    // Without CAP_NET_ADMIN it cannot manage VIPs at all, and refuses to start.
    let pid = lab.agent_with_caps("db2", "no-admin.log", "-all,+net_raw,+bpf,+perfmon");
    assert!(
        lab.net.wait_exit(pid, T),
        "agent without CAP_NET_ADMIN kept running"
    );
    let log = lab.log("no-admin.log");
    assert!(log.contains("CAP_NET_ADMIN is required"), "{log}");
}

#[test]
fn a_connection_flood_from_elsewhere_does_not_keep_the_monitor_out() {
    if !require_root("a_connection_flood_from_elsewhere_does_not_keep_the_monitor_out") {
        return;
    }
    let lab = Lab::new("flood", "");
    // Only the monitor's address may connect (the lab's monitor is 192.0.2.2).
    let text = std::fs::read_to_string(&lab.config).unwrap().replacen(
        "state_dir = ",
        "monitor_ips = [\"192.0.2.2\"]\nstate_dir = ",
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let (opened, hb) = during_a_flood(&lab, "db1", || {
        lab.with_link("db1", |mut l| async move { l.heartbeat(0, T).await })
    });
    assert!(
        hb.is_ok(),
        "the monitor could not get in during a flood of {opened} connections: {:?}",
        hb.err().map(|e: LinkError| e.to_string())
    );
    let log = lab.log("agent-db1.log");
    assert!(log.contains("not one of agent.monitor_ips"), "{log}");
}

/// Runs `f` while the client host holds hundreds of idle connections (no handshake) to
/// `host`'s agent port; returns how many it held open, and what `f` returned.
fn during_a_flood<T>(lab: &Lab, host: &str, f: impl FnOnce() -> T) -> (usize, T) {
    let addr = lab.agent_addr(host);
    let client_ns = lab.net.node("client").ns.clone();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel::<usize>();
    let flood = std::thread::spawn(move || {
        block_on_in(&client_ns, move || async move {
            let mut held = Vec::new();
            for _ in 0..300 {
                if let Ok(Ok(s)) = tokio::time::timeout(
                    Duration::from_millis(200),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                {
                    held.push(s);
                }
            }
            opened_tx.send(held.len()).unwrap();
            let _ = hold_rx.recv();
            drop(held);
        })
    });
    let opened = opened_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let out = f();
    hold_tx.send(()).unwrap();
    flood.join().unwrap();
    (opened, out)
}

#[test]
fn a_flood_from_a_stranger_does_not_keep_a_monitor_out_with_the_default_config() {
    // Issue 22 item 4: with `monitor_ips` left out (the default), a host without the key
    // held every handshake slot while the monitor restarted; the lease ran out.
    if !require_root("a_flood_from_a_stranger_does_not_keep_a_monitor_out_with_the_default_config")
    {
        return;
    }
    let lab = Lab::new("flood-default", "");
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    // The monitor has connected before (it is restarting, or reconnecting).
    lab.with_link("db1", |mut l| async move { l.heartbeat(0, T).await })
        .expect("first connection");
    let (opened, hb) = during_a_flood(&lab, "db1", || {
        // Several reconnections in a row, as a restarting monitor makes.
        (0..3)
            .map(|_| lab.with_link("db1", |mut l| async move { l.heartbeat(0, T).await }))
            .collect::<Result<Vec<_>, LinkError>>()
    });
    assert!(
        hb.is_ok(),
        "the monitor could not get back in during a flood of {opened} connections: {:?}",
        hb.err().map(|e| e.to_string())
    );
    let log = lab.log("agent-db1.log");
    assert!(
        log.contains("connection refused") && log.contains("never authenticated"),
        "{log}"
    );
}

#[test]
fn block_users_are_locked_on_demotion_and_unlocked_on_promotion() {
    if !require_root("block_users_are_locked_on_demotion_and_unlocked_on_promotion") {
        return;
    }
    let lab = Lab::new("block", "");
    lab.without_lease();
    let text = std::fs::read_to_string(&lab.config).unwrap().replacen(
        "state_dir = ",
        "block_users = [\"app%\"]\nstate_dir = ",
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");
    let (user, password) = mmm_tests::mariadb::APP;
    let app_login = || {
        let out = lab.net.try_exec(
            "client",
            &[
                "mariadb",
                "-h",
                "192.0.2.11",
                "-u",
                user,
                &format!("-p{password}"),
                "-e",
                "SELECT 1",
            ],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    apply_ok(&lab, "db1", desired(1, true, &[("writer", 100)]));
    assert!(
        app_login().0,
        "the application logs in on the writer: {}",
        app_login().1
    );
    let gtid_before = db1.sql("SELECT @@gtid_binlog_pos");
    // Demoted: the application's account is locked (the agent's, monitor's and
    // replication users are not), and nothing of it reaches the binary log.
    apply_ok(&lab, "db1", desired(2, false, &[]));
    let (ok, err) = app_login();
    assert!(!ok, "the application logged in on a demoted master");
    assert!(err.to_lowercase().contains("locked"), "{err}");
    assert_eq!(
        db1.sql("SELECT @@gtid_binlog_pos"),
        gtid_before,
        "the lock was binlogged"
    );
    let hb = lab.with_link(
        "db1",
        |mut l| async move { l.heartbeat(0, T).await.unwrap() },
    );
    assert_ne!(
        hb.flags & hb_flags::MYSQL_UP,
        0,
        "the agent still reaches its server"
    );
    // Promoted again: unlocked.
    apply_ok(&lab, "db1", desired(3, true, &[("writer", 100)]));
    assert!(
        app_login().0,
        "still locked after the promotion: {}",
        app_login().1
    );
}

/// Two re-points of one server in flight at once (the monitor sends them: the promotion's
/// and set_online's, seen in scenario s16) must both succeed, as if run one after the
/// other.
///
/// Two re-points of one server at once (the promotion's and set_online's, a few ms apart)
/// both succeed: each is STOP SLAVE, reads, CHANGE MASTER, START SLAVE, and the agent
/// runs them one after the other; interleaved, one failed with MySQL error 1198 ("you
/// have a running slave").
#[test]
fn concurrent_change_master_actions_on_one_server_both_succeed() {
    if !require_root("concurrent_change_master_actions_on_one_server_both_succeed") {
        return;
    }
    let lab = Lab::new("cm2", "");
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let _db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    lab.agent("db2", "agent-db2.log");
    let mut failures = Vec::new();
    // The overlap is a race that bites when the second starts while the first is
    // between its STOP SLAVE and START SLAVE: the second is sent later each round.
    for round in 0..12u64 {
        let pos = db1.sql("SELECT @@GLOBAL.gtid_current_pos");
        let (addr, key) = (lab.agent_addr("db2"), lab.key.clone());
        let results = block_on_in(&lab.net.node("mon").ns.clone(), move || async move {
            let mut a = AgentLink::connect(addr, &key, "mon", "db2", T)
                .await
                .expect("first link to db2");
            let mut b = AgentLink::connect(addr, &key, "mon", "db2", T)
                .await
                .expect("second link to db2");
            let repoint = || Action::ChangeMaster {
                host: ip(11),
                port: 3306,
                position: Position::Gtid(pos.clone()),
            };
            let later = async {
                tokio::time::sleep(Duration::from_millis(2 * round)).await;
                b.action(repoint(), T).await
            };
            let (x, y) = tokio::join!(a.action(repoint(), T), later);
            [x, y]
        });
        for r in results {
            let r = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
            if r.outcome != ActionOutcome::Ok {
                failures.push(format!("round {round}: {:?}: {}", r.outcome, r.detail));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "concurrent re-points of db2 failed:\n{}\n{}",
        failures.join("\n"),
        lab.log("agent-db2.log")
    );
}

/// A VIP released while its gratuitous ARP burst still runs (a fast move, or an agent
/// frozen mid-burst and fenced when it resumes) is never announced again: a late
/// announcement would point clients back at a host that no longer answers for it.
#[test]
fn a_released_vip_is_not_announced_by_the_rest_of_its_burst() {
    if !require_root("a_released_vip_is_not_announced_by_the_rest_of_its_burst") {
        return;
    }
    let lab = Lab::new("garp", "");
    // A burst that outlasts the whole test: 100 announcements 30 ms apart.
    let text = std::fs::read_to_string(&lab.config).unwrap();
    let long = text
        .replace("garp_count = 3", "garp_count = 100")
        .replace("garp_interval = \"20ms\"", "garp_interval = \"30ms\"");
    assert_ne!(
        text, long,
        "conf/lab.toml no longer sets garp_count/garp_interval"
    );
    std::fs::write(&lab.config, long).unwrap();
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");

    apply_ok(&lab, "db1", desired(1, false, &[("reader", 101)]));
    lab.net
        .exec("client", &["ping", "-c1", "-W2", "192.0.2.101"]);
    assert_eq!(
        lab.net.neigh_mac("client", ip(101)).as_deref(),
        Some("02:00:00:00:00:0b")
    );
    apply_ok(&lab, "db1", desired(2, false, &[]));
    assert!(
        !holds(&lab, "db1", "192.0.2.101"),
        "the VIP was not released"
    );
    // The client's entry now names someone else; an announcement from db1 would override it.
    let elsewhere = "02:00:00:00:00:99";
    lab.net.exec(
        "client",
        &[
            "ip",
            "neigh",
            "replace",
            "192.0.2.101",
            "lladdr",
            elsewhere,
            "nud",
            "stale",
            "dev",
            "eth0",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lab.net.neigh_mac("client", ip(101)).as_deref(),
        Some(elsewhere),
        "db1 announced a VIP it had released:\n{}",
        lab.log("agent-db1.log")
    );
    let log = lab.log("agent-db1.log");
    assert!(
        log.contains("gratuitous ARP burst ended: the VIP was released"),
        "{log}"
    );
}

/// Heartbeats that waited in the socket while the agent was frozen renew nothing at the
/// thaw: the deadline passed meanwhile, so the lease task fences before any renewal
/// counts, and the session they came on renews nothing afterwards. (Counted from the thaw,
/// one of them kept the writer VIP and writability on a host the monitor had counted out,
/// for as long as that session kept heartbeating.)
#[test]
fn heartbeats_that_waited_through_a_freeze_renew_nothing() {
    if !require_root("heartbeats_that_waited_through_a_freeze_renew_nothing") {
        return;
    }
    let lab = Lab::new("thaw", "");
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let agent = lab.agent("db1", "agent-db1.log");
    let heartbeat = |l: &mut AgentLink| -> Result<(), LinkError> {
        let id = l.next_request_id();
        l.queue(&Message::Heartbeat(Heartbeat { epoch: 1 }), id)
    };
    lab.with_link("db1", move |mut l| async move {
        let applied = l
            .apply(desired(1, true, &[("writer", 100)]), T)
            .await
            .expect("applying the writer role");
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        mmm_tests::netns::send_signal(agent, "STOP").expect("freezing the agent");
        // 1.2 s frozen (the lease is 600 ms), heartbeats piling up in its socket.
        for _ in 0..24 {
            heartbeat(&mut l).expect("queueing a heartbeat");
            l.flush(T)
                .await
                .expect("a heartbeat into the frozen agent's socket");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mmm_tests::netns::send_signal(agent, "CONT").expect("thawing the agent");
        // This monitor goes on heartbeating as if nothing happened.
        for _ in 0..40 {
            if heartbeat(&mut l).is_err() || l.flush(T).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let log = lab.log("agent-db1.log");
    assert!(
        !holds(&lab, "db1", "192.0.2.100") && log.contains("lease expired: fencing myself"),
        "the thawed agent kept the writer VIP on stale heartbeats:\n{log}"
    );
}

/// A proxy in front of a server's unix socket that holds back, by `delay`, what a client
/// sends that lifts read_only (the old spelling `= 0` and the guarded `= IF(...)`), with
/// everything after it on that connection: a server that hung with the statement in its
/// socket reads it as late. A client that gives up meanwhile closes its side; the held
/// statement is still delivered, then the close, as the kernel would.
fn hold_back_lifts(upstream: std::path::PathBuf, listen: &std::path::Path, delay: Duration) {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let listener = UnixListener::bind(listen).expect("binding the proxy socket");
    // The agent runs as nobody.
    std::fs::set_permissions(listen, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod the proxy socket");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = UnixStream::connect(&upstream) else {
                continue;
            };
            let (mut from_server, mut to_client) = (
                server.try_clone().expect("server handle"),
                client.try_clone().expect("client handle"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let lift = |b: &[u8]| {
                    [
                        &b"SET GLOBAL read_only = 0"[..],
                        b"SET GLOBAL read_only = IF",
                    ]
                    .iter()
                    .any(|p| b.windows(p.len()).any(|w| w == *p))
                };
                let mut held = false;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !held && lift(&buf[..n]) {
                        held = true;
                        std::thread::sleep(delay);
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// Issue 22: a lift of read_only that timed out is assumed to run later. Here it reaches
/// the server 2 s late (held back between the agent and the server's socket, as a hung
/// server would read it), after the host was demoted: it must never make the server writable. The agent
/// kills the connection that carried it as soon as the server answers, and the statement
/// carries its own deadline besides.
#[test]
fn a_lift_of_read_only_that_timed_out_never_runs_later() {
    if !require_root("a_lift_of_read_only_that_timed_out_never_runs_later") {
        return;
    }
    let lab = Lab::new("late", "");
    lab.without_lease();
    let db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    // The agent reaches its server through the proxy.
    let proxy = lab.dir.path().join("db1-proxy.sock");
    hold_back_lifts(db1.socket.clone(), &proxy, Duration::from_secs(2));
    let text = std::fs::read_to_string(&lab.config).unwrap();
    let text = text.replacen(
        "[agent]\n",
        &format!("[agent]\nmysql_socket = \"{}\"\n", proxy.display()),
        1,
    );
    std::fs::write(&lab.config, text).unwrap();
    lab.agent("db1", "agent-db1.log");
    let applied = lab
        .with_link("db1", |mut l| async move {
            l.apply(desired(1, true, &[("writer", 100)]), T).await
        })
        .expect("applying the writer role");
    assert!(
        applied
            .failures
            .iter()
            .any(|f| f.contains("setting read_only = 0: no answer")),
        "the lift was not held back: {:?}\n{}",
        applied.failures,
        lab.log("agent-db1.log")
    );
    let demoted_at = std::time::Instant::now();
    apply_ok(&lab, "db1", desired(2, false, &[]));
    // Past the moment the held-back statement reaches the server, and the agent's next
    // look at it.
    while demoted_at.elapsed() < Duration::from_secs(3) {
        assert!(
            db1.read_only(),
            "the lift that timed out made the demoted server writable\n{}",
            lab.log("agent-db1.log")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!holds(&lab, "db1", "192.0.2.100"));
    let log = lab.log("agent-db1.log");
    assert!(
        log.contains("the unanswered lift of read_only is killed and gone"),
        "{log}"
    );
}
