//! Install-to-first-failover benchmark (measured, not asserted): from `dpkg -i` of the
//! freshly built packages, through the configuration steps of the README's "Install on
//! real machines" run as written, to the first failover of the namespace lab (db1's
//! mysqld SIGKILLed, `show` naming db2 the writer). The database servers already run
//! (an operator installs mmm next to a running cluster); the lab's own agents are
//! stopped before the clock starts, so every mmm process that counts is the installed one.
//! Each round installs on a machine without the packages or the mmm user and purges
//! everything again (mmm_tests::dist::Installed).
//!
//! What cannot run here as the README says, and what replaces it: `systemctl enable --now`
//! (no systemd inside the lab's namespaces) is the unit's command line, user and
//! capabilities through setpriv (as tests/tests/dist.rs); "then edit it" is writing the
//! lab's config over the installed example; `echo MMM_HOST=...` is the unit's
//! ${MMM_HOST} filled in per agent; the lab's config names no password files, so the
//! chown/chmod line has no `*.password`.
//!
//! `cargo xtask bench install` (root) builds the packages first (`cargo xtask dist`,
//! timed and reported apart, MMM_BENCH_DIST_MS). MMM_BENCH_ROUNDS: repetitions (default
//! 5). Writes target/bench/install.{md,json}.

use mmm_tests::bench::{Machine, Summary};
use mmm_tests::dist::{
    deb, output, start_installed_agents, start_installed_monitor, stop_lab_agents, Installed,
};
use mmm_tests::lab::{Cluster, Spec};
use mmm_tests::mariadb::Setup;
use mmm_tests::netns::{require_root, sh, wait_for};
use serde_json::json;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const CONFIG: &str = "/etc/mmm/mmm.toml";
const KEY: &str = "/etc/mmm/cluster.key";

