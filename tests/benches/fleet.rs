//! Monitor fleet benchmark (measured, not asserted): the leading monitor lost three ways
//! (SIGKILL; host frozen: SIGSTOP and its namespace's link down; SIGTERM), each under a
//! client writing through the writer VIP every 5 ms, then a writer failure (db1's mysqld
//! SIGKILL) handled by the new leader. Reports per scenario the client's failed writes
//! (goal 0) and longest gap between acknowledged writes against its usual gap, the
//! hand-over time (to the new leader's "elected leader" log line, and to `show` naming
//! it), the failover under the new leader as `bench failover` does, and what the fleet
//! costs in steady state (etcd requests and bytes per second, monitors' and agents' CPU
//! and memory). Writes target/bench/fleet.{md,json} after every round.
//!
//! One lab serves every round: after each hand-over the lost monitor comes back as a
//! standby (restarted, or woken up and reconnected), and after each writer failure db1's
//! mysqld is started again, set online, given the writer role back (move_role) and the
//! client's table emptied. The two monitors thus lead in turn. A round that fails starts
//! a fresh lab for the next, and so does one whose db1 returns with an errant transaction
//! (a write in flight at the kill that db1 alone committed): its measurements count.
//!
//! `cargo xtask bench fleet` (root). MMM_BENCH_ROUNDS: rounds (default 20);
//! MMM_BENCH_SCENARIOS: leader-kill9,leader-frozen,leader-sigterm (default all).

use mmm_tests::bench::{keep_logs, Machine, Summary};
use mmm_tests::costs::{Costs, FleetCosts, FleetSnapshot};
use mmm_tests::failover::{
    measure_on, Failover, Profile, Scenario, DETECTED, NEW_CONNECTION, RETRYING, WRITABLE,
};
use mmm_tests::fleet::Fleet;
use mmm_tests::handover::{hand_over, rejoin, restore_db1, up, watched, Handover, LeaderLoss};
use mmm_tests::netns::require_root;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// One round of one scenario: the hand-over, then the writer failure under the new leader.
#[derive(Clone, Serialize)]
struct Run {
    handover: Handover,
    failover: Failover,
}

