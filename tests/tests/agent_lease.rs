//! The agent's lease fencing, in namespaces made here with real MariaDB: it fences itself
//! when the lease runs out (another session's heartbeats notwithstanding), a restarted
//! agent keeps its deadline and fences without SQL, and heartbeats that waited through a
//! freeze renew nothing. Needs root; in CI it must run (see `require_root`).

use mmm_common::proto::{hb_flags, Heartbeat, Message};
use mmm_monitor::agents::client::{AgentLink, LinkError};
use mmm_tests::agent_lab::{apply_ok, holds};
use mmm_tests::lab::{desired, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{require_root, wait_for};
use std::time::Duration;

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
    // The freeze watch may close the session at the thaw a moment before the lease task
    // fences (both run at the thaw): the link ending early is no verdict yet.
    let fenced = wait_for(T, || {
        let log = lab.log("agent-db1.log");
        (!holds(&lab, "db1", "192.0.2.100") && log.contains("lease expired: fencing myself"))
            .then_some(())
    });
    let log = lab.log("agent-db1.log");
    assert!(
        fenced.is_some(),
        "the thawed agent kept the writer VIP on stale heartbeats:\n{log}"
    );
}
