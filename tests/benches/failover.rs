//! Failover benchmark (measured, not asserted): the four failovers of the active master
//! (mysqld SIGKILL, mysqld SIGTERM, host frozen with its link down, switchover), each
//! with our configuration and with MMM 2.2.1's defaults run by the same binaries, every
//! run on a fresh namespace lab under a client writing through the writer VIP. Reports
//! the timeline of every step as min / p50 / p99 / max, MMM / ours ratios, data safety
//! (acknowledged writes lost or duplicated, replication errors, the client's longest gap
//! between acknowledged writes, hosts left holding the writer VIP), and what the daemons
//! cost idle and during the failover. Writes target/bench/report.{md,json} after every
//! round (an interrupted run leaves a report of what it measured); `cargo xtask bench
//! failover` then draws target/bench/failover.png from report.json.
//!
//! `cargo xtask bench failover` (root). MMM_BENCH_ROUNDS: repetitions (default 20);
//! MMM_BENCH_SCENARIOS: kill9,sigterm,host-lost,switchover (default all);
//! MMM_BENCH_PROFILES: ours,mmm (default both).
//!
//! Every run also has an HAProxy client: a pool like the retrying client, connecting
//! through Debian's HAProxy in the client's namespace, which routes by the agents'
//! `/writer` check (mmm_tests::haproxy); its first write on the new writer is reported
//! next to the retrying client's, which writes through the VIP.

use mmm_tests::bench::{Machine, Summary};
use mmm_tests::costs::Costs;
use mmm_tests::failover::{
    measure_haproxy, Failover, Profile, Scenario, HAPROXY, MILESTONES, NEW_CONNECTION, RETRYING,
};
use mmm_tests::haproxy::{Haproxy, AGENT_HTTP};
use mmm_tests::lab::Cluster;
use mmm_tests::netns::require_root;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::time::Instant;

/// The runs of one scenario with one profile.
#[derive(Default, Serialize)]
struct Series {
    runs: Vec<Failover>,
    /// Runs that did not complete, with the reason.
    failed: Vec<String>,
}

fn env_list<T>(name: &str, all: &[T], parse: impl Fn(&str) -> Option<T>) -> Vec<T>
where
    T: Copy,
{
    match std::env::var(name) {
        Err(_) => all.to_vec(),
        Ok(list) => list
            .split(',')
            .map(|s| parse(s.trim()).unwrap_or_else(|| panic!("{name}: unknown {s:?}")))
            .collect(),
    }
}

fn main() {
    if !require_root("bench failover") {
        return;
    }
    assert!(
        mmm_tests::haproxy::installed(),
        "haproxy is not installed: apt-get install haproxy (cargo xtask bench installs it)"
    );
    let rounds = mmm_tests::bench::rounds(20);
    let scenarios = env_list("MMM_BENCH_SCENARIOS", &Scenario::ALL, Scenario::parse);
    let profiles = env_list("MMM_BENCH_PROFILES", &Profile::ALL, |s| {
        Profile::KNOWN.into_iter().find(|p| p.key() == s)
    });
    let machine = Machine::here();
    let mut series: Vec<(Scenario, Profile, Series)> = scenarios
        .iter()
        .flat_map(|s| profiles.iter().map(move |p| (*s, *p, Series::default())))
        .collect();
    let started = Instant::now();
    // Rounds outermost: noise on the shared machine spreads over every series alike.
    for round in 0..rounds {
        for (scenario, profile, s) in series.iter_mut() {
            let (scenario, profile) = (*scenario, *profile);
            let run = std::panic::catch_unwind(|| {
                let mut config = profile.config().to_vec();
                config.push(AGENT_HTTP);
                let mut c = Cluster::start("bfail", &config);
                c.start_monitor("monitor.log");
                c.bring_online();
                let _haproxy = Haproxy::start(&c, std::time::Duration::from_secs(30));
                let f = measure_haproxy(&c, scenario, profile, "monitor.log");
                c.stop_monitor();
                keep_logs(
                    &c,
                    &format!("{}-{}-{}", scenario.key(), profile.key(), round + 1),
                );
                f
            });
            match run {
                Ok(f) => {
                    eprintln!(
                        "[{:>5.0} s] round {}/{rounds} {} {}: retrying client's first write after {:?} ms, the HAProxy client's after {:?} ms, a new connection after {:?} ms, {} acked, {} lost, {} duplicated",
                        started.elapsed().as_secs_f64(),
                        round + 1,
                        scenario.key(),
                        profile.key(),
                        f.step(RETRYING),
                        f.step(HAPROXY),
                        f.step(NEW_CONNECTION),
                        f.acked,
                        f.missing,
                        f.duplicated
                    );
                    s.runs.push(f);
                }
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into());
                    eprintln!(
                        "round {} {} {}: the run failed: {why}",
                        round + 1,
                        scenario.key(),
                        profile.key()
                    );
                    s.failed.push(why);
                }
            }
        }
        write_report(&machine, rounds, &series);
    }
    let dir = mmm_tests::bench::dir();
    print!(
        "{}",
        std::fs::read_to_string(dir.join("report.md")).unwrap_or_default()
    );
    println!(
        "\nwritten: {} and report.json ({:.0} s)",
        dir.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
}

