use super::*;
use crate::config::testing::ConfigBuilder;
use crate::types::HostMode;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// Two masters, a writer role and a monitor; each test changes keys from there.
fn base() -> ConfigBuilder {
    ConfigBuilder::new()
}

#[test]
fn the_same_file_changes_nothing() {
    let c = base().build();
    for daemon in [Daemon::Monitor, Daemon::Agent] {
        let p = plan(daemon, &c, &c);
        assert!(p.applied.is_empty() && p.restart.is_empty(), "{p:?}");
        assert_eq!(p.config, c);
    }
}

#[test]
fn the_monitor_applies_notify_failback_flapping_and_trap_period() {
    let old = base().build();
    let new = base()
        .set("monitor.notify_command", "/usr/local/bin/notify")
        .set("monitor.failback", true)
        .set("monitor.flap_count", 5)
        .duration("checks.default.trap_period", Duration::from_secs(7))
        .build();
    let p = plan(Daemon::Monitor, &old, &new);
    assert_eq!(
        p.applied,
        [
            "monitor.flap_count",
            "monitor.failback",
            "monitor.notify_command",
            "checks.ping.trap_period",
            "checks.mysql.trap_period",
            "checks.rep_threads.trap_period",
            "checks.rep_backlog.trap_period",
        ]
    );
    assert!(p.restart.is_empty(), "{:?}", p.restart);
    assert_eq!(p.config, new, "every change applied");
}

#[test]
fn addresses_hosts_timing_and_keys_need_a_restart_and_stay_as_they_were() {
    let old = base().build();
    let new = base()
        .set("hosts.db2.ip", "10.0.0.22")
        .key(&"1".repeat(64))
        .heartbeat_interval(Duration::from_millis(50))
        .set("monitor.failback", true)
        .lease(Duration::from_secs(2))
        .host("db3", HostMode::Slave, Ipv4Addr::new(10, 0, 0, 13))
        .coordination(&["http://10.0.0.5:2379"], "/mmm/t")
        .build();
    let p = plan(Daemon::Monitor, &old, &new);
    assert_eq!(p.applied, ["monitor.failback"]);
    assert_eq!(
        p.restart,
        [
            "hosts.db2.ip",
            "hosts.db3",
            "monitor.heartbeat_interval",
            "agent.lease",
            "security.key",
            "coordination",
        ]
    );
    let mut expected = old.clone();
    expected.monitor.failback = true;
    assert_eq!(p.config, expected, "only the reloadable key applied");
    assert_eq!(Timing::from_config(&p.config), Timing::from_config(&old));
}

#[test]
fn each_daemon_ignores_the_keys_it_does_not_read() {
    let old = base().build();
    let new = base()
        .set("monitor.notify_command", "/bin/true")
        .agent_timeout(Duration::from_millis(900))
        .duration("checks.mysql.timeout", Duration::from_secs(2))
        .duration("checks.mysql.check_period", Duration::from_secs(2))
        .set("agent.garp_count", 9)
        .build();
    let monitor = plan(Daemon::Monitor, &old, &new);
    assert_eq!(monitor.applied, ["monitor.notify_command"]);
    assert_eq!(
        monitor.restart,
        [
            "monitor.agent_timeout",
            "checks.mysql.check_period",
            "checks.mysql.timeout"
        ]
    );
    let agent = plan(Daemon::Agent, &old, &new);
    assert!(agent.applied.is_empty());
    assert_eq!(
        agent.restart,
        [
            "monitor.agent_timeout",
            "checks.mysql.timeout",
            "agent.garp_count"
        ]
    );
    assert_eq!(agent.config, old);
}

#[test]
fn host_order_counts_as_a_change() {
    // Role distribution breaks ties by file order.
    let old = base().build();
    let new = base()
        .without_host("db1")
        .master("db1", Ipv4Addr::new(10, 0, 0, 11), "db2")
        .build();
    let names: Vec<_> = new.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["db2", "db1"], "only the order differs");
    let p = plan(Daemon::Monitor, &old, &new);
    assert_eq!(p.restart, ["hosts (order)"]);
}

#[test]
fn no_reloadable_key_feeds_the_fencing_timing() {
    let old = base().build();
    let new = base()
        .set("monitor.kill_host_bin", "/bin/true")
        .duration("monitor.flap_duration", Duration::from_secs(600))
        .duration("monitor.auto_set_online", Duration::from_secs(30))
        .build();
    let p = plan(Daemon::Monitor, &old, &new);
    assert_eq!(p.applied.len(), 3, "{p:?}");
    assert_eq!(
        p.config.monitor.auto_set_online,
        Some(Duration::from_secs(30))
    );
    assert_eq!(Timing::from_config(&p.config), Timing::from_config(&old));
}

#[test]
fn patterns_match_one_component_per_star() {
    assert!(matches("checks.*.trap_period", "checks.ping.trap_period"));
    assert!(!matches("checks.*.trap_period", "checks.ping.timeout"));
    assert!(!matches("checks.*", "checks.ping.timeout"));
    assert!(matches(
        "hosts.*.mysql_pid_file",
        "hosts.db1.mysql_pid_file"
    ));
}

/// The bullets under `heading` in docs/operations.md's "Reloading the configuration":
/// each one's first `code` span, or nothing for a "none" bullet.
fn documented(heading: &str) -> Vec<String> {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let section = docs
        .split("\n## ")
        .find(|s| s.starts_with("Reloading the configuration"))
        .expect("docs/operations.md has a \"Reloading the configuration\" section");
    let list = section
        .split_once(&format!("\n{heading}\n\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in the section"))
        .1;
    list.lines()
        .take_while(|l| l.starts_with("- "))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_docs_list_the_keys_each_daemon_reloads() {
    assert_eq!(
        documented("The monitor applies on reload:"),
        Daemon::Monitor.reloads()
    );
    assert_eq!(
        documented("The agent applies on reload:"),
        Daemon::Agent.reloads()
    );
}
