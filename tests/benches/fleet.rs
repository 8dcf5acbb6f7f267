//! Monitor fleet benchmark (measured, not asserted), two groups of events, each under a
//! client writing through the writer VIP every 5 ms and each followed by a writer failure
//! (the writer's mysqld SIGKILL) measured as `bench failover` does:
//!
//! - `monitor`: the leading monitor lost three ways (SIGKILL; host frozen: SIGSTOP and its
//!   namespace's link down; SIGTERM), the writer failure handled by the new leader. Reports
//!   the hand-over time (to the new leader's "elected leader" log line, and to `show`
//!   naming it). Lab: [`FleetLab::start`] (session TTL 1 s).
//! - `etcd` (issue 21's "Measured"): etcd's raft leader SIGKILLed, a follower SIGKILLed
//!   (each started again after the writer failure, before the next round), etcd's
//!   majority lost 30 s (both followers SIGKILLed, started again after 30 s), the writer
//!   (db1) cut from every etcd member 30 s (blackhole routes on the members, as scenario
//!   f22: the fleet fails it over by design, and the time until `show` names db2 is
//!   reported; the writer failure that follows is then db2's, failed over to db1). Reports
//!   whether the fleet's leader or term changed. Lab: [`FleetLab::start_per_rule`] (etcd
//!   500/50 ms, session TTL 4 s), see mmm_tests::etcd_events.
//!
//! Per scenario: the client's failed writes (goal 0), its longest gap between acknowledged
//! writes against its usual gap, acknowledged writes lost or duplicated, the failover
//! (p50/p99), and what the fleet costs in steady state (etcd requests and bytes per
//! second, monitors' and agents' CPU and memory; on the first lab started). Writes
//! target/bench/fleet.{md,json} after every round.
//!
//! One lab serves every round of a group (the monitor group's, then the etcd group's):
//! after each hand-over the lost monitor comes back as a standby (restarted, or woken up
//! and reconnected), and after each writer failure the killed mysqld is started again, set
//! online, db1 given the writer role back (move_role) and the client's table emptied. A
//! round that fails starts a fresh lab for the next, and so does one whose killed writer
//! returns with an errant transaction (a write in flight at the kill that it alone
//! committed): its measurements count.
//!
//! `cargo xtask bench fleet` (root). MMM_BENCH_ROUNDS: rounds (default 20);
//! MMM_BENCH_SCENARIOS: a comma-separated list of scenarios or groups (default all):
//! `monitor` = leader-kill9,leader-frozen,leader-sigterm; `etcd` =
//! etcd-leader-kill9,etcd-follower-kill9,etcd-majority-lost,etcd-writer-cut.

use mmm_tests::bench::{keep_logs, Machine, Summary};
use mmm_tests::costs::{Costs, FleetCosts, FleetSnapshot};
use mmm_tests::etcd_events::{recover, undergo, EtcdEvent, EtcdOutcome};
use mmm_tests::failover::{
    measure_move, Failover, Profile, Scenario, DETECTED, NEW_CONNECTION, RETRYING, WRITABLE,
};
use mmm_tests::fleet_lab::FleetLab;
use mmm_tests::handover::{
    hand_over, rejoin, restore, up, up_fleet, watched, ClientView, Handover, LeaderLoss,
};
use mmm_tests::netns::require_root;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// What a round does before the writer failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The leading monitor lost (lab: [`FleetLab::start`], session TTL 1 s).
    Leader(LeaderLoss),
    /// etcd loses members or the writer (lab: [`FleetLab::start_per_rule`], TTL 4 s).
    Etcd(EtcdEvent),
}

impl Event {
    fn all() -> Vec<Event> {
        let mut all: Vec<Event> = LeaderLoss::ALL.into_iter().map(Event::Leader).collect();
        all.extend(EtcdEvent::ALL.into_iter().map(Event::Etcd));
        all
    }

