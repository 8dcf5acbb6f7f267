//! The monitor daemon on loopback only (no root needed): hosts on 127.0.0.x where no
//! agent runs. Covers start-up from a corrupt status file, the keyed control socket,
//! the metrics endpoint, and SIGTERM writing the status.

use mmm_common::config::testing::ConfigBuilder;
use mmm_common::types::RoleMode;
use mmm_tests::netns::wait_for;
use mmm_tests::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Monitor {
    child: Child,
    dir: TempDir,
    config: std::path::PathBuf,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(tag: &str, control: &str, metrics: u16, status: Option<&str>) -> Monitor {
    start_with(tag, control, metrics, status, |_| {})
}

/// `configure`: what a test changes in the config beyond the loopback cluster.
fn start_with(
    tag: &str,
    control: &str,
    metrics: u16,
    status: Option<&str>,
    configure: impl FnOnce(&mut ConfigBuilder),
) -> Monitor {
    let dir = TempDir::new(tag);
    let key = dir.write(
        "cluster.key",
        &stdout(&run("mmm-control", &["gen-key"])),
        0o600,
    );
    let status_path = dir.path().join("status.json");
    if let Some(text) = status {
        std::fs::write(&status_path, text).unwrap();
    }
    let lo = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let mut b = ConfigBuilder::new();
    b.set("defaults.agent_port", i64::from(free_port()))
        .master("db1", lo(11), "db2")
        .master("db2", lo(12), "db1")
        .role("writer", RoleMode::Exclusive, &["db1", "db2"], &[lo(100)])
        .reader(&["db1", "db2"], &[lo(101)])
        .set("monitor.control", control)
        .set("monitor.status_path", status_path.to_str().unwrap())
        .ping_ips(&[IpAddr::V4(lo(1))])
        .set("monitor.metrics", format!("127.0.0.1:{metrics}"))
        .key_file(&key);
    configure(&mut b);
    let config = dir.write("mmm.toml", &b.toml(), 0o600);
    let child = Command::new(bin("mmm-monitor"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("monitor.log")).unwrap())
        .spawn()
        .unwrap();
    let m = Monitor { child, dir, config };
    let up = wait_for(Duration::from_secs(10), || {
        (control_cmd(&m, &["ping"]).1 == "OK: Pinged successfully!\n").then_some(())
    });
    assert!(
        up.is_some(),
        "monitor did not answer:\n{}",
        std::fs::read_to_string(m.dir.path().join("monitor.log")).unwrap_or_default()
    );
    m
}

fn control_cmd(m: &Monitor, args: &[&str]) -> (i32, String) {
    let mut full = vec!["--config", m.config.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = run("mmm-control", &full);
    (out.status.code().unwrap_or(-1), shown(&out))
}

#[test]
fn corrupt_status_file_starts_passive_and_says_why() {
    let port = free_port();
    let m = start(
        "corrupt",
        &format!("127.0.0.1:{port}"),
        free_port(),
        Some("{\"version\": 1, \"hosts\": {tru"),
    );
    let (code, show) = control_cmd(&m, &["show"]);
    assert_eq!(code, 0);
    assert!(
        show.starts_with("# --- Monitor is in PASSIVE MODE ---\n# Cause: the status file"),
        "{show}"
    );
    assert!(show.contains("corrupt or truncated"), "{show}");
    assert_eq!(control_cmd(&m, &["mode"]).1, "PASSIVE\n");
}

/// The monitor's answers keep MMM's lines: `OK: ` and reports on stdout with exit 0, a
/// refusal (`ERROR: `) on stderr with exit 1.
#[test]
fn answers_on_stdout_refusals_on_stderr() {
    let port = free_port();
    let m = start("streams", &format!("127.0.0.1:{port}"), free_port(), None);
    let control = |args: &[&str]| {
        let mut full = vec!["--config", m.config.to_str().unwrap()];
        full.extend_from_slice(args);
        run("mmm-control", &full)
    };
    let out = control(&["ping"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "OK: Pinged successfully!\n");
    assert!(out.stderr.is_empty());
    let out = control(&["set_online", "db9"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: Unknown host name 'db9'!\n"
    );
}

#[test]
fn sigterm_writes_the_status_and_metrics_are_served() {
    let metrics = free_port();
    let mut m = start("term", &format!("127.0.0.1:{}", free_port()), metrics, None);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    // hyper answers an HTTP/1.0 client in its own version.
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(
        text.contains("mmm_host_state{host=\"db1\",state=\"AWAITING_RECOVERY\"} 1"),
        "{text}"
    );
    assert!(text.contains("mmm_failovers_total 0"), "{text}");
    let status = m.dir.path().join("status.json");
    let _ = std::fs::remove_file(&status);
    mmm_tests::netns::send_signal(m.child.id(), "TERM").unwrap();
    let exited = wait_for(Duration::from_secs(10), || {
        m.child.try_wait().ok().flatten()
    });
    assert!(
        exited.is_some_and(|s| s.success()),
        "monitor did not exit cleanly on SIGTERM"
    );
    let record = std::fs::read_to_string(&status).expect("status written at shutdown");
    assert!(record.contains("\"AWAITING_RECOVERY\""), "{record}");
}

#[test]
fn a_control_socket_others_can_reach_requires_the_key() {
    let port = free_port();
    let m = start("keyed", &format!("0.0.0.0:{port}"), free_port(), None);
    // mmm-control with the config answers the challenge with the key.
    assert_eq!(
        control_cmd(&m, &["ping"]),
        (0, "OK: Pinged successfully!\n".into())
    );
    // Without the key: the command is never run.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"MMM-AUTH 00\nset_passive\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("MMM-CHALLENGE "), "{text}");
    assert!(text.contains("ERROR: Authentication failed"), "{text}");
    assert_eq!(control_cmd(&m, &["mode"]).1, "ACTIVE\n");
}

#[test]
fn a_second_monitor_on_the_same_status_file_refuses_to_start() {
    let sock_dir = TempDir::new("lock-sock");
    let sock = sock_dir.path().join("control.sock");
    let m = start("lock", sock.to_str().unwrap(), free_port(), None);
    // The same config again: same status file, same unix control socket.
    let second = Command::new(bin("mmm-monitor"))
        .args(["--config", m.config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second monitor started:\n{err}");
    assert!(err.contains("another monitor already runs"), "{err}");
    // The first one still answers on its socket (not deleted by the second).
    assert_eq!(
        control_cmd(&m, &["ping"]),
        (0, "OK: Pinged successfully!\n".into())
    );
    // Another status file but the same live socket: refused too, socket kept.
    let other = m.dir.write(
        "other.toml",
        &std::fs::read_to_string(&m.config)
            .unwrap()
            .replace("status.json", "other-status.json"),
        0o600,
    );
    let third = Command::new(bin("mmm-monitor"))
        .args(["--config", other.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success(), "a third monitor started:\n{err}");
    assert!(err.contains("another monitor serves"), "{err}");
    assert_eq!(
        control_cmd(&m, &["ping"]),
        (0, "OK: Pinged successfully!\n".into())
    );
}

#[test]
fn loopback_tcp_control_needs_the_key_and_the_key_covers_the_command() {
    let port = free_port();
    let m = start("keyed-lo", &format!("127.0.0.1:{port}"), free_port(), None);
    let key_hex = std::fs::read_to_string(m.dir.path().join("cluster.key")).unwrap();
    let key = mmm_common::config::ClusterKey::from_hex(key_hex.trim()).unwrap();
    let talk = |mac_for: &str, line: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut challenge = String::new();
        std::io::BufRead::read_line(&mut r, &mut challenge).unwrap();
        let nonce = challenge
            .trim()
            .strip_prefix("MMM-CHALLENGE ")
            .unwrap()
            .to_string();
        let mac = mmm_monitor::control::auth::mac(
            &key,
            &nonce,
            mmm_monitor::control::auth::Part::Command,
            mac_for,
        );
        s.write_all(format!("MMM-AUTH {mac}\n{line}\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        text
    };
    // A local user without the key: nothing runs.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"MMM-AUTH 00\nset_passive\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.contains("ERROR: Authentication failed"), "{text}");
    // A MAC for one command does not carry another.
    let text = talk("ping", "set_passive");
    assert!(text.contains("ERROR: Authentication failed"), "{text}");
    assert_eq!(control_cmd(&m, &["mode"]).1, "ACTIVE\n");
    // The right MAC: the answer carries the monitor's MAC too.
    let text = talk("mode", "mode");
    assert!(text.starts_with("MMM-MAC "), "{text}");
    assert!(text.ends_with("\nACTIVE\n"), "{text}");
}

#[test]
fn an_mmm_status_file_is_taken_over() {
    let m = start(
        "mmm-status",
        &format!("127.0.0.1:{}", free_port()),
        free_port(),
        Some("db1|ONLINE|writer(127.0.0.100),reader(127.0.0.101)\ndb2|ONLINE|\n"),
    );
    let (code, show) = control_cmd(&m, &["show"]);
    assert_eq!(code, 0);
    assert!(!show.contains("PASSIVE"), "{show}");
    assert_eq!(control_cmd(&m, &["mode"]).1, "ACTIVE\n");
    let log = std::fs::read_to_string(m.dir.path().join("monitor.log")).unwrap();
    assert!(log.contains("resuming from the status file"), "{log}");
}

#[test]
fn notify_command_gets_every_notice_as_json_in_order() {
    let out_dir = TempDir::new("notify-out");
    let out = out_dir.path().join("events.jsonl");
    let script = out_dir.write(
        "notify.sh",
        &format!("#!/bin/sh\ncat >> {}\n", out.display()),
        0o755,
    );
    let m = start_with(
        "notify",
        &format!("127.0.0.1:{}", free_port()),
        free_port(),
        None,
        |b| {
            b.set("monitor.notify_command", script.to_str().unwrap());
        },
    );
    // No agent answers on these hosts: set_online is refused, set_passive is a notice-free
    // mode change; the agents' silence itself is noticed.
    let got = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&out).ok()?;
        text.contains("Can't reach agent on host").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no notice reached notify_command:\n{}",
            std::fs::read_to_string(m.dir.path().join("monitor.log")).unwrap_or_default()
        )
    });
    for line in got.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            v["at_ms"].as_u64().is_some() && v["message"].is_string(),
            "{line}"
        );
    }
}