/// The phases of one install, in order: (phase, ms it took).
type Phases = Vec<(&'static str, f64)>;

/// Runs `line` with sh as root on this machine (the operator's shell); panics with its
/// output when it fails.
fn operator(line: &str) {
    let (ok, said) = output(Command::new("sh").args(["-ec", line]));
    assert!(ok, "{line}:\n{said}");
}

fn install_once() -> (Phases, i32) {
    let (agent_deb, monitor_deb) = (deb("mmm-agent"), deb("mmm-monitor"));
    // Declared before the lab: dropped (purged) after its processes are gone.
    let mut installed = Installed::before();
    installed.adds(CONFIG);
    installed.adds(KEY);
    let spec = Spec {
        mysql_pid_file: false,
        ..Spec::three(Setup::default())
    };
    let mut c = Cluster::start_spec("binst", &[], &spec);
    stop_lab_agents(&mut c);
    let lab_config = std::fs::read_to_string(&c.lab.config)
        .expect("the lab's config")
        .replace(
            &c.lab.dir.path().join("cluster.key").display().to_string(),
            KEY,
        );
    let dir = c.lab.dir.path().display().to_string();

    let mut phases = Vec::new();
    let mut lap = Instant::now();
    let mut done = |phases: &mut Phases, name| {
        phases.push((name, lap.elapsed().as_secs_f64() * 1e3));
        lap = Instant::now();
    };
    let (ok, said) = output(
        Command::new("dpkg")
            .arg("-i")
            .arg(&agent_deb)
            .arg(&monitor_deb),
    );
    assert!(ok, "dpkg -i:\n{said}");
    done(&mut phases, "dpkg -i mmm-agent and mmm-monitor");

    operator(&format!(
        "install -m 0600 -o mmm -g mmm /etc/mmm/mmm.toml.example {CONFIG}"
    ));
    std::fs::write(CONFIG, &lab_config).expect("editing /etc/mmm/mmm.toml");
    operator(&format!("mmm-control gen-key > {KEY}"));
    operator("cd /etc/mmm && chown mmm:mmm mmm.toml cluster.key && chmod 600 mmm.toml cluster.key");
    operator(&format!("mmm-monitor --check-config {CONFIG}"));
    // The lab's part: the monitor's status file and control socket, and the agents'
    // state_dir, live in the lab's directory instead of /var/lib/mmm and /run/mmm.
    sh(&["chown", "mmm:mmm", &dir]);
    sh(&["chown", "-R", "mmm:mmm", &format!("{dir}/state")]);
    done(&mut phases, "config, key, --check-config");

    start_installed_agents(&mut c, CONFIG);
    done(&mut phases, "three agents started, listening");

    let checked = c.lab.net.try_exec("mon", &["mmm-control", "check-cluster"]);
    let check_code = checked.status.code().unwrap_or(-1);
    done(&mut phases, "mmm-control check-cluster");

    start_installed_monitor(&mut c, CONFIG);
    done(&mut phases, "monitor started, answering");

    for host in ["db1", "db2", "db3"] {
        let online = wait_for(T, || {
            let out = c
                .lab
                .net
                .try_exec("mon", &["mmm-control", "set_online", host]);
            out.status.success().then_some(())
        });
        assert!(
            online.is_some(),
            "set_online {host}:\n{}",
            c.control(&["show"]).1
        );
    }
    c.wait_show("db1", "writer(192.0.2.100)", T);
    for host in ["db2", "db3"] {
        c.wait_show(host, "reader(", T);
    }
    done(&mut phases, "set_online each host, db1 the writer");

    c.lab.net.signal(c.db("db1").pid, "KILL");
    c.wait_show("db2", "writer(192.0.2.100)", T);
    done(
        &mut phases,
        "db1's mysqld SIGKILL -> show names db2 the writer",
    );
    (phases, check_code)
}

fn main() {
    if !require_root("bench install") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(5);
    let dist_ms: Option<f64> = std::env::var("MMM_BENCH_DIST_MS")
        .ok()
        .and_then(|s| s.parse().ok());
    let machine = Machine::here();
    let started = Instant::now();
    let mut runs: Vec<Phases> = Vec::new();
    let mut checks = Vec::new();
    let mut failed = Vec::new();
    for round in 0..rounds {
        match std::panic::catch_unwind(install_once) {
            Ok((phases, check)) => {
                let total: f64 = phases.iter().map(|p| p.1).sum();
                eprintln!(
                    "[{:>5.0} s] round {}/{rounds}: dpkg -i to the first failover {total:.0} ms (check-cluster exit {check})",
                    started.elapsed().as_secs_f64(),
                    round + 1
                );
                runs.push(phases);
                checks.push(check);
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                eprintln!("round {}: the run failed: {why}", round + 1);
                failed.push(why);
            }
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Install to first failover\n");
    let _ = writeln!(
        md,
        "{} of {rounds} rounds done; kernel {}, {} cores, revision {}. ms per phase, from `dpkg -i` of the packages to `show` naming db2 the writer after db1's mysqld was SIGKILLed; the servers were running before. Building the packages (`cargo xtask dist`, not counted): {}.\n",
        runs.len(),
        machine.kernel,
        machine.cores,
        machine.revision,
        dist_ms
            .map(|ms| format!("{:.0} s", ms / 1e3))
            .unwrap_or_else(|| "not timed".into())
    );
    let _ = writeln!(
        md,
        "| phase | n | min | p50 | p99 | max |\n| --- | --- | --- | --- | --- | --- |"
    );
    let names: Vec<&str> = runs
        .first()
        .map(|r| r.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let mut summaries = Vec::new();
    let total = Summary::of(runs.iter().map(|r| r.iter().map(|p| p.1).sum()).collect());
    for (i, name) in names.iter().enumerate() {
        let s = Summary::of(runs.iter().map(|r| r[i].1).collect());
        summaries.push(json!({"phase": name, "summary": s}));
        row(&mut md, name, s);
    }
    row(&mut md, "**total: dpkg -i to the first failover**", total);
    let _ = writeln!(
        md,
        "\ncheck-cluster's exit codes: {checks:?} (0 clean, 1 an ERROR found; not a condition of the run)."
    );
    if !failed.is_empty() {
        let _ = writeln!(md, "\nFailed runs:\n- {}", failed.join("\n- "));
    }
    let report = json!({
        "machine": machine,
        "rounds": rounds,
        "dist_ms": dist_ms,
        "phases": summaries,
        "total": total,
        "check_cluster_exit": checks,
        "runs": runs,
        "failed": failed,
    });
    let written = mmm_tests::bench::write_report("install", &md, &report);
    print!("{md}");
    println!("\nwritten: {}", written.display());
}

fn row(md: &mut String, name: &str, s: Option<Summary>) {
    let f = |pick: fn(&Summary) -> f64| {
        s.map(|s| format!("{:.0}", pick(&s)))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} |",
        s.map(|s| s.n).unwrap_or(0),
        f(|s| s.min),
        f(|s| s.p50),
        f(|s| s.p99),
        f(|s| s.max)
    );
}
