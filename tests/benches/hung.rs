//! Hung-then-woken writer benchmark (measured, not asserted; issue 22): the writer's
//! mysqld hangs (SIGSTOP) while its agent and network stay up, the monitor fails the
//! writer role over, and the old mysqld wakes up (SIGCONT) at another point of the
//! failover in each run (0 ms to 3.5 s after the monitor failed the host). Two clients
//! write through the writer VIP from the hang on (scenario s21's clients). Per run:
//!
//! - time with two writers: from the new writer's first acknowledged write to the last
//!   write the old one acknowledged after it (0 when none did; goal 0);
//! - time with the writer VIP on two hosts, from the kernel's own address events in both
//!   namespaces (goal 0);
//! - failover: from the hang to the first write acknowledged by the new writer, at the
//!   client.
//!
//! Writes target/bench/hung.{md,json}. `cargo xtask bench chaos` (root) runs it after the
//! chaos bench. MMM_BENCH_ROUNDS: repetitions (default 20).

use mmm_tests::bench::{Machine, Summary};
use mmm_tests::lab::{ip, Cluster};
use mmm_tests::netns::{require_root, wait_for};
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// When the hung server wakes up, after the monitor failed its host.
const WAKES_MS: [u64; 5] = [0, 250, 600, 1500, 3500];

#[derive(Debug, Serialize)]
struct Run {
    wake_ms: u64,
    two_writers_ms: f64,
    /// Writes the old writer acknowledged after the new one's first.
    late_writes: usize,
    vip_on_two_hosts_ms: f64,
    failover_ms: f64,
    failed_writes: usize,
}

fn main() {
    if !require_root("bench hung") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(20);
    let machine = Machine::here();
    let (mut runs, mut failed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let wake_ms = WAKES_MS[round % WAKES_MS.len()];
        match std::panic::catch_unwind(|| one_run(round as u64, wake_ms)) {
            Ok(Ok(r)) => {
                println!(
                    "round {}: woken {wake_ms} ms after: two writers {:.1} ms ({} late writes), VIP on two hosts {:.1} ms, failover {:.1} ms, {} failed writes",
                    round + 1,
                    r.two_writers_ms,
                    r.late_writes,
                    r.vip_on_two_hosts_ms,
                    r.failover_ms,
                    r.failed_writes
                );
                runs.push(r);
            }
            Ok(Err(why)) => {
                println!("round {}: {why}", round + 1);
                failed.push(why);
            }
            Err(_) => failed.push(format!("round {} panicked", round + 1)),
        }
        write_report(&machine, &runs, &failed);
    }
}