    fn key(self) -> &'static str {
        match self {
            Event::Leader(l) => l.key(),
            Event::Etcd(e) => e.key(),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Event::Leader(l) => l.title(),
            Event::Etcd(e) => e.title(),
        }
    }

    fn is_etcd(self) -> bool {
        matches!(self, Event::Etcd(_))
    }

    /// One scenario's key, or a group: `monitor` (the leader losses), `etcd`.
    fn parse(s: &str) -> Option<Vec<Event>> {
        match s {
            "monitor" => Some(LeaderLoss::ALL.into_iter().map(Event::Leader).collect()),
            "etcd" => Some(EtcdEvent::ALL.into_iter().map(Event::Etcd).collect()),
            _ => LeaderLoss::parse(s)
                .map(Event::Leader)
                .or_else(|| EtcdEvent::parse(s).map(Event::Etcd))
                .map(|e| vec![e]),
        }
    }

    /// A fleet lab for this kind of event, up: mon1 leading, db1 the writer.
    fn lab(self) -> FleetLab {
        if self.is_etcd() {
            up_fleet(FleetLab::start_per_rule("betcd"))
        } else {
            up("bfleet")
        }
    }
}

/// One round of one scenario: the event (a hand-over, or an etcd event), then the
/// writer failure (under the new leader, or whatever host writes after the etcd event).
#[derive(Clone, Serialize)]
struct Run {
    #[serde(skip_serializing_if = "Option::is_none")]
    handover: Option<Handover>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<EtcdOutcome>,
    /// The monitor that led the failover, and the writer whose mysqld was killed.
    leader: String,
    killed: String,
    failover: Failover,
}

impl Run {
    /// The client's view of the event.
    fn client(&self) -> &ClientView {
        match (&self.handover, &self.etcd) {
            (Some(h), _) => &h.client,
            (None, Some(e)) => &e.client,
            (None, None) => unreachable!("a run has an event"),
        }
    }
}

#[derive(Default, Serialize)]
struct Series {
    runs: Vec<Run>,
    /// Rounds that did not complete, with the reason.
    failed: Vec<String>,
    /// Rounds measured after which the lab could not be set back (the killed writer
    /// returning with an errant transaction): a fresh lab served the next round.
    fresh_labs: Vec<String>,
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The other master of db1 <-> db2: where a failure of `writer` is failed over to.
fn peer(writer: &str) -> &'static str {
    if writer == "db2" {
        "db1"
    } else {
        "db2"
    }
}

/// One round: the event, then the writer's mysqld SIGKILLed and measured. `leader`: the
/// monitor leading before a hand-over.
fn round(f: &mut FleetLab, leader: &str, event: Event) -> Run {
    match event {
        Event::Leader(loss) => {
            let handover = hand_over(f, leader, loss);
            assert!(
                !handover.new_leader.is_empty(),
                "no new leader after {loss:?}"
            );
            rejoin(f, leader, loss);
            let new = handover.new_leader.clone();
            let failover = measure_move(
                &f.c,
                Scenario::Kill9,
                Profile::Ours,
                watched(f, &new),
                ("db1", "db2"),
            );
            Run {
                handover: Some(handover),
                etcd: None,
                leader: new,
                killed: "db1".into(),
                failover,
            }
        }
        Event::Etcd(e) => {
            let outcome = undergo(f, e);
            let leader = outcome.fleet_after.0.clone();
            let killed = outcome.writer.clone();
            let failover = measure_move(
                &f.c,
                Scenario::Kill9,
                Profile::Ours,
                watched(f, &leader),
                (&killed, peer(&killed)),
            );
            // The failure was handled with the killed member still down; now it is back
            // before the next round.
            recover(f, &outcome);
            Run {
                handover: None,
                etcd: Some(outcome),
                leader,
                killed,
                failover,
            }
        }
    }
}

