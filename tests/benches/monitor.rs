//! Monitor cost (measured, not asserted): CPU share and RSS of the release mmm-monitor
//! watching 3, 100, 500 and 1000 hosts at the default intervals (heartbeat 100 ms, checks every
//! 1 s). The agents are simulated: they speak the real protocol (handshake, heartbeat
//! answers, applied states). No mysqld listens there, so the mysql checks are refused
//! connections, noted in the output. Each size is measured twice: steady, then with a
//! tenth of the agents gone at once.
//!
//! And on two networks: loopback (127.x.y.z), where the kernel runs each receiver's TCP
//! work inside the sender's system call, so the monitor also pays for the agents' side of
//! every heartbeat; and a veth pair between two namespaces whose ends receive in NAPI
//! threads, as a NIC's receive runs apart from the sending process: the monitor pays for
//! its own side only, as with agents on other hosts. `MMM_BENCH_NET=loopback` or `veth`
//! measures one of them.
//!
//! Each phase also reports the largest gap any simulated agent saw between two heartbeats
//! of its session: a monitor too busy to send them on time (its start-up, a burst of
//! failures) eats into the writer's lease (1 s by default, given up 250 ms early).
//!
//! `cargo xtask bench monitor` (targets at 3 hosts: < 2 % of a core, <= 30 MB).

use mmm_common::config::ClusterKey;
use mmm_common::proto::io::{read_frame, write_frames};
use mmm_common::proto::*;
use mmm_tests::netns::{self, Pair};
use mmm_tests::{bin, TempDir};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest gap between two heartbeats of one session any simulated agent saw since
/// the phase began (microseconds; [`phase_gap`] reads and resets it).
static MAX_GAP_US: AtomicU64 = AtomicU64::new(0);

/// The largest heartbeat gap of the phase that ends now, in milliseconds.
fn phase_gap() -> f64 {
    MAX_GAP_US.swap(0, Ordering::Relaxed) as f64 / 1000.0
}

/// Where the simulated agents live.
#[derive(Clone, Copy, PartialEq)]
enum Net {
    Loopback,
    /// In the far namespace of a [`Pair`], the monitor in the near one.
    Veth,
}

/// Host i of run `run`: on loopback every run gets its own range (its simulated agents
/// live on); behind a veth every run has its own namespaces.
fn host_ip(net: Net, run: usize, i: usize) -> Ipv4Addr {
    let (a, b) = match net {
        Net::Loopback => (127, 10 + run as u8),
        Net::Veth => (10, 77),
    };
    Ipv4Addr::new(a, b, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn config(net: Net, run: usize, n: usize, key: &str, dir: &TempDir, control: u16) -> String {
    let host_ip = |run, i| host_ip(net, run, i);
    let mut t = format!(
        "[defaults]\nagent_password = \"a\"\nmonitor_password = \"m\"\nreplication_password = \"r\"\nmysql_port = 1\n\
         [hosts.h0]\nip = \"{}\"\nmode = \"master\"\npeer = \"h1\"\n[hosts.h1]\nip = \"{}\"\nmode = \"master\"\npeer = \"h0\"\n",
        host_ip(run, 0),
        host_ip(run, 1)
    );
    for i in 2..n {
        t.push_str(&format!(
            "[hosts.h{i}]\nip = \"{}\"\nmode = \"slave\"\n",
            host_ip(run, i)
        ));
    }
    let all: Vec<String> = (0..n).map(|i| format!("\"h{i}\"")).collect();
    t.push_str(
        "[roles.writer]\nmode = \"exclusive\"\nhosts = [\"h0\", \"h1\"]\nips = [\"127.2.0.1\"]\n",
    );
    t.push_str(&format!(
        "[roles.reader]\nmode = \"balanced\"\nhosts = [{}]\nips = [\"127.2.0.2\", \"127.2.0.3\"]\n",
        all.join(", ")
    ));
    t.push_str(&format!(
        "[monitor]\ncontrol = \"127.0.0.1:{control}\"\nstatus_path = \"{}\"\nping_ips = [\"127.0.0.1\"]\n[security]\nkey = \"{key}\"\n",
        dir.path().join("status.json").display()
    ));
    t
}

/// The last tenth of the hosts (slaves): their agents go away together once `failing` is
/// set, to measure the monitor while many hosts fail at once.
fn fails(i: usize, n: usize) -> bool {
    n >= 10 && i >= n - n / 10
}

/// Serves `n` simulated agents until the process ends; once `failing` is set, the agents
/// of [`fails`] close their sessions and every new connection at once.
fn simulate_agents(
    net: Net,
    ns: Option<String>,
    run: usize,
    n: usize,
    key: ClusterKey,
    failing: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            netns::enter(&ns);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            for i in 0..n {
                let listener = tokio::net::TcpListener::bind((host_ip(net, run, i), 9989))
                    .await
                    .expect("bind simulated agent");
                let key = key.clone();
                let gone = fails(i, n).then(|| failing.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok((s, _)) = listener.accept().await else {
                            return;
                        };
                        if gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed)) {
                            continue;
                        }
                        let key = key.clone();
                        let gone = gone.clone();
                        tokio::spawn(async move {
                            let _ = agent_session(s, &key, &format!("h{i}"), gone).await;
                        });
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    });
}

