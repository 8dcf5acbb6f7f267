//! Agent figures (measured, not asserted), over repeated VIP moves between db1 and db2
//! in the namespace lab, with real MariaDB and agents as uid 65534:
//! - takeover (desired state sent) -> the GARP frame seen on the client's wire
//! - takeover -> the client's neighbour entry for the VIP pointing at the new MAC
//! - takeover -> the agent's Applied reply at the monitor
//! - the agent's RSS while idle
//!
//! Run as root: `cargo xtask bench agent` (or `cargo bench -p mmm-tests --bench agent`).

use futures::TryStreamExt;
use mmm_monitor::agents::client::AgentLink;
use mmm_tests::bench::stats;
use mmm_tests::lab::{desired, ip, Lab, T};
use mmm_tests::mariadb::Mariadb;
use mmm_tests::netns::{block_on_in, require_root};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VIP: u8 = 101;

/// Timestamps the observers record, read by the mover after each move.
#[derive(Default)]
struct Seen {
    garp: Vec<(Instant, [u8; 6])>,
    neigh: Vec<(Instant, [u8; 6])>,
}

fn mac_of(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

/// Records every gratuitous ARP for the VIP arriving at the client's eth0.
fn sniff(ns: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        block_on_in(&ns, move || async move {
            // SAFETY: socket() takes no pointers; the result is checked and owned below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ARP as u16).to_be() as i32,
                )
            };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is a fresh descriptor owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: tv outlives the call and its size is passed.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let mut buf = [0u8; 128];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for writes of its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let now = Instant::now();
                if n >= 42
                    && buf[12..14] == [0x08, 0x06]
                    && buf[28..32] == ip(VIP).octets()
                    && buf[22..28] == buf[32..38]
                {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&buf[22..28]);
                    seen.lock().unwrap().garp.push((now, mac));
                }
            }
        })
    })
}

/// Polls the client's neighbour entry for the VIP through rtnetlink and records changes.
fn watch_neigh(
    ns: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        block_on_in(&ns, move || async move {
            let (conn, handle, _) = rtnetlink::new_connection().expect("rtnetlink");
            tokio::spawn(conn);
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                let mut entries = handle.neighbours().get().execute();
                let mut current = None;
                while let Ok(Some(msg)) = entries.try_next().await {
                    let is_vip = msg
                        .attributes
                        .iter()
                        .any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip(VIP)));
                    if is_vip {
                        current = msg.attributes.iter().find_map(|a| match a {
                            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                                <[u8; 6]>::try_from(b.as_slice()).ok()
                            }
                            _ => None,
                        });
                    }
                }
                let now = Instant::now();
                if current.is_some() && current != last {
                    seen.lock()
                        .unwrap()
                        .neigh
                        .push((now, current.unwrap_or_default()));
                    last = current;
                }
                tokio::task::yield_now().await;
            }
        })
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .flatten()
        .unwrap_or(0)
}

fn main() {
    if !require_root("bench agent") {
        return;
    }
    let rounds = mmm_tests::bench::rounds(30);
    let lab = Lab::new("bench", "");
    let _db1 = Mariadb::start(&lab.net, "db1", 1, lab.dir.path());
    let _db2 = Mariadb::start(&lab.net, "db2", 2, lab.dir.path());
    let pid1 = lab.agent("db1", "agent-db1.log");
    lab.agent("db2", "agent-db2.log");
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(pid1);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = lab.net.node("client").ns.clone();
    let sniffer = sniff(client.clone(), seen.clone(), stop.clone());
    let watcher = watch_neigh(client, seen.clone(), stop.clone());

    let (a1, a2, key) = (
        lab.agent_addr("db1"),
        lab.agent_addr("db2"),
        lab.key.clone(),
    );
    let client_ns = lab.net.node("client").ns.clone();
    let observed = seen.clone();
    let log1 = lab.dir.path().join("agent-db1.log");
    // One runtime in the monitor's namespace for the whole run: links live with it.
    let (to_garp, to_neigh, to_applied) =
        block_on_in(&lab.net.node("mon").ns.clone(), move || async move {
            let mut l1 = AgentLink::connect(a1, &key, "mon", "db1", T)
                .await
                .expect("link db1");
            let mut l2 = AgentLink::connect(a2, &key, "mon", "db2", T)
                .await
                .expect("link db2");
            let (mut to_garp, mut to_neigh, mut to_applied) = (Vec::new(), Vec::new(), Vec::new());
            // The VIP starts on db2; each round moves it to the other host.
            let mut holder = 2u8;
            for round in 0..=rounds {
                let to = 3 - holder;
                let epoch = round as u32 + 1;
                // Agents drop a monitor that stays silent for seconds: heartbeat as one would.
                if let Err(e) = l1.heartbeat(epoch, T).await {
                    panic!(
                        "heartbeat db1: {e:?}\n{}",
                        std::fs::read_to_string(&log1).unwrap_or_default()
                    );
                }
                l2.heartbeat(epoch, T).await.expect("heartbeat db2");
                let (old, new) = if holder == 1 {
                    (&mut l1, &mut l2)
                } else {
                    (&mut l2, &mut l1)
                };
                old.apply(desired(epoch, false, &[]), T)
                    .await
                    .expect("remove");
                let t0 = Instant::now();
                let applied = new
                    .apply(desired(epoch, false, &[("reader", VIP)]), T)
                    .await
                    .expect("add");
                let applied_at = Instant::now();
                assert!(applied.failures.is_empty(), "{:?}", applied.failures);
                let new_mac = mac_of(10 + to);
                // Round 0 only places the VIP: the client has no entry a GARP could update yet.
                let wait_until = Instant::now()
                    + if round == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(2)
                    };
                let (g, n) = loop {
                    let (g, n) = {
                        let s = observed.lock().unwrap();
                        (
                            s.garp
                                .iter()
                                .find(|(t, m)| *t >= t0 && *m == new_mac)
                                .map(|(t, _)| *t),
                            s.neigh
                                .iter()
                                .find(|(t, m)| *t >= t0 && *m == new_mac)
                                .map(|(t, _)| *t),
                        )
                    };
                    if (g.is_some() && n.is_some()) || Instant::now() > wait_until {
                        break (g, n);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                if round > 0 {
                    to_applied.push(applied_at - t0);
                    to_garp.extend(g.map(|t| t - t0));
                    to_neigh.extend(n.map(|t| t - t0));
                }
                holder = to;
                // Keep the client's entry fresh so the next GARP updates an existing one.
                let _ = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &client_ns,
                        "ping",
                        "-c1",
                        "-W1",
                        "192.0.2.101",
                    ])
                    .output();
            }
            (to_garp, to_neigh, to_applied)
        });
    stop.store(true, Ordering::Relaxed);
    let _ = sniffer.join();
    let _ = watcher.join();

    println!("agent benchmark: {rounds} VIP moves between db1 and db2 (2-core VM; figures, not assertions)");
    stats("takeover -> GARP on the client's wire", &to_garp);
    stats("takeover -> client's ARP entry switched", &to_neigh);
    stats("takeover -> Applied at the monitor", &to_applied);
    println!(
        "{:<48} {} KiB (target <= 15 MiB)",
        "agent idle RSS", idle_rss
    );
}
