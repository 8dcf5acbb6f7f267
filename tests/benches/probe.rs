//! Probe latency (measured, not asserted): from the signal to mysqld until the probe's
//! event is received on the monitor's link to the agent (another namespace, over the
//! authenticated protocol), for SIGKILL (process exit) and SIGTERM (listening socket
//! closed), over repeated kills of a real mariadbd. Targets: p50 <= 2 ms, p99 <= 10 ms.
//! `cargo xtask bench probe` (root).

use mmm_common::proto::ProbeEventKind;
use mmm_tests::bench::{stats, Machine, Summary};
use mmm_tests::lab::{probe_events, Lab};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::require_root;
use std::time::{Duration, Instant};

fn main() {
    if !require_root("bench probe") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(30);
    let lab = Lab::new("bprobe", "");
    let pid = lab.dir.path().join("db1.pid");
    let text = std::fs::read_to_string(&lab.config)
        .expect("config")
        .replacen(
            "ip = \"192.0.2.11\"\n",
            &format!(
                "ip = \"192.0.2.11\"\nmysql_pid_file = \"{}\"\n",
                pid.display()
            ),
            1,
        );
    std::fs::write(&lab.config, text).expect("config");
    let mut db = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    lab.agent("db1", "agent-db1.log");

    let rx = probe_events(&lab, "db1");
    let wait_for = |want: ProbeEventKind, since: Instant| -> Option<Duration> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok((at, kind, _)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if kind == want && at >= since {
                return Some(at - since);
            }
        }
        None
    };
    let mut samples = Vec::new();
    for (signal, kind) in [
        ("KILL", ProbeEventKind::ProcessExit),
        ("TERM", ProbeEventKind::ListenClose),
    ] {
        let mut v = Vec::new();
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            lab.net.signal(db.pid, signal);
            if let Some(d) = wait_for(kind, t0) {
                v.push(d);
            }
            db.restart(&lab.net);
            let _ = wait_for(ProbeEventKind::ListenOpen, t0);
        }
        samples.push((signal, kind, v));
    }
    println!("probe: signal to mysqld -> event received on the monitor's link ({rounds} kills each; 2-core VM, reader not real-time)");
    let mut json = serde_json::Map::new();
    for (signal, kind, v) in &samples {
        let name = format!("SIG{signal} -> {kind:?}");
        stats(&name, v);
        json.insert(name, serde_json::json!(Summary::of_durations(v)));
    }
    // The failover report includes these figures (target/bench/report.md).
    let report = serde_json::json!({ "machine": Machine::here(), "ms": json });
    let path = mmm_tests::bench::dir().join("probe.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("written: {}", path.display());
}