fn main() {
    if !require_root("bench fleet") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(20);
    let scenarios: Vec<Event> = match std::env::var("MMM_BENCH_SCENARIOS") {
        Err(_) => Event::all(),
        Ok(list) => {
            let mut v: Vec<Event> = Vec::new();
            for s in list.split(',') {
                for e in Event::parse(s.trim())
                    .unwrap_or_else(|| panic!("MMM_BENCH_SCENARIOS: unknown {s:?}"))
                {
                    if !v.contains(&e) {
                        v.push(e);
                    }
                }
            }
            v
        }
    };
    let machine = Machine::here();
    let started = Instant::now();
    let mut series: Vec<(Event, Series)> =
        scenarios.iter().map(|s| (*s, Series::default())).collect();
    let mut steady: Option<FleetCosts> = None;
    // The leader losses run on one lab, then the etcd events on another (their own
    // timings): every round of a group, then the next group.
    for etcd_group in [false, true] {
        let group: Vec<usize> = (0..series.len())
            .filter(|i| series[*i].0.is_etcd() == etcd_group)
            .collect();
        let Some(first) = group.first().map(|i| series[*i].0) else {
            continue;
        };
        let mut fleet = Some(first.lab());
        if steady.is_none() {
            let costs = steady_costs(fleet.as_ref().expect("just started"));
            eprintln!(
                "[{:>5.0} s] fleet lab up; steady state: {:.1} etcd gRPC messages/s, {:.0} etcd link bytes/s",
                started.elapsed().as_secs_f64(),
                costs.etcd_messages_per_s,
                costs.etcd_link_bytes_per_s
            );
            steady = Some(costs);
        }
        let mut leader = "mon1".to_string();
        for round_no in 0..rounds {
            for &i in &group {
                let (event, s) = &mut series[i];
                let event = *event;
                let f = fleet.get_or_insert_with(|| {
                    leader = "mon1".to_string();
                    event.lab()
                });
                let run = std::panic::catch_unwind(AssertUnwindSafe(|| round(f, &leader, event)));
                // Measured: now the lab back as it was, or a fresh one for the next round.
                let restored = run.as_ref().ok().map(|r| {
                    std::panic::catch_unwind(AssertUnwindSafe(|| restore(f, &r.leader, &r.killed)))
                        .unwrap_or_else(|panic| Err(panic_text(&*panic)))
                });
                if let Some(Err(why)) = restored {
                    eprintln!(
                        "round {} {}: measured, but the killed writer cannot rejoin (a fresh lab follows): {why}",
                        round_no + 1,
                        event.key()
                    );
                    keep_logs(
                        f.c.lab.dir.path(),
                        &format!("fleet-{}-{}-rejoin", event.key(), round_no + 1),
                    );
                    s.fresh_labs.push(why);
                    fleet = None;
                }
                match run {
                    Ok(r) => {
                        eprintln!(
                            "[{:>5.0} s] round {}/{rounds} {}: {}",
                            started.elapsed().as_secs_f64(),
                            round_no + 1,
                            event.key(),
                            progress(&r)
                        );
                        leader = r.leader.clone();
                        s.runs.push(r);
                    }
                    Err(panic) => {
                        let why = panic_text(&*panic);
                        eprintln!(
                            "round {} {}: the run failed (a fresh lab follows): {why}",
                            round_no + 1,
                            event.key()
                        );
                        let name = format!("fleet-{}-{}", event.key(), round_no + 1);
                        if let Some(f) = &fleet {
                            keep_logs(f.c.lab.dir.path(), &name);
                            keep_logs(f.etcd.dir.path(), &format!("{name}/etcd"));
                        }
                        s.failed.push(why);
                        fleet = None;
                    }
                }
            }
            if let Some(costs) = &steady {
                write_report(&machine, rounds, costs, &series);
            }
        }
        if let Some(f) = &fleet {
            let name = if etcd_group {
                "fleet-etcd-last"
            } else {
                "fleet-last"
            };
            keep_logs(f.c.lab.dir.path(), name);
            keep_logs(f.etcd.dir.path(), &format!("{name}/etcd"));
        }
    }
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

/// A round's progress line.
fn progress(r: &Run) -> String {
    let c = r.client();
    let event = match (&r.handover, &r.etcd) {
        (Some(h), _) => format!(
            "{} -> {} (term {} -> {}) elected after {:?} ms, shown after {:?} ms",
            h.old_leader, h.new_leader, h.old_term, h.new_term, h.elected_ms, h.show_ms
        ),
        (None, Some(e)) => format!(
            "members killed {:?}; fleet {} term {} -> {} term {}; writer after it {}{}{}",
            e.members,
            e.fleet_before.0,
            e.fleet_before.1,
            e.fleet_after.0,
            e.fleet_after.1,
            e.writer,
            e.writer_moved_ms
                .map(|ms| format!(" (shown after {ms} ms)"))
                .unwrap_or_default(),
            if e.rejoined_by_admin {
                "; the old writer rejoined by set_offline + set_online"
            } else {
                ""
            }
        ),
        (None, None) => String::new(),
    };
    format!(
        "{event}; client: {} failed writes of {}, longest gap {:.0?} ms (usual {:.1?}); then {}'s failure under {}: retrying client's first write on {} after {:?} ms, {} lost, {} duplicated",
        c.failed,
        c.acked + c.failed,
        c.longest_gap_ms,
        c.normal_gap_ms,
        r.killed,
        r.leader,
        peer(&r.killed),
        r.failover.step(RETRYING),
        r.failover.missing + c.missing,
        r.failover.duplicated + c.duplicated,
    )
}

/// The fleet's costs over 10 s of steady state (two monitors, no client writing).
fn steady_costs(f: &FleetLab) -> FleetCosts {
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

/// A series' client columns: (failed writes | acked | longest gap p50 / max | usual gap
/// p50, lost | duplicated).
fn client_cells(c: Vec<&ClientView>) -> (String, String) {
    let longest = summary(c.iter().filter_map(|c| c.longest_gap_ms));
    let usual = summary(c.iter().filter_map(|c| c.normal_gap_ms))
        .map(|s| format!("{:.1}", s.p50))
        .unwrap_or_else(|| "-".into());
    (
        format!(
            "{} | {} | {} / {} | {usual}",
            c.iter().map(|c| c.failed).sum::<usize>(),
            c.iter().map(|c| c.acked).sum::<usize>(),
            cell(longest, |s| s.p50),
            cell(longest, |s| s.max),
        ),
        format!(
            "{} | {}",
            c.iter().map(|c| c.missing).sum::<usize>(),
            c.iter().map(|c| c.duplicated).sum::<usize>()
        ),
    )
}

fn p50_p99(s: Option<Summary>) -> String {
    format!("{} / {}", cell(s, |s| s.p50), cell(s, |s| s.p99))
}

fn write_report(machine: &Machine, rounds: usize, steady: &FleetCosts, series: &[(Event, Series)]) {
    let done = series.iter().map(|x| x.1.runs.len()).min().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# Monitor fleet benchmark\n");
    let _ = writeln!(
        md,
        "{done} of {rounds} rounds done. One namespace lab for every round of the leader losses: 3 etcd members (session TTL 1 s), two monitors (mon1, mon2) in their own namespaces, 3 MariaDB 10.11 (db1 <-> db2, db3 a slave; GTID, semi-sync), an agent on each, and a client writing one row every 5 ms through the writer VIP (500 ms per attempt). After each hand-over the lost monitor rejoins as a standby (restarted; the frozen one woken up and its link up again), and after each writer failure db1 is started again, set online and given the writer role back with move_role: the monitors lead in turn. Kernel {}, {} cores, revision {}.\n",
        machine.kernel, machine.cores, machine.revision
    );
    let leader_series = || series.iter().filter(|(e, _)| !e.is_etcd());
    let etcd_series = || series.iter().filter(|(e, _)| e.is_etcd());
    if leader_series().next().is_some() {
        let _ = writeln!(md, "## Hand-over of the leading monitor, under writes\n");
        let _ = writeln!(md, "Times in ms after the signal. \"elected\": the new leader's `elected leader of the monitor fleet` log line; \"shown\": the first `mmm-control show` through the new leader (polled back to back) naming it. Client gaps: the longest time between two acknowledged writes over the client's whole run (warm-up, event, one second after), against the p50 of its gaps.\n\n| scenario | runs | failed runs | elected p50 / p99 | shown p50 / p99 | failed client writes (goal 0) | acked writes | longest gap p50 / max | usual gap p50 | lost | duplicated |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (loss, s) in leader_series() {
            let h = || s.runs.iter().filter_map(|r| r.handover.as_ref());
            let (client, data) = client_cells(h().map(|h| &h.client).collect());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {client} | {data} |",
                loss.key(),
                s.runs.len(),
                s.failed.len(),
                p50_p99(summary(h().filter_map(|h| h.elected_ms).map(|x| x as f64))),
                p50_p99(summary(h().filter_map(|h| h.show_ms).map(|x| x as f64))),
            );
        }
    }
    if etcd_series().next().is_some() {
        let _ = writeln!(md, "\n## etcd events, under writes\n");
        let _ = writeln!(md, "A lab of their own, with the timings docs/operations.md prescribes (etcd heartbeat 50 ms, election timeout 500 ms named in `[coordination]`, session_ttl left to its default: 4 s). Per round: etcd's raft leader (found with `etcdctl endpoint status`) or a follower SIGKILLed, the client writing 6 s more; or both followers SIGKILLed for 30 s (the majority lost), started again on their data, 5 s more; or blackhole routes to db1 on every etcd member for 30 s (as scenario f22; the fleet fails db1 over by design), healed, 5 s more. A killed member stays down through the writer failure that follows and is started again before the next round. Client gaps as above (the longest over the client's whole run against the p50 of its gaps; goal: within 50 ms of the usual gap). \"fleet leader changed\": runs whose fleet leader or term differed after the event. \"writer moved\": the cut only, ms from the cut to the first `show` naming db2 the writer; \"rejoined by admin\": the cut only, runs whose old writer did not replicate from the new one 5 s after the cut healed (seen: REPLICATION_FAIL, replication stopped), rejoined with `set_offline` and `set_online`.\n\n| event | runs | failed runs | failed client writes (goal 0) | acked writes | longest gap p50 / max | usual gap p50 | fleet leader changed | writer moved p50 / p99 | rejoined by admin | lost | duplicated |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (event, s) in etcd_series() {
            let e = || s.runs.iter().filter_map(|r| r.etcd.as_ref());
            let (client, data) = client_cells(e().map(|e| &e.client).collect());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {client} | {} | {} | {} | {data} |",
                event.key(),
                s.runs.len(),
                s.failed.len(),
                e().filter(|e| e.fleet_before != e.fleet_after).count(),
                if *event == Event::Etcd(EtcdEvent::WriterCut) {
                    p50_p99(summary(
                        e().filter_map(|e| e.writer_moved_ms).map(|x| x as f64),
                    ))
                } else {
                    "-".into()
                },
                e().filter(|e| e.rejoined_by_admin).count(),
            );
        }
    }
    let _ = writeln!(md, "\n## Then a writer failure (its mysqld SIGKILL)\n");
    let _ = writeln!(md, "After a hand-over, db1's mysqld under the new leader; after an etcd event, the writer's then (db1, or db2 after the cut: then the milestones' db2 is db1 and db3 is re-pointed to db1). As `bench failover` measures it (ms after the kill): the retrying client is a connection pool's view (1 s connect timeout, retries at once).\n\n| after | retrying client's first write on db2 p50 / p99 | a new connection reaches writable db2 p50 / p99 | detected p50 / p99 | db2 writable p50 / p99 | running client's longest gap p50 / max | lost | duplicated | replication errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (event, s) in series {
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
            event.key(),
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
        "\nRounds after which the killed writer could not rejoin, so a fresh lab served the next round: {}{}{}",
        fresh.len(),
        if fresh.is_empty() {
            ""
        } else {
            ". A write in flight when mysqld was killed, committed by the killed writer alone and never acknowledged, is an errant transaction on its return; the monitor rightly keeps it out (set_online refuses it), and the bench does not rebuild it.\n"
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
            "elected_ms": summary(s.runs.iter().filter_map(|r| r.handover.as_ref()?.elected_ms).map(|x| x as f64)),
            "show_ms": summary(s.runs.iter().filter_map(|r| r.handover.as_ref()?.show_ms).map(|x| x as f64)),
            "writer_moved_ms": summary(s.runs.iter().filter_map(|r| r.etcd.as_ref()?.writer_moved_ms).map(|x| x as f64)),
            "failed_client_writes": s.runs.iter().map(|r| r.client().failed).sum::<usize>(),
            "longest_gap_ms": summary(s.runs.iter().filter_map(|r| r.client().longest_gap_ms)),
            "retrying_first_write_ms": summary(s.runs.iter().filter_map(|r| r.failover.step(RETRYING)).map(|x| x as f64)),
            "runs": s.runs,
            "failed": s.failed,
            "fresh_labs": s.fresh_labs,
        })).collect::<Vec<_>>(),
    });
    mmm_tests::bench::write_report("fleet", &md, &report);
}
