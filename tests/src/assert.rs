//! What the end-to-end scenarios check after a failover: where the writer is (show, the
//! client's ARP entry, read_only, replication), and that every acknowledged write is on
//! every server exactly once.

use crate::client::{verify, WriteLog, Writer};
use crate::lab::{ip, Cluster};
use crate::netns::wait_for;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A client writing through the writer VIP every 5 ms, once it has written.
pub fn writer(c: &Cluster) -> Writer {
    let w = Writer::start(
        &c.lab.net.node("client").ns,
        "192.0.2.100",
        Duration::from_millis(5),
    );
    let ok = wait_for(T, || (w.log().acked.len() > 10).then_some(()));
    assert!(
        ok.is_some(),
        "client cannot write through the VIP: {:?}",
        w.log().failed.last()
    );
    w
}

/// The writer is `host`: the client's ARP entry for the VIP has its MAC, it alone is
/// writable, and every other live server replicates from it with both threads running.
pub fn assert_writer(c: &Cluster, host: &str, slaves: &[&str]) {
    c.wait_show(host, "writer(192.0.2.100)", T);
    assert_servers(c, host, slaves);
}

/// As [`assert_writer`], without asking the monitor (a fleet asks its own).
pub fn assert_servers(c: &Cluster, host: &str, slaves: &[&str]) {
    let mac = c.lab.net.node(host).mac.clone();
    let switched = wait_for(T, || {
        // Only to make the client resolve the VIP: an unanswered ping during the move is
        // no failure (exec would panic on it).
        c.lab
            .net
            .try_exec("client", &["ping", "-c1", "-W1", "192.0.2.100"]);
        (c.lab.net.neigh_mac("client", ip(100)).as_deref() == Some(mac.as_str())).then_some(())
    });
    assert!(
        switched.is_some(),
        "client's ARP entry for the VIP is {:?}, not {host}'s {mac}",
        c.lab.net.neigh_mac("client", ip(100))
    );
    assert!(!c.db(host).read_only(), "{host} must be writable");
    let host_ip = c.lab.net.node(host).ip.to_string();
    for s in slaves {
        assert!(c.db(s).read_only(), "{s} must be read-only");
        let ok = wait_for(T, || {
            let db = c.db(s);
            (db.slave_status("Master_Host") == host_ip
                && db.slave_status("Slave_IO_Running") == "Yes"
                && db.slave_status("Slave_SQL_Running") == "Yes")
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "{s} does not replicate from {host}: source {}, IO {} ({}), SQL {} ({})",
            c.db(s).slave_status("Master_Host"),
            c.db(s).slave_status("Slave_IO_Running"),
            c.db(s).slave_status("Last_IO_Error"),
            c.db(s).slave_status("Slave_SQL_Running"),
            c.db(s).slave_status("Last_SQL_Error")
        );
    }
}

/// Every acknowledged write is on each of `hosts` exactly once, and no server shows a
/// replication error that means lost or duplicated data.
pub fn assert_data(c: &Cluster, log: &WriteLog, hosts: &[&str]) {
    assert!(!log.acked.is_empty());
    for h in hosts {
        let ok = wait_for(T, || verify(c.db(h), &log.acked).0.is_empty().then_some(()));
        let (missing, dup) = verify(c.db(h), &log.acked);
        assert!(
            ok.is_some() && missing.is_empty(),
            "{h} lacks acknowledged rows {missing:?}"
        );
        assert!(dup.is_empty(), "{h} has duplicated rows {dup:?}");
        for field in ["Last_IO_Errno", "Last_SQL_Errno"] {
            let e = c.db(h).slave_status(field);
            assert!(
                !["1062", "1236", "1950"].contains(&e.as_str()),
                "{h} {field} = {e}"
            );
        }
    }
}

/// Watches the servers every 100 ms until [`WriterWatch::stop`]: two of them writable
/// (read_only = 0), or two holding the writer VIP, in two passes in a row (so a handover
/// that falls between two reads is not taken for two writers), is recorded with the
/// time. A server that does not answer counts as no writer.
pub struct WriterWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl WriterWatch {
    pub fn start(c: &Cluster, hosts: &[&str]) -> WriterWatch {
        let servers: Vec<(String, std::path::PathBuf, String)> = hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    c.db(h).socket.clone(),
                    c.lab.net.node(h).ns.clone(),
                )
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let pass = || {
                let mut writable = Vec::new();
                let mut vip = Vec::new();
                for (host, socket, ns) in &servers {
                    let ro = std::process::Command::new("mariadb")
                        .args(["--no-defaults", "-uroot", "-N", "-B"])
                        .arg(format!("--socket={}", socket.display()))
                        .args(["-e", "SELECT @@GLOBAL.read_only"])
                        .output();
                    if ro.is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"0")) {
                        writable.push(host.clone());
                    }
                    let addr = std::process::Command::new("ip")
                        .args([
                            "netns", "exec", ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0",
                        ])
                        .output();
                    if addr
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" 192.0.2.100/"))
                    {
                        vip.push(host.clone());
                    }
                }
                (writable, vip)
            };
            let mut seen = Vec::new();
            let mut before = (Vec::new(), Vec::new());
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let now = pass();
                for (what, a, b) in [
                    ("writable", &before.0, &now.0),
                    ("holding the writer VIP", &before.1, &now.1),
                ] {
                    if a.len() > 1 && b.len() > 1 {
                        seen.push(format!(
                            "{:.1?}: {b:?} {what} (and {a:?} one pass before)",
                            started.elapsed()
                        ));
                    }
                }
                before = now;
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        WriterWatch { stop, thread }
    }

    /// Stops watching; every moment two servers were writers.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the writer watch")
    }
}

/// Which server took each write in app.w (its `sid` column, the server_id that ran the
/// INSERT), read on each of `hosts`: id -> server_id.
pub fn writers_of_rows(c: &Cluster, hosts: &[&str]) -> std::collections::HashMap<u64, u32> {
    hosts
        .iter()
        .flat_map(|h| {
            c.db(h)
                .sql("SELECT id, sid FROM app.w")
                .lines()
                .filter_map(|l| {
                    let (id, sid) = l.split_once('\t')?;
                    Some((id.parse::<u64>().ok()?, sid.parse::<u32>().ok()?))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
