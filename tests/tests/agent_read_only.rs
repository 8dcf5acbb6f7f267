//! The agent's MySQL actions against real MariaDB, in namespaces made here: read_only
//! set and lifted, sessions killed on demotion, a slave re-pointed (twice at once too),
//! block_users locked and unlocked, and a lift of read_only that timed out, which must
//! never run later. Needs root; in CI it must run (see `require_root`).

use mmm_common::proto::{hb_flags, Action, ActionOutcome, Position};
use mmm_monitor::agents::client::AgentLink;
use mmm_tests::agent_lab::{apply_ok, holds};
use mmm_tests::lab::{desired, ip, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root, wait_for};
use std::time::Duration;

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
