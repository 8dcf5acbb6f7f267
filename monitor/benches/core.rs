//! Events handled per second by the decision core for 2 masters and 200 slaves with 4
//! checks each (target >= 1,000,000/s on one core). Measures and prints; asserts nothing.
//! `cargo bench -p mmm-monitor --bench core` (or `cargo xtask bench core`).

use mmm_common::config::Config;
use mmm_common::types::CheckKind;
use mmm_monitor::core::{AgentView, CheckResult, Cluster, ControlCommand, Event, FencingMethod};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn config(slaves: usize) -> Config {
    let mut t = String::from(
        "[defaults]\nagent_password = \"a\"\nmonitor_password = \"m\"\nreplication_password = \"r\"\n\
         [hosts.db1]\nip = \"10.1.0.1\"\nmode = \"master\"\npeer = \"db2\"\n\
         [hosts.db2]\nip = \"10.1.0.2\"\nmode = \"master\"\npeer = \"db1\"\n",
    );
    let mut names = vec!["\"db1\"".to_string(), "\"db2\"".to_string()];
    let mut ips = Vec::new();
    for i in 0..slaves {
        t.push_str(&format!(
            "[hosts.s{i}]\nip = \"10.2.{}.{}\"\nmode = \"slave\"\n",
            i / 200,
            i % 200 + 1
        ));
        names.push(format!("\"s{i}\""));
        ips.push(format!("\"10.3.{}.{}\"", i / 200, i % 200 + 1));
    }
    t.push_str("[roles.writer]\nmode = \"exclusive\"\nhosts = [\"db1\", \"db2\"]\nips = [\"10.1.0.100\"]\n");
    t.push_str(&format!(
        "[roles.reader]\nmode = \"balanced\"\nhosts = [{}]\nips = [{}]\n",
        names.join(", "),
        ips.join(", ")
    ));
    t.push_str("[monitor]\nping_ips = [\"10.1.0.254\"]\n[security]\nkey = \"");
    t.push_str(&"ab".repeat(32));
    t.push_str("\"\n");
    Config::parse(&t, Path::new("bench.toml")).expect("bench config")
}

fn main() {
    let slaves = 200;
    let config = Arc::new(config(slaves));
    let names: Vec<String> = config.hosts.iter().map(|h| h.name.clone()).collect();
    let mut now = 1_000_000u64;
    let fencing = FencingMethod::alone(config.agent.fencing);
    let mut c = Cluster::new(config, fencing, now);
    for n in &names {
        c.handle(
            now,
            Event::AgentHeartbeat {
                host: n.clone(),
                view: AgentView {
                    mysql_up: true,
                    uptime_s: 1000,
                    ..Default::default()
                },
            },
        );
        for check in CheckKind::ALL {
            c.handle(
                now,
                Event::Check {
                    host: n.clone(),
                    check: *check,
                    result: CheckResult::Ok,
                    started: 0,
                },
            );
        }
        c.handle(
            now,
            Event::Command {
                reply: 0,
                command: ControlCommand::SetOnline { host: n.clone() },
            },
        );
    }
    c.handle(now, Event::Tick);
    // Steady state: every host's four checks report OK, interleaved with heartbeats.
    let events: Vec<Event> = names
        .iter()
        .flat_map(|n| {
            CheckKind::ALL
                .iter()
                .map(move |k| Event::Check {
                    host: n.clone(),
                    check: *k,
                    result: CheckResult::Ok,
                    started: 0,
                })
                .chain(std::iter::once(Event::AgentHeartbeat {
                    host: n.clone(),
                    view: AgentView {
                        mysql_up: true,
                        uptime_s: 1000,
                        ..Default::default()
                    },
                }))
        })
        .collect();
    let rounds = 2000;
    let mut best = f64::MAX;
    let mut handled = 0u64;
    for _ in 0..3 {
        let start = Instant::now();
        handled = 0;
        for _ in 0..rounds {
            now += 1;
            for e in &events {
                std::hint::black_box(c.handle(now, e.clone()));
                handled += 1;
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "core: {} hosts (2 masters, {slaves} slaves), 4 checks + heartbeat each: {:.0} events/s on one core ({:.0} ns/event, incl. cloning the event; target >= 1,000,000/s)",
        names.len(),
        handled as f64 / best,
        best * 1e9 / handled as f64
    );
}