fn one_run(round: u64, wake_ms: u64) -> Result<Run, String> {
    let mut c = Cluster::start("hung", &[]);
    c.start_monitor("monitor.log");
    c.bring_online();
    c.db("db1").sql(mmm_tests::client::TABLE);
    let (old, new) = ("db1", "db2");
    let vips = mmm_tests::vipwatch::VipWatch::start(&c.lab, &[old, new], ip(100), "bench");
    let hung_at = Instant::now();
    c.lab.net.signal(c.db(old).pid, "STOP");
    let clients =
        mmm_tests::client::hang_clients(&c.lab.net.node("client").ns, "192.0.2.100", round);
    let failed_line = format!("State of host '{old}' changed from ONLINE to HARD_OFFLINE");
    let failed = wait_for(T, || {
        c.monitor_log("monitor.log")
            .contains(&failed_line)
            .then_some(())
    });
    if failed.is_none() {
        c.lab.net.signal(c.db(old).pid, "CONT");
        return Err(format!("the monitor never failed {old}"));
    }
    std::thread::sleep(Duration::from_millis(wake_ms));
    c.lab.net.signal(c.db(old).pid, "CONT");
    let settled = wait_for(T, || {
        (c.show_line(new).contains("writer(")
            && c.db(old).read_only()
            && !c
                .lab
                .net
                .addresses(old)
                .iter()
                .any(|a| a.starts_with("192.0.2.100/")))
        .then_some(())
    });
    // Whatever the old writer's agent still had under way has run by now.
    std::thread::sleep(Duration::from_millis(1500));
    let logs: Vec<_> = clients.into_iter().map(|w| w.stop()).collect();
    let watched = vips.stop(&c.lab);
    c.stop_monitor();
    settled.ok_or_else(|| format!("{new} never became the writer with {old} fenced"))?;
    // Which server took each acknowledged write: its sid column, read where it is.
    let sids = mmm_tests::assert::writers_of_rows(&c, &[old, new]);
    let (old_id, new_id) = (c.db(old).server_id, c.db(new).server_id);
    let acked: Vec<(Instant, Option<u32>)> = logs
        .iter()
        .flat_map(|l| l.acked.iter())
        .map(|(id, at)| (*at, sids.get(id).copied()))
        .collect();
    let first_new = acked
        .iter()
        .filter(|(_, sid)| *sid == Some(new_id))
        .map(|(at, _)| *at)
        .min()
        .ok_or_else(|| format!("no write reached {new}"))?;
    let late: Vec<Instant> = acked
        .iter()
        .filter(|(at, sid)| *sid == Some(old_id) && *at > first_new)
        .map(|(at, _)| *at)
        .collect();
    let two_writers_ms = late
        .iter()
        .max()
        .map_or(0.0, |last| (*last - first_new).as_secs_f64() * 1e3);
    let vip_on_two_hosts_ms = watched
        .doubly_held()
        .iter()
        .map(|(from, to, _)| (to - from) * 1e3)
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0;
    Ok(Run {
        wake_ms,
        two_writers_ms,
        late_writes: late.len(),
        vip_on_two_hosts_ms,
        failover_ms: (first_new - hung_at).as_secs_f64() * 1e3,
        failed_writes: logs.iter().map(|l| l.failed.len()).sum(),
    })
}

fn write_report(machine: &Machine, runs: &[Run], failed: &[String]) {
    let col = |f: fn(&Run) -> f64| Summary::of(runs.iter().map(f).collect());
    let two_writers = col(|r| r.two_writers_ms);
    let two_vips = col(|r| r.vip_on_two_hosts_ms);
    let failover = col(|r| r.failover_ms);
    let with_two_writers = runs.iter().filter(|r| r.late_writes > 0).count();
    let with_two_vips = runs.iter().filter(|r| r.vip_on_two_hosts_ms > 0.0).count();
    let report = json!({
        "machine": machine,
        "runs": runs,
        "failed": failed,
        "runs_with_two_writers": with_two_writers,
        "runs_with_the_vip_on_two_hosts": with_two_vips,
        "two_writers_ms": two_writers,
        "vip_on_two_hosts_ms": two_vips,
        "failover_ms": failover,
    });
    let mut md = format!(
        "# Hung-then-woken writer: mysqld SIGSTOPped, failed over, SIGCONTed\n\n\
         kernel {}, {} cores, revision {}\n\n\
         runs: {}, failed: {}; runs with two writers: **{with_two_writers}**; runs with the writer VIP on two hosts: **{with_two_vips}**\n\n",
        machine.kernel,
        machine.cores,
        machine.revision,
        runs.len(),
        failed.len()
    );
    for (name, s) in [
        ("time with two writers (ms)", two_writers),
        ("time with the writer VIP on two hosts (ms)", two_vips),
        (
            "failover at the client, hang to first write on the new writer (ms)",
            failover,
        ),
    ] {
        if let Some(s) = s {
            md.push_str(&format!(
                "- {name}: min {:.1}, p50 {:.1}, p99 {:.1}, max {:.1}\n",
                s.min, s.p50, s.p99, s.max
            ));
        }
    }
    for f in failed {
        md.push_str(&format!("\n- failed: {f}"));
    }
    mmm_tests::bench::write_report("hung", &md, &report);
}
