//! `cargo xtask lab`: the whole system in network namespaces on this machine. Brings up
//! three MariaDB servers (db1 <-> db2, db3 a slave; GTID, semi-sync), an agent on each
//! (uid 65534, four capabilities), the monitor and a client; shows the cluster, kills the
//! active master's mysqld while the client writes through the writer VIP, prints the
//! failover timeline and the cluster again, checks the data, and tears everything down
//! (also on Ctrl-C). `--keep` leaves it up until Ctrl-C and says how to drive it.
//!
//! `--fleet`: the monitor fleet instead of one monitor: three etcd members and two
//! monitors (mon1, mon2) in their own namespaces. Shows the fleet (through the standby
//! too), SIGKILLs the leading monitor while the client writes (the hand-over: new leader
//! and term, the client's failed writes and longest gap), then kills the writer's mysqld
//! and shows the new leader's failover, and checks the data.

use mmm_tests::failover::{self, kill_writer, Failover};
use mmm_tests::fleet_lab::keys;
use mmm_tests::handover::{hand_over, watched, LeaderLoss};
use mmm_tests::lab::Cluster;
use mmm_tests::netns::{cleanup_everything, require_root};
use std::time::{Duration, Instant};

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    let fleet = std::env::args().any(|a| a == "--fleet");
    if !require_root("mmm-lab") {
        std::process::exit(2);
    }
    // Ctrl-C or SIGTERM: remove every namespace and process, then leave.
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("\nmmm-lab: interrupted, tearing down");
        cleanup_everything();
        std::process::exit(130);
    });
    let result = if fleet {
        std::panic::catch_unwind(|| run_fleet(keep))
    } else {
        std::panic::catch_unwind(|| run(keep))
    };
    if let Err(e) = result {
        cleanup_everything();
        std::panic::resume_unwind(e);
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

fn run(keep: bool) {
    let started = Instant::now();
    let mut c = Cluster::start("lab", &[]);
    c.start_monitor("monitor.log");
    c.bring_online();
    println!(
        "mmm lab up in {:.1} s: MariaDB + agent in {}, {}, {}; monitor in {}; client in {}",
        started.elapsed().as_secs_f64(),
        c.lab.net.node("db1").ns,
        c.lab.net.node("db2").ns,
        c.lab.net.node("db3").ns,
        c.lab.net.node("mon").ns,
        c.lab.net.node("client").ns
    );
    section("mmm-control show");
    print!("{}", c.control(&["show"]).1);

    section("kill -9 of the active master's mysqld (db1), the client writing through 192.0.2.100 every 5 ms");
    let f = kill_writer(&c, "monitor.log");
    print_failover(&f);
    section("mmm-control show");
    print!("{}", c.control(&["show"]).1);
    section("data");
    print_data(&f);
    let ok = f.missing == 0 && f.duplicated == 0 && f.replication_errors.is_empty();
    if keep {
        stay_up(&c, &[c.lab.dir.path().join("control.sock")]);
    }
    c.stop_monitor();
    assert!(ok, "data check failed");
    println!("\nmmm lab: done, torn down.");
}

/// The failover timeline, ms after the kill, as the monitor and the client saw it.
fn print_failover(f: &Failover) {
    section("failover timeline (ms after the kill)");
    // The monitor's own timeline already holds these two milestones.
    let mut steps: Vec<_> = f
        .steps
        .iter()
        .filter(|(s, _)| s != failover::FENCED && s != failover::WRITABLE)
        .cloned()
        .collect();
    steps.sort_by_key(|(_, ms)| ms.unwrap_or(i64::MAX));
    for (label, ms) in &steps {
        match ms {
            Some(ms) => println!("  {ms:>6} ms  {label}"),
            None => println!("       -     {label}: not seen"),
        }
    }
}

fn print_data(f: &Failover) {
    println!(
        "  {} acknowledged writes: {} missing and {} duplicated on db2 and db3; replication errors: {}",
        f.acked,
        f.missing,
        f.duplicated,
        if f.replication_errors.is_empty() { "none".to_string() } else { f.replication_errors.join(", ") }
    );
    println!(
        "  client: {} attempts failed during the failover (never acknowledged); longest gap between acknowledged writes {} ms",
        f.failed_attempts,
        f.write_gap_ms.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
    );
}

/// `--keep`: says how to reach the lab, then waits for Ctrl-C.
fn stay_up(c: &Cluster, sockets: &[std::path::PathBuf]) -> ! {
    section("the lab stays up; Ctrl-C tears it down");
    let ctl = mmm_tests::bin("mmm-control");
    for sock in sockets {
        println!("  {} --monitor {} show", ctl.display(), sock.display());
    }
    println!(
        "  ip netns exec {} mariadb -h 192.0.2.100 -u app -plab-app app",
        c.lab.net.node("client").ns
    );
    println!("  logs: {}", c.lab.dir.path().display());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run_fleet(keep: bool) {
    let started = Instant::now();
    let mut f = mmm_tests::handover::up("lab");
    println!(
        "mmm fleet lab up in {:.1} s: MariaDB + agent in db1..db3, etcd members in {}, {}, {} (192.0.2.31-33), monitors mon1 in {} and mon2 in {}; client in {}",
        started.elapsed().as_secs_f64(),
        f.c.lab.net.node("etcd1").ns,
        f.c.lab.net.node("etcd2").ns,
        f.c.lab.net.node("etcd3").ns,
        f.c.lab.net.node(&f.monitors["mon1"].node).ns,
        f.c.lab.net.node(&f.monitors["mon2"].node).ns,
        f.c.lab.net.node("client").ns
    );
    section("mmm-control show (through the leader, mon1)");
    print!("{}", f.control("mon1", &["show"]).1);
    section("mmm-control show (through the standby, mon2: it asks the leader)");
    print!("{}", f.control("mon2", &["show"]).1);
    println!(
        "  <prefix>/writer in etcd: {}",
        f.etcd_get(&keys().writer())
    );

    section(
        "kill -9 of the leading monitor (mon1), the client writing through 192.0.2.100 every 5 ms",
    );
    let h = hand_over(&mut f, "mon1", LeaderLoss::Kill);
    println!(
        "  new leader {} (term {} -> {}): its 'elected leader' log line {} ms after the kill, `show` naming it after {} ms",
        h.new_leader,
        h.old_term,
        h.new_term,
        h.elected_ms.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
        h.show_ms.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
    );
    println!(
        "  client: {} writes acknowledged, {} failed; longest gap between acknowledged writes {:.0} ms (usual {:.1} ms); {} missing, {} duplicated on db1..db3",
        h.client.acked,
        h.client.failed,
        h.client.longest_gap_ms.unwrap_or(f64::NAN),
        h.client.normal_gap_ms.unwrap_or(f64::NAN),
        h.client.missing,
        h.client.duplicated
    );
    assert!(!h.new_leader.is_empty(), "no new leader");
    let new = h.new_leader.clone();
    section(&format!("mmm-control show (through the new leader, {new})"));
    print!("{}", f.control(&new, &["show"]).1);

    section(&format!("kill -9 of the active master's mysqld (db1) under {new}, the client writing through 192.0.2.100 every 5 ms"));
    let fo = failover::measure_on(
        &f.c,
        failover::Scenario::Kill9,
        failover::Profile::Ours,
        watched(&f, &new),
    );
    print_failover(&fo);
    section(&format!("mmm-control show (through {new})"));
    print!("{}", f.control(&new, &["show"]).1);
    section("data");
    print_data(&fo);
    let ok = h.client.failed == 0
        && h.client.missing == 0
        && h.client.duplicated == 0
        && fo.missing == 0
        && fo.duplicated == 0
        && fo.replication_errors.is_empty();
    if keep {
        let sockets: Vec<_> = ["mon1", "mon2"]
            .iter()
            .map(|m| f.monitors[*m].socket.clone())
            .collect();
        stay_up(&f.c, &sockets);
    }
    drop(f);
    assert!(ok, "the hand-over or the data check failed");
    println!("\nmmm fleet lab: done, torn down.");
}
