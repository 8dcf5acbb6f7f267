//! Rolling upgrades: the previous release (its archive built by `mmm_tests::release`) and this
//! revision work together both ways, an old agent under this monitor and this revision's
//! agents under the old monitor, through a failover; and a cluster upgraded one daemon at
//! a time under a client's writes loses none.

use mmm_tests::assert::{assert_data, assert_writer, writer};
use mmm_tests::client::TABLE;
use mmm_tests::failover::kill_writer;
use mmm_tests::lab::{Cluster, Spec};
use mmm_tests::mariadb::Setup;
use mmm_tests::netns::{require_root, wait_for};
use mmm_tests::release::Release;
use mmm_tests::{bin, release};
use std::sync::OnceLock;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const HOSTS: [&str; 3] = ["db1", "db2", "db3"];

/// The previous release, built once for the whole file from its archive in
/// tests/releases (part of the repository: its absence is a failure, never a skip).
fn previous() -> &'static Release {
    static BUILT: OnceLock<Release> = OnceLock::new();
    BUILT.get_or_init(|| release::previous().unwrap_or_else(|why| panic!("{why}")))
}

/// The log's text without terminal colours: fields are matched as `name=value`.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Waits until a line of `log` contains every one of `needles`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_log(c: &Cluster, log: &str, needles: &[&str]) {
    let said = |text: String| {
        text.lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
            .then_some(())
    };
    let seen = wait_for(T, || said(plain(&c.lab.log(log))));
    assert!(
        seen.is_some(),
        "{log} never said {needles:?}:\n{}",
        plain(&c.lab.log(log))
    );
}

/// db1's mysqld killed under a client's writes: db2 is the writer, holding the VIP
/// alone, and every acknowledged write is on db2 and db3 exactly once.
fn fail_over(c: &Cluster, monitor_log: &str) {
    c.db("db1").sql(TABLE);
    let f = kill_writer(c, monitor_log);
    c.wait_show("db2", "writer(192.0.2.100)", T);
    assert_eq!(f.vip_holders, ["db2"], "{f:?}");
    assert_eq!((f.missing, f.duplicated), (0, 0), "{f:?}");
    assert!(f.replication_errors.is_empty(), "{f:?}");
}

fn release_version(r: &Release) -> &str {
    r.tag.trim_start_matches('v')
}

/// (a) The previous release's agents under this revision's monitor: the monitor's
/// Hello in this version is dropped, its retry in the previous one is answered.
#[test]
fn agents_of_the_previous_release_under_this_monitor_fail_over() {
    if !require_root("agents_of_the_previous_release_under_this_monitor_fail_over") {
        return;
    }
    let prev = previous();
    let spec = Spec::three(Setup::default());
    let mut c = Cluster::start_spec_from("upgA", &[], &spec, &prev.bin("mmm-agent"));
    c.start_monitor("monitor.log");
    c.bring_online();
    assert_writer(&c, "db1", &["db2", "db3"]);
    for h in HOSTS {
        wait_log(
            &c,
            "monitor.log",
            &[&format!(
                "speaking protocol 8 with {h} (agent {})",
                release_version(prev)
            )],
        );
    }
    let (_, show) = c.control(&["show"]);
    assert!(!show.contains("ERROR"), "{show}");
    fail_over(&c, "monitor.log");
}

/// (b) This revision's agents under the previous release's monitor: they answer its
/// Hello in its version.
#[test]
fn this_revisions_agents_under_a_monitor_of_the_previous_release_fail_over() {
    let name = "this_revisions_agents_under_a_monitor_of_the_previous_release_fail_over";
    if !require_root(name) {
        return;
    }
    let prev = previous();
    let mut c = Cluster::start("upgB", &[]);
    c.start_monitor_from("monitor.log", &prev.bin("mmm-monitor"));
    c.bring_online();
    assert_writer(&c, "db1", &["db2", "db3"]);
    for h in HOSTS {
        wait_log(
            &c,
            &format!("agent-{h}.log"),
            &["monitor authenticated", "protocol=8"],
        );
    }
    let (_, show) = c.control(&["show"]);
    assert!(!show.contains("ERROR"), "{show}");
    fail_over(&c, "monitor.log");
}

