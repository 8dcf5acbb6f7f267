//! `cargo xtask lab`: the whole system in network namespaces on this machine. Brings up
//! three MariaDB servers (db1 <-> db2, db3 a slave; GTID, semi-sync), an agent on each
//! (uid 65534, four capabilities), the monitor and a client; shows the cluster, kills the
//! active master's mysqld while the client writes through the writer VIP, prints the
//! failover timeline and the cluster again, checks the data, and tears everything down
//! (also on Ctrl-C). `--keep` leaves it up until Ctrl-C and says how to drive it.

use mmm_tests::failover::{self, kill_writer};
use mmm_tests::lab::Cluster;
use mmm_tests::netns::{cleanup_everything, require_root};
use std::time::{Duration, Instant};

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
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
    if let Err(e) = std::panic::catch_unwind(|| run(keep)) {
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
    section("mmm-control show");
    print!("{}", c.control(&["show"]).1);
    section("data");
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
    let ok = f.missing == 0 && f.duplicated == 0 && f.replication_errors.is_empty();
    let client_ns = c.lab.net.node("client").ns.clone();

    if keep {
        section("the lab stays up; Ctrl-C tears it down");
        let ctl = mmm_tests::bin("mmm-control");
        println!(
            "  {} --monitor {} show",
            ctl.display(),
            c.lab.dir.path().join("control.sock").display()
        );
        println!(
            "  ip netns exec {} mariadb -h 192.0.2.100 -u app -plab-app app",
            client_ns
        );
        println!("  logs: {}", c.lab.dir.path().display());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    c.stop_monitor();
    assert!(ok, "data check failed");
    println!("\nmmm lab: done, torn down.");
}