async fn agent_session(
    s: tokio::net::TcpStream,
    key: &ClusterKey,
    name: &str,
    gone: Option<Arc<AtomicBool>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let t = Duration::from_secs(5);
    let (mut r, mut w) = s.into_split();
    let mut buf = FrameBuffer::new(DEFAULT_MAX_PAYLOAD);
    let mut hs = AgentHandshake::new(key, name, fresh_nonce()?);
    let hello = read_frame(&mut r, &mut buf, t).await?;
    write_frames(&mut w, &hs.on_hello(&hello)?, t).await?;
    let auth = read_frame(&mut r, &mut buf, t).await?;
    let (mut session, welcome) = hs.on_auth(&auth, "sim")?;
    write_frames(&mut w, &welcome, t).await?;
    let mut applied = 0;
    let mut last_heartbeat: Option<Instant> = None;
    loop {
        let f = read_frame(&mut r, &mut buf, t).await?;
        if gone.as_ref().is_some_and(|g| g.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let id = f.header.request_id;
        let reply = match session.opener.open(&f)? {
            Message::Heartbeat(_) => {
                let now = Instant::now();
                if let Some(last) = last_heartbeat.replace(now) {
                    let gap = u64::try_from((now - last).as_micros()).unwrap_or(u64::MAX);
                    MAX_GAP_US.fetch_max(gap, Ordering::Relaxed);
                }
                Message::AgentHeartbeat(AgentHeartbeat {
                    applied_epoch: applied,
                    uptime_s: 1000,
                    flags: hb_flags::READ_ONLY | hb_flags::MYSQL_UP,
                    probe: ProbeState::Off,
                    source: None,
                    held_vips: vec![],
                })
            }
            Message::DesiredState(d) => {
                applied = d.epoch;
                Message::Applied(Applied {
                    epoch: d.epoch,
                    failures: vec![],
                })
            }
            _ => continue,
        };
        write_frames(&mut w, &session.sealer.seal(&reply, id, FLAG_RESPONSE)?, t).await?;
    }
}

/// The share of one core process `pid` takes over `measure`, and its RSS (KiB) after.
fn cost(pid: u32, measure: Duration) -> (f64, u64) {
    let (cpu0, _) = usage(pid);
    let t0 = Instant::now();
    std::thread::sleep(measure);
    let (cpu1, rss) = usage(pid);
    ((cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0, rss)
}

/// (user + system CPU seconds, RSS KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
        })
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

/// The simulated agents' namespace (veth only): every host's address, and the route to
/// them from the monitor's side.
fn agents_behind_veth(pair: &Pair, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| format!("addr add {}/32 dev lo", host_ip(Net::Veth, 0, i)))
        .collect();
    pair.ip_batch(&pair.far, &lines);
    netns::sh(&[
        "ip",
        "-n",
        &pair.near,
        "route",
        "add",
        "10.77.0.0/16",
        "via",
        "10.76.0.2",
    ]);
}