/// Copies the run's logs (monitor, agents, MariaDB) to target/bench/logs/NAME/.
fn keep_logs(c: &Cluster, name: &str) {
    mmm_tests::bench::keep_logs(c.lab.dir.path(), name);
}

/// Summaries of every step of a series, in the order the runs logged them.
fn steps(s: &Series) -> Vec<(String, Option<Summary>)> {
    let mut order: Vec<String> = Vec::new();
    for r in &s.runs {
        for (step, _) in &r.steps {
            if !order.contains(step) {
                order.push(step.clone());
            }
        }
    }
    order
        .into_iter()
        .map(|step| {
            let v = s
                .runs
                .iter()
                .filter_map(|r| r.steps.iter().find(|(x, _)| *x == step).and_then(|x| x.1))
                .map(|ms| ms as f64)
                .collect();
            (step, Summary::of(v))
        })
        .collect()
}

fn milestone(s: &Series, name: &str) -> Option<Summary> {
    Summary::of(
        s.runs
            .iter()
            .filter_map(|r| r.step(name))
            .map(|ms| ms as f64)
            .collect(),
    )
}

fn costs_p50(s: &Series, pick: impl Fn(&Failover) -> &Costs) -> Option<Costs> {
    let p50 = |f: &dyn Fn(&Costs) -> f64| {
        Summary::of(s.runs.iter().map(|r| f(pick(r))).collect()).map(|x| x.p50)
    };
    Some(Costs {
        window_ms: p50(&|c| c.window_ms as f64)? as u64,
        monitor_cpu_pct: p50(&|c| c.monitor_cpu_pct)?,
        agent_cpu_pct: p50(&|c| c.agent_cpu_pct)?,
        monitor_rss_kib: p50(&|c| c.monitor_rss_kib as f64)? as u64,
        agent_rss_kib: p50(&|c| c.agent_rss_kib as f64)? as u64,
        link_bytes_per_s: p50(&|c| c.link_bytes_per_s)?,
    })
}

fn cell(s: Option<Summary>, f: impl Fn(&Summary) -> f64) -> String {
    s.map(|s| format!("{:.0}", f(&s)))
        .unwrap_or_else(|| "-".into())
}

