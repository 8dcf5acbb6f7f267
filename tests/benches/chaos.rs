//! Chaos benchmark (measured, not asserted): a hung mysqld on the writer (SIGSTOP: every
//! SQL statement there blocks until its timeout) plus a cut between the monitor and the
//! writer (a blackhole route on db1 towards the monitor). The monitor must fence db1 by its
//! lease and promote db2. From the agents' own logs (one machine, one clock) each run
//! compares the moment db1 removed the writer VIP with the moment db2 added it: the gap must
//! never be negative (two writer VIPs at once). Writes target/bench/chaos.{md,json}.
//!
//! `cargo xtask bench chaos` (root). MMM_BENCH_ROUNDS: repetitions (default 20).

use mmm_tests::bench::{Machine, Summary};
use mmm_tests::lab::Cluster;
use mmm_tests::netns::{require_root, wait_for};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;

const VIP: &str = "192.0.2.100";

#[derive(Debug, Serialize)]
struct Run {
    /// db2's VIP addition minus db1's removal, ms (negative: both held it).
    gap_ms: f64,
    /// How db1 gave it up: the lease task ("lease") or a reconcile step.
    removed_by: String,
}

fn main() {
    if !require_root("bench chaos") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(20);
    let machine = Machine::here();
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for round in 0..rounds {
        match std::panic::catch_unwind(one_run) {
            Ok(Ok(r)) => {
                println!(
                    "round {}: gap {:.1} ms ({})",
                    round + 1,
                    r.gap_ms,
                    r.removed_by
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

fn one_run() -> Result<Run, String> {
    let mut c = Cluster::start("chaos", &[]);
    c.start_monitor("monitor.log");
    c.bring_online();
    let db1 = c.db("db1").pid;
    c.lab.net.signal(db1, "STOP");
    c.lab
        .net
        .exec("db1", &["ip", "route", "add", "blackhole", "192.0.2.2/32"]);
    let promoted = wait_for(Duration::from_secs(30), || {
        c.show_line("db2").contains("writer(").then_some(())
    });
    // Let db1's lease task and the reconciler finish what they started.
    std::thread::sleep(Duration::from_millis(500));
    c.lab.net.signal(db1, "CONT");
    c.lab
        .net
        .exec("db1", &["ip", "route", "del", "blackhole", "192.0.2.2/32"]);
    let (log1, log2) = (c.lab.log("agent-db1.log"), c.lab.log("agent-db2.log"));
    c.stop_monitor();
    promoted.ok_or_else(|| "db2 was never promoted".to_string())?;
    let lease = first(&log1, &["fence: writer VIP removed", VIP]).map(|t| (t, "lease"));
    let step = first(&log1, &["applied", &format!("RemoveVip({VIP})")]).map(|t| (t, "reconcile"));
    let (removed, by) = match (lease, step) {
        (Some(a), Some(b)) => std::cmp::min_by(a, b, |x, y| x.0.total_cmp(&y.0)),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Err("db1 never removed the writer VIP".into()),
    };
    let added = first(&log2, &["applied", &format!("AddVip({VIP})")])
        .ok_or("db2 never added the writer VIP")?;
    Ok(Run {
        gap_ms: (added - removed) * 1000.0,
        removed_by: by.into(),
    })
}

/// Seconds since the epoch of the first log line containing every needle.
fn first(log: &str, needles: &[&str]) -> Option<f64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .find_map(|l| timestamp(l.split_whitespace().next()?))
}

/// tracing's `2026-11-25T04:44:07.219722Z`.
fn timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

fn write_report(machine: &Machine, runs: &[Run], failed: &[String]) {
    let gaps: Vec<f64> = runs.iter().map(|r| r.gap_ms).collect();
    let overlaps = gaps.iter().filter(|g| **g < 0.0).count();
    let summary = Summary::of(gaps.clone());
    let report = json!({
        "machine": machine,
        "runs": runs,
        "failed": failed,
        "overlaps": overlaps,
        "gap_ms": summary,
    });
    let mut md = format!(
        "# Chaos: hung mysqld on the writer + monitor cut from it\n\n\
         kernel {}, {} cores, revision {}\n\n\
         runs: {}, failed: {}, runs where both held the writer VIP: **{overlaps}**\n\n",
        machine.kernel,
        machine.cores,
        machine.revision,
        runs.len(),
        failed.len()
    );
    if let Some(s) = summary {
        md.push_str(&format!(
            "gap from db1's removal to db2's addition (ms): min {:.1}, p50 {:.1}, p99 {:.1}, max {:.1}\n",
            s.min, s.p50, s.p99, s.max
        ));
    }
    for f in failed {
        md.push_str(&format!("\n- failed: {f}"));
    }
    mmm_tests::bench::write_report("chaos", &md, &report);
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_tracing_timestamps() {
        let t = super::timestamp("2026-11-25T04:44:07.250000Z").unwrap();
        let u = super::timestamp("2026-11-25T04:44:08.000000Z").unwrap();
        assert!((u - t - 0.75).abs() < 1e-6);
        assert_eq!(super::timestamp("1970-01-01T00:00:00Z"), Some(0.0));
    }
}