fn main() {
    let sizes: Vec<usize> = std::env::var("MMM_BENCH_HOSTS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![3, 100, 500, 1000]);
    let measure = Duration::from_secs(
        std::env::var("MMM_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let nets = match std::env::var("MMM_BENCH_NET").as_deref() {
        Ok("loopback") => vec![Net::Loopback],
        Ok("veth") => vec![Net::Veth],
        _ => vec![Net::Loopback, Net::Veth],
    };
    if nets.contains(&Net::Veth) && !netns::require_root("bench monitor over veth") {
        return;
    }
    println!("monitor cost at default intervals (heartbeat 100 ms, checks 1 s), simulated agents, mysql checks refused:");
    let log = std::env::var("MMM_BENCH_LOG").ok();
    let mut run = 0;
    for net in nets {
        println!(
            "{}",
            match net {
                Net::Loopback => "  on loopback (the monitor also pays for the agents' TCP receive work):",
                Net::Veth => "  over a veth whose ends receive in NAPI threads (the monitor pays for its own side, as with agents on other hosts):",
            }
        );
        for &n in &sizes {
            run += 1;
            measure_one(net, run, n, measure, log.as_deref());
        }
    }
}

fn measure_one(net: Net, run: usize, n: usize, measure: Duration, log: Option<&str>) {
    let dir = TempDir::new("bench-mon");
    let hex = ClusterKey::generate_hex().expect("key");
    let key = ClusterKey::from_hex(&hex).expect("key");
    let failing = Arc::new(AtomicBool::new(false));
    let pair = (net == Net::Veth).then(|| {
        let pair = Pair::new("bmon");
        agents_behind_veth(&pair, n);
        pair
    });
    simulate_agents(
        net,
        pair.as_ref().map(|p| p.far.clone()),
        run,
        n,
        key,
        failing.clone(),
    );
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = dir.write("mmm.toml", &config(net, run, n, &hex, &dir, control), 0o600);
    let monitor = bin("mmm-monitor");
    let mut command = match &pair {
        // `ip netns exec` execs the monitor: the child's PID is the monitor's.
        Some(p) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &p.near]).arg(&monitor);
            c
        }
        None => Command::new(&monitor),
    };
    let mut child = command
        .args(["--config", cfg.to_str().expect("UTF-8")])
        // MMM_BENCH_LOG=<file>: the monitor's log at debug level, to see what it does.
        .env("RUST_LOG", if log.is_some() { "debug" } else { "error" })
        .stdout(Stdio::null())
        .stderr(match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start mmm-monitor");
    let pid = child.id();
    phase_gap();
    // Past the start-up (every agent heard, every host judged: a burst of work that
    // grows with the hosts), so that what follows is the steady state.
    let warm_up = Duration::from_secs(3) + Duration::from_millis(10) * n as u32;
    std::thread::sleep(warm_up);
    let start_gap = phase_gap();
    let (start_cpu, _) = usage(pid);
    let (share, rss) = cost(pid, measure);
    println!(
        "  {n:>4} hosts: CPU {share:>5.2} % of one core, RSS {:>6.1} MB; largest heartbeat gap {:.0} ms (its first {:.0} s: {start_cpu:.1} s of CPU, largest gap {start_gap:.0} ms)",
        rss as f64 / 1024.0,
        phase_gap(),
        warm_up.as_secs_f64()
    );
    if n >= 10 {
        // Many hosts failing at once: their agents gone (reconnects with backoff,
        // unreachable events, role moves), measured from the moment they go.
        failing.store(true, Ordering::Relaxed);
        let (share, rss) = cost(pid, measure);
        println!(
            "  {n:>4} hosts, {} agents gone at once: CPU {share:>5.2} % of one core, RSS {:>6.1} MB; largest heartbeat gap {:.0} ms",
            n / 10,
            rss as f64 / 1024.0,
            phase_gap()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