fn write_report(machine: &Machine, rounds: usize, series: &[(Scenario, Profile, Series)]) {
    let find = |sc: Scenario, p: Profile| {
        series
            .iter()
            .find(|(a, b, _)| *a == sc && *b == p)
            .map(|x| &x.2)
    };
    let mut scenarios: Vec<Scenario> = Vec::new();
    for (sc, _, _) in series {
        if !scenarios.contains(sc) {
            scenarios.push(*sc);
        }
    }
    let done = series.iter().map(|x| x.2.runs.len()).min().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# Failover benchmark\n");
    let _ = writeln!(
        md,
        "{done} of {rounds} rounds done; every run on a fresh namespace lab: 3 MariaDB 10.11 (db1 <-> db2 master-master, db3 a slave of the writer; GTID; semi-sync on the masters), an agent on each, the monitor, and a client writing one row every 5 ms through the writer VIP. Kernel {}, {} cores, revision {}.\n",
        machine.kernel, machine.cores, machine.revision
    );
    for p in Profile::KNOWN {
        let _ = writeln!(md, "- {}: {}", p.key(), p.describe());
    }
    let _ = writeln!(md, "\nTimes are ms after the event (the signal, the freeze, or the `move_role` command). \"A new connection ... reaches writable db2\": the first of the connections opened every 10 ms through the VIP that got an answer from db2 with read_only off. \"The running client's first write\": the writing client, which gives every attempt 500 ms, reconnects on errors and keeps its connection otherwise.\n");

    let _ = writeln!(
        md,
        "## Headline: the retrying client's first write on the new writer (p50 / p99 ms)\n"
    );
    let _ = writeln!(
        md,
        "A client as a connection pool behaves: connect timeout 1 s, a failed attempt retried at once, writing through the VIP all along.\n\n| scenario | ours p50 | ours p99 | product defaults p50 | product defaults p99 | MMM p50 | MMM p99 |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for sc in &scenarios {
        let get = |p| find(*sc, p).and_then(|s| milestone(s, RETRYING));
        let (ours, defaults, mmm) = (
            get(Profile::Ours),
            get(Profile::Defaults),
            get(Profile::Mmm),
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            sc.key(),
            cell(ours, |s| s.p50),
            cell(ours, |s| s.p99),
            cell(defaults, |s| s.p50),
            cell(defaults, |s| s.p99),
            cell(mmm, |s| s.p50),
            cell(mmm, |s| s.p99)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "## The HAProxy client next to the VIP client (p50 / p99 ms)\n\nThe same pool connecting through Debian's HAProxy in the client's namespace, which sends connections to the master whose agent answers 200 on `/writer` (checked every 200 ms, fall 1, rise 1; tests/src/haproxy.rs), and the retrying client through the writer VIP, in the same runs.\n\n| scenario | profile | runs | VIP client p50 | VIP client p99 | HAProxy client p50 | HAProxy client p99 |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for (sc, p, s) in series {
        let (vip, proxied) = (milestone(s, RETRYING), milestone(s, HAPROXY));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            sc.key(),
            p.key(),
            s.runs.len(),
            cell(vip, |s| s.p50),
            cell(vip, |s| s.p99),
            cell(proxied, |s| s.p50),
            cell(proxied, |s| s.p99)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## Ours vs the MMM defaults (p50 / p99 ms)\n");
    let _ = writeln!(
        md,
        "| scenario | milestone | ours p50 | ours p99 | MMM p50 | MMM p99 | MMM / ours (p50) |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut ratios = Vec::new();
    for sc in &scenarios {
        for m in MILESTONES {
            let ours = find(*sc, Profile::Ours).and_then(|s| milestone(s, m));
            let mmm = find(*sc, Profile::Mmm).and_then(|s| milestone(s, m));
            // Undefined where ours is 0 (a switchover's detection is its command).
            let ratio = ours
                .zip(mmm)
                .filter(|(o, _)| o.p50 >= 1.0)
                .map(|(o, x)| x.p50 / o.p50);
            if m == RETRYING || m == NEW_CONNECTION {
                ratios.push(json!({"scenario": sc.key(), "milestone": m, "ratio_p50": ratio}));
            }
            let _ = writeln!(
                md,
                "| {} | {m} | {} | {} | {} | {} | {} |",
                sc.key(),
                cell(ours, |s| s.p50),
                cell(ours, |s| s.p99),
                cell(mmm, |s| s.p50),
                cell(mmm, |s| s.p99),
                ratio
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }

    let _ = writeln!(md, "\n## Data safety (all runs)\n");
    let _ = writeln!(md, "| scenario | profile | runs | failed runs | acked writes | lost | duplicated | replication errors | client's longest write gap p50 / max ms | runs ending with 2 writer VIPs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (sc, p, s) in series {
        let gap = Summary::of(
            s.runs
                .iter()
                .filter_map(|r| r.write_gap_ms)
                .map(|x| x as f64)
                .collect(),
        );
        let errors: Vec<String> = s
            .runs
            .iter()
            .flat_map(|r| r.replication_errors.clone())
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            sc.key(),
            p.key(),
            s.runs.len(),
            s.failed.len(),
            s.runs.iter().map(|r| r.acked).sum::<usize>(),
            s.runs.iter().map(|r| r.missing).sum::<usize>(),
            s.runs.iter().map(|r| r.duplicated).sum::<usize>(),
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
            cell(gap, |s| s.p50),
            cell(gap, |s| s.max),
            s.runs.iter().filter(|r| r.vip_holders.len() > 1).count()
        );
    }
    let failures: Vec<String> = series
        .iter()
        .flat_map(|(sc, p, s)| {
            s.failed
                .iter()
                .map(move |w| format!("- {} {}: {w}", sc.key(), p.key()))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\nFailed runs:\n{}", failures.join("\n"));
    }

    let _ = writeln!(md, "\n## Costs (p50 over the runs)\n");
    let _ = writeln!(md, "| profile | window | monitor CPU (% of a core) | agent CPU (% of a core, mean of 3) | monitor RSS MiB | largest agent RSS MiB | payload bytes/s per agent link |\n| --- | --- | --- | --- | --- | --- | --- |");
    let mut costs_json = Vec::new();
    for p in Profile::KNOWN {
        let all = Series {
            runs: series
                .iter()
                .filter(|x| x.1 == p)
                .flat_map(|x| x.2.runs.clone())
                .collect(),
            failed: Vec::new(),
        };
        for (window, c) in [
            ("idle, 2 s, client writing", costs_p50(&all, |r| &r.idle)),
            ("event -> failover done", costs_p50(&all, |r| &r.during)),
        ] {
            let Some(c) = c else { continue };
            let _ = writeln!(
                md,
                "| {} | {window} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                p.key(),
                c.monitor_cpu_pct,
                c.agent_cpu_pct,
                c.monitor_rss_kib as f64 / 1024.0,
                c.agent_rss_kib as f64 / 1024.0,
                if window.starts_with("idle") {
                    format!("{:.0}", c.link_bytes_per_s)
                } else {
                    "-".into()
                }
            );
            costs_json.push(json!({"profile": p.key(), "window": window, "p50": c}));
        }
    }

    let probe: Option<serde_json::Value> =
        std::fs::read_to_string(mmm_tests::bench::dir().join("probe.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
    let _ = writeln!(
        md,
        "\n## Probe (signal to mysqld -> event received on the monitor's link)\n"
    );
    match probe
        .as_ref()
        .and_then(|p| p.get("ms"))
        .and_then(|m| m.as_object())
    {
        Some(ms) => {
            let _ = writeln!(
                md,
                "From `cargo xtask bench probe` (revision {}).\n\n| signal -> event | n | min | p50 | p99 | max |\n| --- | --- | --- | --- | --- | --- |",
                probe
                    .as_ref()
                    .and_then(|p| p.pointer("/machine/revision"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            );
            for (name, s) in ms {
                if let Ok(s) = serde_json::from_value::<serde_json::Map<_, _>>(s.clone()) {
                    let f = |k: &str| s.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                    let _ = writeln!(
                        md,
                        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                        f("n"),
                        f("min"),
                        f("p50"),
                        f("p99"),
                        f("max")
                    );
                }
            }
        }
        None => {
            let _ = writeln!(md, "Not measured in this run: `cargo xtask bench probe` writes target/bench/probe.json (`cargo xtask bench` runs it first).");
        }
    }

    let _ = writeln!(md, "\n## Every step\n");
    let mut series_json = Vec::new();
    for (sc, p, s) in series {
        let _ = writeln!(
            md,
            "### {}, {} ({} runs)\n\n| step (ms after the event) | n | min | p50 | p99 | max |\n| --- | --- | --- | --- | --- | --- |",
            sc.title(),
            p.key(),
            s.runs.len()
        );
        let st = steps(s);
        for (step, sum) in &st {
            let _ = writeln!(
                md,
                "| {step} | {} | {} | {} | {} | {} |",
                sum.map(|s| s.n).unwrap_or(0),
                cell(*sum, |s| s.min),
                cell(*sum, |s| s.p50),
                cell(*sum, |s| s.p99),
                cell(*sum, |s| s.max)
            );
        }
        let _ = writeln!(md);
        series_json.push(json!({
            "scenario": sc.key(),
            "title": sc.title(),
            "profile": p.key(),
            "steps_ms": st.iter().map(|(k, v)| json!({"step": k, "summary": v})).collect::<Vec<_>>(),
            "milestones_ms": MILESTONES.iter().chain([&HAPROXY]).map(|m| json!({"milestone": m, "summary": milestone(s, m)})).collect::<Vec<_>>(),
            "runs": s.runs,
            "failed": s.failed,
        }));
    }
    let report = json!({
        "machine": machine,
        "rounds": rounds,
        "rounds_done": done,
        "profiles": Profile::KNOWN.iter().map(|p| json!({"key": p.key(), "describe": p.describe()})).collect::<Vec<_>>(),
        "milestones": MILESTONES.iter().chain([&HAPROXY]).collect::<Vec<_>>(),
        "ratios_mmm_over_ours": ratios,
        "costs": costs_json,
        "probe": probe,
        "series": series_json,
    });
    mmm_tests::bench::write_report("report", &md, &report);
}
