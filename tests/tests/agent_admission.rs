//! What the agent lets in, in namespaces made here: bad input (a missing interface,
//! another cluster key, garbage, roles and sources not its own) refused with its state
//! kept, a missing capability named with the feature it disables, and connection floods
//! that must not keep the monitor out. Needs root; in CI it must run (see
//! `require_root`).

use mmm_common::config::ClusterKey;
use mmm_common::proto::{Action, ActionOutcome, Position};
use mmm_monitor::agents::client::{AgentLink, LinkError};
use mmm_tests::lab::{desired, ip, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root, wait_for};
use std::time::Duration;

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
