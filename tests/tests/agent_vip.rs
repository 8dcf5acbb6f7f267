//! The agent's VIPs against the real kernel, in namespaces made here: a VIP added and
//! removed through rtnetlink, its gratuitous ARP seen by a client, a restart that keeps
//! it without flapping (and the agent's least privilege on the way), and a released VIP
//! the rest of its ARP burst no longer announces. Needs root; in CI it must run (see
//! `require_root`).

use mmm_common::proto::hb_flags;
use mmm_tests::agent_lab::{apply_ok, holds};
use mmm_tests::lab::{desired, ip, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{require_root, wait_for};
use std::time::Duration;

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