/// (c) A rolling upgrade under a client writing through the writer VIP every 5 ms, in
/// the order docs/operations.md gives: the whole cluster on the previous release, then
/// the passive master's and the slave's agents replaced by this revision's, then the
/// monitor, then the writer's agent, under the new monitor (whose reconnects come within
/// an eighth of the lease; the previous release's wait up to a second, which with the
/// writer's agent's start can outlast what is left of its lease). No write fails and every
/// acknowledged one is on every server exactly once. The lease is 2 s (as in scenario
/// s11): the monitor's restart and the writer's agent's must end within three quarters of
/// it on a loaded test machine; that is what this measures, not the machine's speed.
#[test]
fn a_rolling_upgrade_under_writes_fails_no_write() {
    let name = "a_rolling_upgrade_under_writes_fails_no_write";
    if !require_root(name) {
        return;
    }
    let prev = previous();
    let spec = Spec::three(Setup::default());
    let lease = [("lease = \"600ms\"", "lease = \"2s\"")];
    let mut c = Cluster::start_spec_from("upgC", &lease, &spec, &prev.bin("mmm-agent"));
    c.start_monitor_from("monitor-old.log", &prev.bin("mmm-monitor"));
    c.bring_online();
    c.db("db1").sql(TABLE);
    let w = writer(&c);
    let this = env!("CARGO_PKG_VERSION");
    let no_failed_write = |c: &Cluster, step: &str, monitor_log: &str| {
        let failed = w.log().failed;
        assert!(
            failed.is_empty(),
            "writes failed while {step}: {:?}\n{}\n--- {monitor_log} (last lines)\n{}",
            failed.first(),
            c.lab.logs_of("db"),
            tail(&plain(&c.lab.log(monitor_log)), 60),
        );
    };
    for h in ["db2", "db3"] {
        let log = format!("agent-{h}-new.log");
        c.restart_agent(h, &log, &bin("mmm-agent"));
        // The old monitor is back on this host's new agent, in the old protocol.
        wait_log(&c, &log, &["monitor authenticated", "protocol=8"]);
        wait_log(
            &c,
            "monitor-old.log",
            &[&format!("host={h}"), &format!("agent_version={this}")],
        );
        assert_writer(&c, "db1", &["db2", "db3"]);
        no_failed_write(&c, &format!("{h}'s agent was upgraded"), "monitor-old.log");
    }
    c.stop_monitor();
    c.start_monitor("monitor-new.log");
    for h in ["db2", "db3"] {
        wait_log(
            &c,
            "monitor-new.log",
            &[&format!("speaking protocol 9 with {h} (agent {this})")],
        );
    }
    // The writer's agent is still the previous release's: spoken to in its version.
    wait_log(
        &c,
        "monitor-new.log",
        &[&format!(
            "speaking protocol 8 with db1 (agent {})",
            prev.tag.trim_start_matches('v')
        )],
    );
    assert_writer(&c, "db1", &["db2", "db3"]);
    no_failed_write(&c, "the monitor was upgraded", "monitor-new.log");
    c.restart_agent("db1", "agent-db1-new.log", &bin("mmm-agent"));
    wait_log(
        &c,
        "agent-db1-new.log",
        &["monitor authenticated", "protocol=9"],
    );
    wait_log(
        &c,
        "monitor-new.log",
        &[&format!("speaking protocol 9 with db1 (agent {this})")],
    );
    no_failed_write(&c, "the writer's agent was upgraded", "monitor-new.log");
    assert_writer(&c, "db1", &["db2", "db3"]);
    let (_, show) = c.control(&["show"]);
    assert!(!show.contains("ERROR"), "{show}");
    // A little more under the new monitor before the count.
    std::thread::sleep(Duration::from_secs(1));
    let log = w.stop();
    eprintln!(
        "rolling upgrade {} -> {this}: {} writes acknowledged, {} failed",
        prev.tag,
        log.acked.len(),
        log.failed.len()
    );
    assert!(
        log.failed.is_empty(),
        "writes failed during the upgrade: {} of {}, first {:?}",
        log.failed.len(),
        log.acked.len() + log.failed.len(),
        log.failed.first()
    );
    assert_data(&c, &log, &HOSTS);
}
