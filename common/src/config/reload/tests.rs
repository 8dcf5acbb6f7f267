use super::*;
use std::path::Path;
use std::time::Duration;

/// Two masters and a writer role; each test appends or replaces sections.
const BASE: &str = r#"
[defaults]
agent_password = "a"
monitor_password = "m"
replication_password = "r"
[hosts.db1]
ip = "10.0.0.11"
mode = "master"
peer = "db2"
[hosts.db2]
ip = "10.0.0.12"
mode = "master"
peer = "db1"
[roles.writer]
mode = "exclusive"
hosts = ["db1", "db2"]
ips = ["10.0.0.100"]
[security]
key = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

fn config(extra: &str) -> Config {
    let text = format!("{BASE}{extra}");
    Config::parse(&text, Path::new("reload.toml")).expect("a valid test config")
}

const MONITOR: &str = "[monitor]\nping_ips = [\"10.0.0.1\"]\n";

#[test]
fn the_same_file_changes_nothing() {
    let c = config(MONITOR);
    for daemon in [Daemon::Monitor, Daemon::Agent] {
        let p = plan(daemon, &c, &c);
        assert!(p.applied.is_empty() && p.restart.is_empty(), "{p:?}");
        assert_eq!(p.config, c);
    }
}

#[test]
fn the_monitor_applies_notify_failback_flapping_and_trap_period() {
    let old = config(MONITOR);
    let new = config(&format!(
        "{MONITOR}notify_command = \"/usr/local/bin/notify\"\nfailback = true\nflap_count = 5\n[checks.default]\ntrap_period = \"7s\"\n"
    ));
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
    let old = config(MONITOR);
    let text = BASE
        .replace("10.0.0.12", "10.0.0.22")
        .replace("key = \"0000", "key = \"1111");
    let new_text = format!(
        "{text}{MONITOR}heartbeat_interval = \"50ms\"\nfailback = true\n[agent]\nlease = \"2s\"\n[hosts.db3]\nip = \"10.0.0.13\"\nmode = \"slave\"\n[coordination]\netcd = [\"http://10.0.0.5:2379\"]\nprefix = \"/mmm/t\"\n"
    );
    let new = Config::parse(&new_text, Path::new("reload.toml")).unwrap();
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
    let old = config(MONITOR);
    let new = config(&format!(
        "{MONITOR}notify_command = \"/bin/true\"\nagent_timeout = \"900ms\"\n[checks.mysql]\ntimeout = \"2s\"\ncheck_period = \"2s\"\n[agent]\ngarp_count = 9\n"
    ));
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
    let db1 = "[hosts.db1]\nip = \"10.0.0.11\"\nmode = \"master\"\npeer = \"db2\"\n";
    let db2 = "[hosts.db2]\nip = \"10.0.0.12\"\nmode = \"master\"\npeer = \"db1\"\n";
    assert!(BASE.contains(db1) && BASE.contains(db2));
    let reordered = BASE.replace(db1, "").replace(db2, &format!("{db2}{db1}"));
    let old = config(MONITOR);
    let new = Config::parse(&format!("{reordered}{MONITOR}"), Path::new("r.toml")).unwrap();
    let p = plan(Daemon::Monitor, &old, &new);
    assert_eq!(p.restart, ["hosts (order)"]);
}

#[test]
fn no_reloadable_key_feeds_the_fencing_timing() {
    let old = config(MONITOR);
    let new = config(&format!(
        "{MONITOR}kill_host_bin = \"/bin/true\"\nflap_duration = \"10m\"\nauto_set_online = \"30s\"\n"
    ));
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