#[derive(Default, Serialize)]
struct Series {
    runs: Vec<Run>,
    /// Rounds that did not complete, with the reason.
    failed: Vec<String>,
    /// Rounds measured after which the lab could not be set back (db1 returning with an
    /// errant transaction): a fresh lab served the next round.
    fresh_labs: Vec<String>,
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn main() {
    if !require_root("bench fleet") {
        return;
    }
    let rounds: usize = std::env::var("MMM_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let scenarios: Vec<LeaderLoss> = match std::env::var("MMM_BENCH_SCENARIOS") {
        Err(_) => LeaderLoss::ALL.to_vec(),
        Ok(list) => list
            .split(',')
            .map(|s| {
                LeaderLoss::parse(s.trim())
                    .unwrap_or_else(|| panic!("MMM_BENCH_SCENARIOS: unknown {s:?}"))
            })
            .collect(),
    };
    let machine = Machine::here();
    let started = Instant::now();
    let mut series: Vec<(LeaderLoss, Series)> =
        scenarios.iter().map(|s| (*s, Series::default())).collect();
    let mut fleet = Some(up("bfleet"));
    let steady = steady_costs(fleet.as_ref().expect("just started"));
    eprintln!(
        "[{:>5.0} s] fleet lab up; steady state: {:.1} etcd gRPC messages/s, {:.0} etcd link bytes/s",
        started.elapsed().as_secs_f64(),
        steady.etcd_messages_per_s,
        steady.etcd_link_bytes_per_s
    );
    let mut leader = "mon1".to_string();
    for round in 0..rounds {
        for (loss, s) in series.iter_mut() {
            let loss = *loss;
            let f = fleet.get_or_insert_with(|| {
                leader = "mon1".to_string();
                up("bfleet")
            });
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let handover = hand_over(f, &leader, loss);
                assert!(
                    !handover.new_leader.is_empty(),
                    "no new leader after {loss:?}"
                );
                rejoin(f, &leader, loss);
                let new = handover.new_leader.clone();
                let failover = measure_on(&f.c, Scenario::Kill9, Profile::Ours, watched(f, &new));
                Run { handover, failover }
            }));
            // Measured: now the lab back as it was, or a fresh one for the next round.
            let restored = run.as_ref().ok().map(|r| {
                let new = r.handover.new_leader.clone();
                std::panic::catch_unwind(AssertUnwindSafe(|| restore_db1(f, &new)))
                    .unwrap_or_else(|panic| Err(panic_text(&*panic)))
            });
            if let Some(Err(why)) = restored {
                eprintln!(
                    "round {} {}: measured, but db1 cannot rejoin (a fresh lab follows): {why}",
                    round + 1,
                    loss.key()
                );
                keep_logs(
                    f.c.lab.dir.path(),
                    &format!("fleet-{}-{}-rejoin", loss.key(), round + 1),
                );
                s.fresh_labs.push(why);
                fleet = None;
            }
            match run {
                Ok(r) => {
                    eprintln!(
                        "[{:>5.0} s] round {}/{rounds} {}: {} -> {} (term {} -> {}) elected after {:?} ms, shown after {:?} ms; client: {} failed writes, longest gap {:.0?} ms (usual {:.1?}); then writer failure: retrying client's first write on db2 after {:?} ms, {} lost, {} duplicated",
                        started.elapsed().as_secs_f64(),
                        round + 1,
                        loss.key(),
                        r.handover.old_leader,
                        r.handover.new_leader,
                        r.handover.old_term,
                        r.handover.new_term,
                        r.handover.elected_ms,
                        r.handover.show_ms,
                        r.handover.failed,
                        r.handover.longest_gap_ms,
                        r.handover.normal_gap_ms,
                        r.failover.step(RETRYING),
                        r.failover.missing + r.handover.missing,
                        r.failover.duplicated + r.handover.duplicated,
                    );
                    leader = r.handover.new_leader.clone();
                    s.runs.push(r);
                }
                Err(panic) => {
                    let why = panic_text(&*panic);
                    eprintln!(
                        "round {} {}: the run failed (a fresh lab follows): {why}",
                        round + 1,
                        loss.key()
                    );
                    let name = format!("fleet-{}-{}", loss.key(), round + 1);
                    if let Some(f) = &fleet {
                        keep_logs(f.c.lab.dir.path(), &name);
                        keep_logs(f.etcd.dir.path(), &format!("{name}/etcd"));
                    }
                    s.failed.push(why);
                    fleet = None;
                }
            }
        }
        write_report(&machine, rounds, &steady, &series);
    }
    if let Some(f) = &fleet {
        keep_logs(f.c.lab.dir.path(), "fleet-last");
    }
    drop(fleet);
    let dir = mmm_tests::bench::dir();
    print!(
        "{}",
        std::fs::read_to_string(dir.join("fleet.md")).unwrap_or_default()
    );
    println!(
        "\nwritten: {} and fleet.json ({:.0} s)",
        dir.join("fleet.md").display(),
        started.elapsed().as_secs_f64()
    );
}

/// The fleet's costs over 10 s of steady state (two monitors, no client writing).
fn steady_costs(f: &Fleet) -> FleetCosts {
    let members: Vec<(String, String)> = f
        .etcd
        .members
        .iter()
        .map(|m| (m.name.clone(), m.client_url.clone()))
        .collect();
    let monitors: Vec<u32> = ["mon1", "mon2"]
        .iter()
        .filter_map(|s| f.monitors[*s].pid)
        .collect();
    let net = &f.c.lab.net;
    let a = FleetSnapshot::take(net, &members, &monitors, &f.c.agents);
    std::thread::sleep(Duration::from_secs(10));
    let b = FleetSnapshot::take(net, &members, &monitors, &f.c.agents);
    FleetCosts::between(&a, &b, &monitors, &f.c.agents)
}

fn summary(v: impl Iterator<Item = f64>) -> Option<Summary> {
    Summary::of(v.collect())
}

fn cell(s: Option<Summary>, f: impl Fn(&Summary) -> f64) -> String {
    s.map(|s| format!("{:.0}", f(&s)))
        .unwrap_or_else(|| "-".into())
}

fn p50_p99(s: Option<Summary>) -> String {
    format!("{} / {}", cell(s, |s| s.p50), cell(s, |s| s.p99))
}

