//! `cargo xtask lab`: the whole system in network namespaces on this machine. Brings up
//! three MariaDB servers (db1 <-> db2, db3 a slave; GTID, semi-sync), an agent on each
//! (uid 65534, four capabilities), the monitor and a client; shows the cluster, kills the
//! active master's mysqld while the client writes through the writer VIP, prints the
//! failover timeline and the cluster again, checks the data, and tears everything down
//! (also on Ctrl-C). `--keep` leaves it up until Ctrl-C and says how to drive it.

use mmm_tests::client::{verify, Writer, TABLE};
use mmm_tests::lab::{ip, Cluster};
use mmm_tests::netns::{cleanup_everything, require_root, wait_for};
use std::time::{Duration, Instant, SystemTime};

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

/// Wall-clock milliseconds of a tracing line's timestamp (`2026-11-22T05:33:58.146913Z`).
fn log_time_ms(line: &str) -> Option<u64> {
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.replace("[2m", "").replace("[0m", "");
    let t = clean.find('T').map(|i| &clean[i + 1..])?;
    let hms = t.get(..15)?;
    let (h, m, s) = (
        hms.get(0..2)?.parse::<u64>().ok()?,
        hms.get(3..5)?.parse::<u64>().ok()?,
        hms.get(6..15)?.parse::<f64>().ok()?,
    );
    let day_ms = (h * 3600 + m * 60) * 1000 + (s * 1000.0) as u64;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(now - now % 86_400_000 + day_ms)
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

    c.db("db1").sql(TABLE);
    std::thread::sleep(Duration::from_millis(300));
    let client_ns = c.lab.net.node("client").ns.clone();
    let writer = Writer::start(&client_ns, "192.0.2.100", Duration::from_millis(5));
    let warm = wait_for(Duration::from_secs(10), || {
        (writer.log().acked.len() > 20).then_some(())
    });
    assert!(
        warm.is_some(),
        "the client cannot write through the writer VIP: {:?}",
        writer.log().failed.last()
    );

    section("kill -9 of the active master's mysqld (db1), the client writing through 192.0.2.100 every 5 ms");
    let kill_wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let kill = Instant::now();
    c.lab.net.signal(c.db("db1").pid, "KILL");
    let db2_mac = c.lab.net.node("db2").mac.clone();
    let arp = wait_for(Duration::from_secs(15), || {
        (c.lab.net.neigh_mac("client", ip(100)).as_deref() == Some(db2_mac.as_str()))
            .then(|| kill.elapsed())
    });
    let promoted = wait_for(Duration::from_secs(15), || {
        c.show_line("db2").contains("writer(").then_some(())
    });
    // The first write the new master (server_id 2) took, as the client saw it acknowledged.
    let resumed = wait_for(Duration::from_secs(15), || {
        let first = c
            .db("db2")
            .try_sql("SELECT MIN(id) FROM app.w WHERE sid = 2")
            .ok()?
            .parse::<u64>()
            .ok()?;
        writer
            .log()
            .acked
            .iter()
            .find(|(id, _)| *id == first)
            .map(|(_, t)| *t - kill)
    });
    let repointed = wait_for(Duration::from_secs(15), || {
        (c.db("db3").slave_status("Master_Host") == "192.0.2.12"
            && c.db("db3").slave_status("Slave_SQL_Running") == "Yes")
            .then(|| kill.elapsed())
    });
    // Keep writing a while on the new master.
    std::thread::sleep(Duration::from_secs(1));
    let log = writer.stop();

    section("failover timeline (ms after the kill)");
    let mlog = c.monitor_log("monitor.log");
    // The last occurrence: earlier ones belong to the initial assignment of the writer.
    let at = |needle: &str| {
        mlog.lines()
            .rev()
            .find(|l| l.contains(needle))
            .and_then(log_time_ms)
            .map(|t| t as i64 - kill_wall as i64)
    };
    let show = |label: &str, ms: Option<i64>| match ms {
        Some(ms) => println!("  {ms:>6} ms  {label}"),
        None => println!("       -     {label}: not seen"),
    };
    show(
        "monitor: db1 HARD_OFFLINE (detected)",
        at("changed from ONLINE to HARD_OFFLINE"),
    );
    if let Some(line) = mlog
        .lines()
        .rev()
        .find(|l| l.contains("is the new writer after"))
    {
        let start = at("Moving the writer role to");
        if let Some(steps) = line
            .split(" ms: ")
            .nth(1)
            .map(|s| s.split(" host=").next().unwrap_or(s))
        {
            for step in steps.split("; ") {
                let (off, what) = step.trim().split_once("ms ").unwrap_or(("", step));
                let off: Option<i64> = off.trim_start_matches('+').parse().ok();
                show(
                    &format!("monitor: {}", what.trim()),
                    start.zip(off).map(|(s, o)| s + o),
                );
            }
        }
    }
    show(
        "client's ARP entry for 192.0.2.100 -> db2's MAC",
        arp.map(|d| d.as_millis() as i64),
    );
    show(
        "first client write accepted on the new master",
        resumed.map(|d| d.as_millis() as i64),
    );
    show(
        "db3 replicating from db2",
        repointed.map(|d| d.as_millis() as i64),
    );
    if promoted.is_none() {
        println!(
            "  (db2 never took the writer role; monitor log in {})",
            c.lab.dir.path().display()
        );
    }

    section("mmm-control show");
    print!("{}", c.control(&["show"]).1);

    section("data");
    let mut ok = true;
    for h in ["db2", "db3"] {
        let synced = wait_for(Duration::from_secs(10), || {
            let (missing, _) = verify(c.db(h), &log.acked);
            missing.is_empty().then_some(())
        });
        let (missing, dup) = verify(c.db(h), &log.acked);
        // Errors that mean lost or duplicated data: duplicate key, missing binlog events
        // (a slave ahead of its master), and GTID divergence under gtid_strict_mode.
        let bad = ["1062", "1236", "1950"];
        let errors: Vec<String> = [
            c.db(h).slave_status("Last_IO_Errno"),
            c.db(h).slave_status("Last_SQL_Errno"),
        ]
        .into_iter()
        .filter(|e| bad.contains(&e.as_str()))
        .collect();
        println!(
            "  {h}: {} acknowledged writes, {} missing, {} duplicated, replication errors: {}",
            log.acked.len(),
            missing.len(),
            dup.len(),
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        );
        ok &= synced.is_some() && dup.is_empty() && errors.is_empty();
    }
    println!("  client: {} attempts failed during the failover (outcome unknown to the client, never acknowledged)", log.failed.len());

    if keep {
        section("the lab stays up; Ctrl-C tears it down");
        let ctl = mmm_tests::bin("mmm-control");
        println!(
            "  ip netns exec {} {} --monitor 127.0.0.1:9988 show",
            c.lab.net.node("mon").ns,
            ctl.display()
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
