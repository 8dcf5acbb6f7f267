//! SIGHUP on the real daemons in the namespace lab: the monitor applies a reloadable key
//! and names a restart-only one without applying it; an invalid file changes nothing, is
//! refused in one log line naming every problem, and the daemons keep serving. The agent
//! refuses an invalid file and names the keys it needs a restart for.

use mmm_tests::lab::Cluster;
use mmm_tests::netns::{require_root, wait_for};
use mmm_tests::workspace_root;
use std::time::Duration;

/// Where the lab's monitor serves `/metrics`.
const METRICS: &str = "127.0.0.1:9990";
/// An address the reloaded config asks `monitor.http` to listen on: restart-only.
const HTTP: &str = "127.0.0.1:9994";
const WAIT: Duration = Duration::from_secs(20);

/// GET `http://{addr}{path}` from the monitor's namespace; None when nothing answers.
fn get(c: &Cluster, addr: &str, path: &str) -> Option<String> {
    let script = format!(
        "import urllib.request; print(urllib.request.urlopen('http://{addr}{path}', timeout=5).read().decode())"
    );
    let out = c.lab.net.try_exec("mon", &["python3", "-c", &script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn metric(c: &Cluster, name: &str) -> String {
    let text = get(c, METRICS, "/metrics").expect("the monitor serves /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .to_string()
}

/// Waits until `log` has a line containing every one of `needles`; returns that line.
fn wait_log(c: &Cluster, log: &str, needles: &[&str]) -> String {
    let found = wait_for(WAIT, || {
        c.lab
            .log(log)
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    });
    found.unwrap_or_else(|| panic!("no line with {needles:?} in {log}:\n{}", c.lab.log(log)))
}

fn edit(c: &Cluster, from: &str, to: &str) {
    let path = &c.lab.config;
    let text = std::fs::read_to_string(path).expect("lab config");
    assert!(text.contains(from), "lab config lacks {from:?}");
    // Written in place: the file keeps its owner and its 0600 mode.
    std::fs::write(path, text.replacen(from, to, 1)).expect("writing the lab config");
}

#[test]
fn sighup_reloads_what_it_can_names_the_rest_and_refuses_an_invalid_file() {
    if !require_root("sighup_reloads_what_it_can_names_the_rest_and_refuses_an_invalid_file") {
        return;
    }
    let anchor = "promotion_timeout = \"5s\"";
    let metrics = format!("{anchor}\nmetrics = \"{METRICS}\"");
    let mut c = Cluster::start("reload", &[(anchor, &metrics)]);
    let monitor = c.start_monitor("monitor.log");
    assert_eq!(metric(&c, "mmm_config_reload_success"), "1");
    let started: f64 = metric(&c, "mmm_config_last_reload_timestamp_seconds")
        .parse()
        .expect("a timestamp");

    // A reloadable key (notify_command) and two restart-only ones (monitor.http,
    // monitor.agent_timeout).
    let notices = c.lab.dir.path().join("notices.log");
    let script = c.lab.dir.write(
        "notify.sh",
        &format!("#!/bin/sh\ncat >> {}\n", notices.display()),
        0o755,
    );
    edit(
        &c,
        &metrics,
        &format!(
            "{metrics}\nnotify_command = \"{}\"\nhttp = \"{HTTP}\"",
            script.display()
        ),
    );
    edit(&c, "agent_timeout = \"300ms\"", "agent_timeout = \"400ms\"");
    c.lab.net.signal(monitor, "HUP");
    wait_log(
        &c,
        "monitor.log",
        &["config reloaded: applied monitor.notify_command"],
    );
    let restart = wait_log(&c, "monitor.log", &["needs a restart"]);
    assert!(
        restart.contains("monitor.agent_timeout") && restart.contains("monitor.http"),
        "{restart}"
    );
    assert!(!restart.contains("notify_command"), "{restart}");
    assert_eq!(get(&c, HTTP, "/status"), None, "monitor.http was applied");
    assert_eq!(metric(&c, "mmm_config_reload_success"), "1");

    // The new notify_command runs for the state changes that follow.
    c.bring_online();
    let notified = wait_for(WAIT, || {
        std::fs::read_to_string(&notices)
            .ok()
            .filter(|t| t.contains("\"host\":\"db1\""))
    });
    assert!(
        notified.is_some(),
        "notify_command did not run after the reload"
    );

    // An invalid file: two problems, one error line naming both, nothing changes.
    edit(
        &c,
        "heartbeat_interval = \"50ms\"",
        "bogus_key = 1\nflap_count = 0\nheartbeat_interval = \"50ms\"",
    );
    c.lab.net.signal(monitor, "HUP");
    let refused = wait_log(&c, "monitor.log", &["config reload refused"]);
    assert!(
        refused.contains("monitor.bogus_key") && refused.contains("monitor.flap_count"),
        "{refused}"
    );
    let refusals = c
        .lab
        .log("monitor.log")
        .matches("config reload refused")
        .count();
    assert_eq!(refusals, 1, "the refusal is logged once");
    assert_eq!(metric(&c, "mmm_config_reload_success"), "0");
    let last: f64 = metric(&c, "mmm_config_last_reload_timestamp_seconds")
        .parse()
        .expect("a timestamp");
    assert!(
        last >= started,
        "the last successful load is still the reload's"
    );
    let (code, show) = c.control(&["show"]);
    assert_eq!(code, 0, "{show}");
    assert!(show.contains("writer(192.0.2.100)"), "{show}");

    // The agent: the invalid file is refused, it keeps serving; then a restart-only key.
    let agent = c.agents[0];
    c.lab.net.signal(agent, "HUP");
    let refused = wait_log(&c, "agent-db1.log", &["config reload refused"]);
    assert!(refused.contains("monitor.bogus_key"), "{refused}");
    c.lab.wait_agent_listening("db1", "agent-db1.log");
    edit(&c, "bogus_key = 1\nflap_count = 0\n", "");
    edit(&c, "garp_count = 3", "garp_count = 4");
    c.lab.net.signal(agent, "HUP");
    let restart = wait_log(
        &c,
        "agent-db1.log",
        &["needs a restart", "agent.garp_count"],
    );
    // The agent does not read notify_command or monitor.http: nothing to name there.
    assert!(
        restart.contains("monitor.agent_timeout") && !restart.contains("notify_command"),
        "{restart}"
    );
    c.lab.wait_agent_listening("db1", "agent-db1.log");
    let (code, show) = c.control(&["show"]);
    assert_eq!(code, 0, "{show}");
    assert!(show.contains("writer(192.0.2.100)"), "{show}");
}

/// `systemctl reload` sends SIGHUP to every unit's daemon.
#[test]
fn every_unit_reloads_with_sighup() {
    let dir = workspace_root().join("conf/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).expect("conf/systemd") {
        let path = entry.expect("a unit").path();
        if path.extension().is_some_and(|e| e == "service") {
            let text = std::fs::read_to_string(&path).expect("a unit file");
            assert!(
                text.lines()
                    .any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"),
                "{} has no ExecReload",
                path.display()
            );
            units += 1;
        }
    }
    assert_eq!(
        units, 4,
        "the plain and @NAME units of the agent and the monitor"
    );
}