fn write_report(
    machine: &Machine,
    rounds: usize,
    steady: &FleetCosts,
    series: &[(LeaderLoss, Series)],
) {
    let done = series.iter().map(|x| x.1.runs.len()).min().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# Monitor fleet benchmark\n");
    let _ = writeln!(
        md,
        "{done} of {rounds} rounds done. One namespace lab for every round: 3 etcd members (session TTL 1 s), two monitors (mon1, mon2) in their own namespaces, 3 MariaDB 10.11 (db1 <-> db2, db3 a slave; GTID, semi-sync), an agent on each, and a client writing one row every 5 ms through the writer VIP (500 ms per attempt). After each hand-over the lost monitor rejoins as a standby (restarted; the frozen one woken up and its link up again), and after each writer failure db1 is started again, set online and given the writer role back with move_role: the monitors lead in turn. Kernel {}, {} cores, revision {}.\n",
        machine.kernel, machine.cores, machine.revision
    );
    let _ = writeln!(md, "## Hand-over of the leading monitor, under writes\n");
    let _ = writeln!(md, "Times in ms after the signal. \"elected\": the new leader's `elected leader of the monitor fleet` log line; \"shown\": the first `mmm-control show` through the new leader (polled back to back) naming it. Client gaps: the longest time between two acknowledged writes over the client's whole run (warm-up, event, one second after), against the p50 of its gaps.\n\n| scenario | runs | failed runs | elected p50 / p99 | shown p50 / p99 | failed client writes (goal 0) | acked writes | longest gap p50 / max | usual gap p50 | lost | duplicated |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (loss, s) in series {
        let h = || s.runs.iter().map(|r| &r.handover);
        let longest = summary(h().filter_map(|h| h.longest_gap_ms));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            loss.key(),
            s.runs.len(),
            s.failed.len(),
            p50_p99(summary(h().filter_map(|h| h.elected_ms).map(|x| x as f64))),
            p50_p99(summary(h().filter_map(|h| h.show_ms).map(|x| x as f64))),
            h().map(|h| h.failed).sum::<usize>(),
            h().map(|h| h.acked).sum::<usize>(),
            cell(longest, |s| s.p50),
            cell(longest, |s| s.max),
            summary(h().filter_map(|h| h.normal_gap_ms))
                .map(|s| format!("{:.1}", s.p50))
                .unwrap_or_else(|| "-".into()),
            h().map(|h| h.missing).sum::<usize>(),
            h().map(|h| h.duplicated).sum::<usize>(),
        );
    }
    let _ = writeln!(
        md,
        "\n## Then a writer failure under the new leader (db1's mysqld SIGKILL)\n"
    );
    let _ = writeln!(md, "As `bench failover` measures it (ms after the kill): the retrying client is a connection pool's view (1 s connect timeout, retries at once).\n\n| after | retrying client's first write on db2 p50 / p99 | a new connection reaches writable db2 p50 / p99 | detected p50 / p99 | db2 writable p50 / p99 | running client's longest gap p50 / max | lost | duplicated | replication errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (loss, s) in series {
        let ms = |name: &str| {
            summary(
                s.runs
                    .iter()
                    .filter_map(|r| r.failover.step(name))
                    .map(|x| x as f64),
            )
        };
        let gap = summary(
            s.runs
                .iter()
                .filter_map(|r| r.failover.write_gap_ms)
                .map(|x| x as f64),
        );
        let errors: Vec<String> = s
            .runs
            .iter()
            .flat_map(|r| r.failover.replication_errors.clone())
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            loss.key(),
            p50_p99(ms(RETRYING)),
            p50_p99(ms(NEW_CONNECTION)),
            p50_p99(ms(DETECTED)),
            p50_p99(ms(WRITABLE)),
            cell(gap, |s| s.p50),
            cell(gap, |s| s.max),
            s.runs.iter().map(|r| r.failover.missing).sum::<usize>(),
            s.runs.iter().map(|r| r.failover.duplicated).sum::<usize>(),
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        );
    }
    let failures: Vec<String> = series
        .iter()
        .flat_map(|(l, s)| s.failed.iter().map(move |w| format!("- {}: {w}", l.key())))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(
            md,
            "\nFailed runs (logs in target/bench/logs/fleet-*):\n{}",
            failures.join("\n")
        );
    }
    let fresh: Vec<String> = series
        .iter()
        .flat_map(|(l, s)| {
            s.fresh_labs
                .iter()
                .map(move |w| format!("- after {}: {w}", l.key()))
        })
        .collect();
    let _ = writeln!(
        md,
        "\nRounds after which db1 could not rejoin, so a fresh lab served the next round: {}{}{}",
        fresh.len(),
        if fresh.is_empty() {
            ""
        } else {
            ". A write in flight when mysqld was killed, committed by db1 alone and never acknowledged, is an errant transaction on its return; the monitor rightly keeps db1 out (set_online refuses it), and the bench does not rebuild it.\n"
        },
        fresh.join("\n")
    );
    let _ = writeln!(md, "\n## Costs\n");
    let _ = writeln!(
        md,
        "Steady state, {:.1} s, two monitors, no client writing; etcd's own counters summed over the 3 members. Messages received count every message of a stream (lease keep-alives, watches); calls finished count a stream once, when it ends. Raft proposals: etcd writes. The members' link bytes include raft's heartbeats between them (50 ms interval here), each counted at both ends.\n\n| etcd gRPC messages received/s | etcd gRPC calls finished/s | raft proposals committed/s | etcd client payload bytes/s | etcd members' link bytes/s (in + out, peers too) | leader CPU % | standby CPU % | leader RSS MiB | standby RSS MiB | agent CPU % (mean of 3) | largest agent RSS MiB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        steady.window_ms as f64 / 1000.0
    );
    let pct = |i: usize| steady.monitors_cpu_pct.get(i).copied().unwrap_or(f64::NAN);
    let mib = |i: usize| {
        steady
            .monitors_rss_kib
            .get(i)
            .map(|k| *k as f64 / 1024.0)
            .unwrap_or(f64::NAN)
    };
    let _ = writeln!(
        md,
        "| {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} |",
        steady.etcd_messages_per_s,
        steady.etcd_requests_per_s,
        steady.etcd_proposals_per_s,
        steady.etcd_client_bytes_per_s,
        steady.etcd_link_bytes_per_s,
        pct(0),
        pct(1),
        mib(0),
        mib(1),
        steady.agent_cpu_pct,
        steady.agent_rss_kib as f64 / 1024.0
    );
    let all: Vec<&Costs> = series
        .iter()
        .flat_map(|(_, s)| s.runs.iter().map(|r| &r.failover.idle))
        .collect();
    if !all.is_empty() {
        let p50 = |f: &dyn Fn(&Costs) -> f64| {
            summary(all.iter().map(|c| f(c)))
                .map(|s| s.p50)
                .unwrap_or(f64::NAN)
        };
        let _ = writeln!(
            md,
            "\nThe leading monitor with the client writing (2 s before each writer failure, p50 over {} runs): CPU {:.1} % of a core, RSS {:.1} MiB; agents {:.1} % (mean), payload {:.0} bytes/s per agent link.",
            all.len(),
            p50(&|c| c.monitor_cpu_pct),
            p50(&|c| c.monitor_rss_kib as f64) / 1024.0,
            p50(&|c| c.agent_cpu_pct),
            p50(&|c| c.link_bytes_per_s)
        );
    }
    let report = json!({
        "machine": machine,
        "rounds": rounds,
        "rounds_done": done,
        "handover_times": {
            "elected_ms": "signal -> the new leader's 'elected leader of the monitor fleet' log line",
            "show_ms": "signal -> the first show through the new leader naming it",
        },
        "steady_costs": steady,
        "series": series.iter().map(|(l, s)| json!({
            "scenario": l.key(),
            "title": l.title(),
            "elected_ms": summary(s.runs.iter().filter_map(|r| r.handover.elected_ms).map(|x| x as f64)),
            "show_ms": summary(s.runs.iter().filter_map(|r| r.handover.show_ms).map(|x| x as f64)),
            "retrying_first_write_ms": summary(s.runs.iter().filter_map(|r| r.failover.step(RETRYING)).map(|x| x as f64)),
            "runs": s.runs,
            "failed": s.failed,
            "fresh_labs": s.fresh_labs,
        })).collect::<Vec<_>>(),
    });
    let dir = mmm_tests::bench::dir();
    std::fs::write(dir.join("fleet.md"), &md).expect("writing fleet.md");
    std::fs::write(
        dir.join("fleet.json"),
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("writing fleet.json");
}
