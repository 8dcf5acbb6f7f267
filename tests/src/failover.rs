//! One failover of the active master (db1) to db2 under client writes, measured: the
//! timeline from the monitor's own log (detection, fencing, promotion steps), the clients'
//! view (ARP entry switched, a new connection reaching the writable new master, the
//! running client's first write there), the slave re-pointed, the data (acknowledged
//! writes missing or duplicated, replication errors, the client's longest gap between
//! acknowledged writes), how many hosts hold the writer VIP at the end, and what the
//! daemons cost. Used by `mmm-lab` and by `cargo xtask bench failover`.

use crate::client::{app_opts, verify, Background, Policy, Writer, TABLE};
use crate::costs::{Costs, Snapshot};
use crate::lab::{ip, Cluster};
use crate::netns::wait_for;
use mysql_async::prelude::Queryable;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What happens to the active master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scenario {
    /// kill -9 of mysqld.
    Kill9,
    /// SIGTERM to mysqld: a clean shutdown.
    Term,
    /// mysqld and the agent frozen (SIGSTOP) and the host's link down: nothing answers.
    HostLost,
    /// `mmm-control move_role writer db2`.
    Switchover,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Kill9,
        Scenario::Term,
        Scenario::HostLost,
        Scenario::Switchover,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Scenario::Kill9 => "kill9",
            Scenario::Term => "sigterm",
            Scenario::HostLost => "host-lost",
            Scenario::Switchover => "switchover",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::Kill9 => "mysqld SIGKILL on the active master",
            Scenario::Term => "mysqld SIGTERM on the active master",
            Scenario::HostLost => "active master's host frozen and its link down",
            Scenario::Switchover => "switchover: move_role writer db2",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.key() == s)
    }
}

/// The configuration the same binaries run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// conf/lab.toml as it is.
    Ours,
    /// MMM 2.2.1's defaults: checks every 5 s, failures count after 10 s (timeout 2 s),
    /// no probe, no lease. MMM moved the roles of a host whose agent it could not reach
    /// without fencing it; kill_host_bin = /bin/true gives our binaries that behaviour.
    Mmm,
    /// mmm's own product defaults (conf/mmm.toml): checks every 1 s, trap 3 s, timeout
    /// 1 s, heartbeat 100 ms, agent timeout 500 ms, lease 1 s, 5 GARPs 50 ms apart.
    Defaults,
}

impl Profile {
    /// The profiles a bench runs unless told otherwise (Defaults on request).
    pub const ALL: [Profile; 2] = [Profile::Ours, Profile::Mmm];
    pub const KNOWN: [Profile; 3] = [Profile::Ours, Profile::Mmm, Profile::Defaults];

    pub fn key(self) -> &'static str {
        match self {
            Profile::Ours => "ours",
            Profile::Mmm => "mmm",
            Profile::Defaults => "defaults",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Profile::Ours => "ours (conf/lab.toml: checks 250 ms, trap 1 s, heartbeat 50 ms, lease 600 ms, eBPF probe)",
            Profile::Mmm => "MMM defaults (checks 5 s, trap 10 s, timeout 2 s, no probe, fencing none, roles moved off an unreachable host unfenced)",
            Profile::Defaults => "mmm's product defaults (checks 1 s, trap 3 s, timeout 1 s, heartbeat 100 ms, agent timeout 500 ms, lease 1 s, eBPF probe)",
        }
    }

    /// Edits of conf/lab.toml, as `Cluster::start` takes them.
    pub fn config(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Profile::Ours => &[],
            Profile::Defaults => &[
                ("check_period = \"250ms\"", "check_period = \"1s\""),
                ("trap_period = \"1s\"", "trap_period = \"3s\""),
                ("timeout = \"500ms\"", "timeout = \"1s\""),
                (
                    "heartbeat_interval = \"50ms\"",
                    "heartbeat_interval = \"100ms\"",
                ),
                ("agent_timeout = \"300ms\"", "agent_timeout = \"500ms\""),
                ("lease = \"600ms\"", "lease = \"1s\""),
                ("garp_count = 3", "garp_count = 5"),
                ("garp_interval = \"20ms\"", "garp_interval = \"50ms\""),
            ],
            Profile::Mmm => &[
                ("check_period = \"250ms\"", "check_period = \"5s\""),
                ("trap_period = \"1s\"", "trap_period = \"10s\""),
                ("timeout = \"500ms\"", "timeout = \"2s\""),
                ("probe = \"auto\"", "probe = \"off\""),
                ("fencing = \"lease\"", "fencing = \"none\""),
                (
                    "promotion_timeout = \"5s\"",
                    "promotion_timeout = \"5s\"\nkill_host_bin = \"/bin/true\"",
                ),
            ],
        }
    }

    /// Bound on each wait of one measurement (never a measured claim).
    fn patience(self) -> Duration {
        match self {
            Profile::Ours => Duration::from_secs(15),
            Profile::Mmm => Duration::from_secs(45),
            Profile::Defaults => Duration::from_secs(20),
        }
    }
}

/// The milestones every scenario and profile share (the plot and the ratios use them).
pub const DETECTED: &str = "monitor: db1 HARD_OFFLINE (detected)";
pub const FENCED: &str = "monitor: every possible writer is fenced";
pub const WRITABLE: &str = "monitor: db2 writable, holds the writer VIP, GARP sent";
pub const ARP: &str = "client's ARP entry for the writer VIP -> db2's MAC";
pub const NEW_CONNECTION: &str = "a new connection through the VIP reaches writable db2";
/// The headline: a client as a connection pool behaves (connect timeout 1 s, immediate
/// retries), writing through the VIP all along.
pub const RETRYING: &str = "the retrying client's first write accepted on db2";
/// The same pool writing through HAProxy, which routes by the agents' `/writer` check
/// (`crate::haproxy`); measured by [`measure_haproxy`] only.
pub const HAPROXY: &str = "the HAProxy client's first write accepted on db2";
pub const RESUMED: &str = "the running client's first write accepted on db2";
pub const REPOINTED: &str = "db3 replicating from db2";
/// The running client's session on the old writer ends with an error (a reset), not with
/// its own 500 ms timeout: the goal is within 100 ms of the demotion.
pub const SESSION_ENDED: &str = "the running client's session ended with an error, not its timeout";
pub const MILESTONES: [&str; 8] = [
    DETECTED,
    FENCED,
    WRITABLE,
    ARP,
    NEW_CONNECTION,
    RETRYING,
    RESUMED,
    REPOINTED,
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Failover {
    /// (step, ms after the event); None when not seen. The milestones and the monitor's
    /// own promotion timeline.
    pub steps: Vec<(String, Option<i64>)>,
    pub acked: usize,
    pub missing: usize,
    pub duplicated: usize,
    pub replication_errors: Vec<String>,
    /// Client writes that failed or got no answer (their outcome is unknown to it).
    pub failed_attempts: usize,
    /// The same for the retrying client (it retries at once, so more attempts fail).
    pub retrying_failed_attempts: usize,
    /// The longest time between two acknowledged writes of the running client, ms.
    pub write_gap_ms: Option<i64>,
    /// Hosts holding the writer VIP at the end (for a lost host: once it runs again).
    pub vip_holders: Vec<String>,
    pub idle: Costs,
    pub during: Costs,
}

impl Failover {
    pub fn step(&self, name: &str) -> Option<i64> {
        self.steps
            .iter()
            .find(|(s, _)| s == name)
            .and_then(|(_, ms)| *ms)
    }
}

/// Wall-clock ms of a tracing line's timestamp (`2026-11-22T05:33:58.146913Z`).
pub fn log_time_ms(line: &str) -> Option<u64> {
    let t = line.find('T').map(|i| &line[i + 1..])?;
    let (h, m, s) = (
        t.get(0..2)?.parse::<u64>().ok()?,
        t.get(3..5)?.parse::<u64>().ok()?,
        t.get(6..15)?.parse::<f64>().ok()?,
    );
    let day_ms = (h * 3600 + m * 60) * 1000 + (s * 1000.0) as u64;
    let now = wall_ms() as u64;
    Some(now - now % 86_400_000 + day_ms)
}

/// Now, in wall-clock ms since the epoch (what [`log_time_ms`] is compared with).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Opens a new connection through the VIP every 10 ms (each attempt bounded by 300 ms,
/// attempts overlap) and asks which server answered and whether it is writable: the first
/// attempt *started* after the event that reached a writable db2 tells when the VIP became
/// usable, whatever happened to earlier attempts (a SYN sent while no host held the
/// address is lost and would otherwise stretch the figure by the client's timeout).
struct Prober {
    task: Background,
    first_ok: Arc<Mutex<Option<Instant>>>,
}

impl Prober {
    fn start(ns: &str, vip: &str, server_id: u32, from: Instant) -> Prober {
        let first_ok = Arc::new(Mutex::new(None));
        let (f, opts) = (first_ok.clone(), app_opts(vip));
        let task = Background::start(ns, move |s| async move {
            let mut tasks = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let (opts, f) = (opts.clone(), f.clone());
                let started = Instant::now();
                tasks.push(tokio::spawn(async move {
                    let attempt = async {
                        let mut c = mysql_async::Conn::new(opts).await.ok()?;
                        let row: Option<(u32, u8)> = c
                            .query_first("SELECT @@server_id, @@read_only")
                            .await
                            .ok()?;
                        let _ = c.disconnect().await;
                        row
                    };
                    let row = tokio::time::timeout(Duration::from_millis(300), attempt)
                        .await
                        .ok()
                        .flatten();
                    if row == Some((server_id, 0)) && started >= from {
                        let mut first = f.lock().unwrap_or_else(|p| p.into_inner());
                        if first.is_none_or(|t| started < t) {
                            *first = Some(started);
                        }
                    }
                }));
                tasks.retain(|t| !t.is_finished());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        Prober { task, first_ok }
    }

    fn first_ok(&self) -> Option<Instant> {
        *self.first_ok.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(mut self) -> Option<Instant> {
        self.task.stop();
        self.first_ok()
    }
}

/// Kills db1's mysqld (the writer) while a client writes through the VIP, waits for the
/// failover to db2 and returns what was measured. `monitor_log` names the monitor's log.
pub fn kill_writer(c: &Cluster, monitor_log: &str) -> Failover {
    measure(c, Scenario::Kill9, Profile::Ours, monitor_log)
}

/// The monitor that drives a measured failover: its process, namespace and log.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    pub pid: u32,
    /// The lab node it runs in (its agent links are measured there).
    pub node: &'a str,
    /// Its log's file name in the lab's directory.
    pub log: &'a str,
}

/// Runs `scenario` on a cluster started with `profile.config()` whose writer is db1, under
/// a client writing through the VIP every 5 ms, and measures the failover to db2.
pub fn measure(c: &Cluster, scenario: Scenario, profile: Profile, monitor_log: &str) -> Failover {
    measure_on(c, scenario, profile, Watched::lab(c, monitor_log))
}

/// As [`measure`], with a third client, a pool as the retrying one, writing through the
/// HAProxy of `crate::haproxy` (running in the client's namespace): its first write on
/// db2 is the [`HAPROXY`] step.
pub fn measure_haproxy(
    c: &Cluster,
    scenario: Scenario,
    profile: Profile,
    monitor_log: &str,
) -> Failover {
    measure_clients(
        c,
        scenario,
        profile,
        Watched::lab(c, monitor_log),
        ("db1", "db2"),
        Some(crate::haproxy::FRONTEND),
    )
}

impl<'a> Watched<'a> {
    /// The lab's own monitor, in `mon`, logging to `log`.
    fn lab(c: &Cluster, log: &'a str) -> Watched<'a> {
        Watched {
            pid: c.monitor.expect("the monitor runs"),
            node: "mon",
            log,
        }
    }
}

/// As [`measure`], with the monitor named: a fleet's leader, whose namespace and log are
/// its own. A switchover goes through the lab's own control socket (`Cluster::control`).
pub fn measure_on(c: &Cluster, scenario: Scenario, profile: Profile, m: Watched) -> Failover {
    measure_move(c, scenario, profile, m, ("db1", "db2"))
}

/// As [`measure_on`], the writer `from` (db1 or db2) failing over to `to`, the other of
/// the two masters; the remaining server (db3) is the slave to be re-pointed. The
/// milestones keep their names (written for db1 -> db2).
pub fn measure_move(
    c: &Cluster,
    scenario: Scenario,
    profile: Profile,
    m: Watched,
    moving: (&str, &str),
) -> Failover {
    measure_clients(c, scenario, profile, m, moving, None)
}

/// As [`measure_move`], with a third client writing through the proxy at `proxy` when
/// one is given.
fn measure_clients(
    c: &Cluster,
    scenario: Scenario,
    profile: Profile,
    m: Watched,
    (from, to): (&str, &str),
    proxy: Option<(&str, u16)>,
) -> Failover {
    let (monitor, monitor_log) = (m.pid, m.log);
    let slave = ["db1", "db2", "db3"]
        .into_iter()
        .find(|h| *h != from && *h != to)
        .expect("three servers");
    let net = &c.lab.net;
    c.db(from).sql(TABLE);
    std::thread::sleep(Duration::from_millis(300));
    let client_ns = net.node("client").ns.clone();
    let writer = Writer::start(&client_ns, "192.0.2.100", Duration::from_millis(5));
    let pool = Writer::with_policy(
        &client_ns,
        "192.0.2.100",
        Duration::from_millis(5),
        Policy::RETRYING,
    );
    let proxied = proxy.map(|addr| {
        Writer::with_policy_at(&client_ns, addr, Duration::from_millis(5), Policy::HAPROXY)
    });
    for (w, through) in std::iter::once((&writer, "the writer VIP"))
        .chain(proxied.as_ref().map(|p| (p, "the proxy")))
    {
        let warm = wait_for(Duration::from_secs(10), || {
            (w.log().acked.len() > 20).then_some(())
        });
        assert!(
            warm.is_some(),
            "the client cannot write through {through}: {:?}",
            w.log().failed.last()
        );
    }
    let before = Snapshot::take_on(net, m.node, monitor, &c.agents);
    std::thread::sleep(Duration::from_secs(2));
    let steady = Snapshot::take_on(net, m.node, monitor, &c.agents);
    let idle = Costs::between(&before, &steady, monitor, &c.agents);

    let event_wall = wall_ms();
    let event = Instant::now();
    let prober = Prober::start(&client_ns, "192.0.2.100", c.db(to).server_id, event);
    let t = profile.patience();
    let to_mac = net.node(to).mac.clone();
    let to_ip = net.node(to).ip.to_string();
    let agent = c.agents[c.dbs.iter().position(|d| d.node == from).expect("a server")];
    let (arp, resumed, repointed, during) = std::thread::scope(|s| {
        match scenario {
            Scenario::Kill9 => net.signal(c.db(from).pid, "KILL"),
            Scenario::Term => net.signal(c.db(from).pid, "TERM"),
            Scenario::HostLost => {
                net.signal(c.db(from).pid, "STOP");
                net.signal(agent, "STOP");
                net.exec(from, &["ip", "link", "set", "eth0", "down"]);
            }
            Scenario::Switchover => {
                s.spawn(|| {
                    let (code, out) = c.control(&["move_role", "writer", to]);
                    assert_eq!(code, 0, "move_role writer {to}: {out}");
                });
            }
        }
        let arp = wait_for(t, || {
            (net.neigh_mac("client", ip(100)).as_deref() == Some(to_mac.as_str()))
                .then(|| event.elapsed())
        });
        let first_on_db2 = |w: &Writer, range: (u64, u64)| {
            let first = c
                .db(to)
                .try_sql(&format!(
                    "SELECT MIN(id) FROM app.w WHERE sid = {} AND id BETWEEN {} AND {}",
                    c.db(to).server_id,
                    range.0,
                    range.1
                ))
                .ok()?
                .parse::<u64>()
                .ok()?;
            w.log()
                .acked
                .iter()
                .find(|(id, _)| *id == first)
                .map(|(_, at)| *at - event)
        };
        let resumed = wait_for(t, || {
            first_on_db2(&writer, (1, Policy::RETRYING.first_id - 1))
        });
        let retried = wait_for(t, || {
            first_on_db2(
                &pool,
                (Policy::RETRYING.first_id, Policy::HAPROXY.first_id - 1),
            )
        });
        let proxied = proxied
            .as_ref()
            .map(|p| wait_for(t, || first_on_db2(p, (Policy::HAPROXY.first_id, u64::MAX))));
        let repointed = wait_for(t, || {
            (c.db(slave).slave_status("Master_Host") == to_ip
                && c.db(slave).slave_status("Slave_SQL_Running") == "Yes")
                .then(|| event.elapsed())
        });
        let _ = wait_for(t, || prober.first_ok());
        let after = Snapshot::take_on(net, m.node, monitor, &c.agents);
        (
            arp,
            (resumed, retried, proxied),
            repointed,
            Costs::between(&steady, &after, monitor, &c.agents),
        )
    });
    let (resumed, retried, proxied_first) = resumed;
    let vip_usable = prober.stop().map(|at| at - event);
    std::thread::sleep(Duration::from_millis(500));
    let log = writer.stop();
    let pool_log = pool.stop();
    let proxied_log = proxied.map(Writer::stop).unwrap_or_default();
    // MMM_BENCH_TRACE=1: the retrying client's attempts around the event, to explain a
    // slow first write (which attempt failed how, and when the first one succeeded).
    if std::env::var_os("MMM_BENCH_TRACE").is_some() {
        let rel = |at: Instant| at.saturating_duration_since(event).as_millis();
        let failed: Vec<String> = pool_log
            .failed
            .iter()
            .filter(|(at, _)| *at >= event)
            .take(4)
            .map(|(at, e)| format!("+{}ms {e}", rel(*at)))
            .collect();
        let last_failed = pool_log
            .failed
            .last()
            .map(|(at, e)| format!("+{}ms {e}", rel(*at)));
        let first_ok = pool_log
            .acked
            .iter()
            .find(|(_, at)| *at >= event && pool_log.failed.last().is_none_or(|(f, _)| at > f))
            .map(|(_, at)| rel(*at));
        eprintln!(
            "trace {scenario:?}: retrying client failures {} (first: {failed:?}; last: {last_failed:?}); first ack after them +{first_ok:?}ms",
            pool_log.failed.len()
        );
    }

    // A lost host comes back (its link stays down): does it still hold the writer VIP?
    if scenario == Scenario::HostLost {
        net.signal(agent, "CONT");
        net.signal(c.db(from).pid, "CONT");
        let _ = wait_for(Duration::from_secs(3), || {
            (!holds_vip(c, from)).then_some(())
        });
    }
    let vip_holders = ["db1", "db2", "db3"]
        .into_iter()
        .filter(|h| holds_vip(c, h))
        .map(str::to_string)
        .collect();

    let mlog: String = c
        .monitor_log(monitor_log)
        .chars()
        .filter(|ch| !ch.is_control() || *ch == '\n')
        .collect();
    let at = |needle: &str| {
        mlog.lines()
            .rev()
            .find(|l| l.contains(needle))
            .and_then(log_time_ms)
            .map(|ms| ms as i64 - event_wall)
    };
    let mut timeline = Vec::new();
    if let Some(line) = mlog
        .lines()
        .rev()
        .find(|l| l.contains("is the new writer after"))
    {
        let start = at("Moving the writer role to");
        if let Some(all) = line
            .split(" ms: ")
            .nth(1)
            .map(|s| s.split(" host=").next().unwrap_or(s))
        {
            for step in all.split("; ") {
                let (off, what) = step.trim().split_once("ms ").unwrap_or(("", step));
                let off: Option<i64> = off.trim_start_matches('+').parse().ok();
                timeline.push((
                    format!("monitor: {}", what.trim()),
                    start.zip(off).map(|(s, o)| s + o),
                ));
            }
        }
    }
    let find = |needle: &str| {
        timeline
            .iter()
            .find(|(s, _)| s.contains(needle))
            .and_then(|(_, ms)| *ms)
    };
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as i64);
    let detected = match scenario {
        Scenario::Switchover => Some(0),
        _ => at("changed from ONLINE to HARD_OFFLINE"),
    };
    let mut steps = vec![
        (DETECTED.to_string(), detected),
        (FENCED.to_string(), find("every possible writer is fenced")),
        (
            WRITABLE.to_string(),
            find("is writable and holds the writer VIP"),
        ),
        (ARP.to_string(), ms(arp)),
        (NEW_CONNECTION.to_string(), ms(vip_usable)),
        (RETRYING.to_string(), ms(retried)),
        (RESUMED.to_string(), ms(resumed)),
        (REPOINTED.to_string(), ms(repointed)),
    ];
    if let Some(first) = proxied_first {
        steps.push((HAPROXY.to_string(), ms(first)));
    }
    let session_ended = log
        .failed
        .iter()
        .filter(|(at, _)| *at >= event)
        .take_while(|(_, e)| !e.starts_with("no answer within"))
        .map(|(at, _)| (*at - event).as_millis() as i64)
        .next();
    steps.push((SESSION_ENDED.to_string(), session_ended));
    steps.extend(timeline);

    let mut gaps: Vec<Instant> = log.acked.iter().map(|(_, at)| *at).collect();
    gaps.sort();
    let write_gap_ms = gaps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as i64)
        .max();
    let all_acked: Vec<(u64, Instant)> = log
        .acked
        .iter()
        .chain(pool_log.acked.iter())
        .chain(proxied_log.acked.iter())
        .copied()
        .collect();
    let mut f = Failover {
        steps,
        acked: all_acked.len(),
        failed_attempts: log.failed.len(),
        retrying_failed_attempts: pool_log.failed.len(),
        write_gap_ms: write_gap_ms.filter(|_| resumed.is_some()),
        vip_holders,
        idle,
        during,
        ..Default::default()
    };
    for h in [to, slave] {
        let _ = wait_for(Duration::from_secs(10), || {
            verify(c.db(h), &all_acked).0.is_empty().then_some(())
        });
        let (missing, dup) = verify(c.db(h), &all_acked);
        f.missing += missing.len();
        f.duplicated += dup.len();
        for field in ["Last_IO_Errno", "Last_SQL_Errno"] {
            let e = c.db(h).slave_status(field);
            if ["1062", "1236", "1950"].contains(&e.as_str()) {
                f.replication_errors.push(format!("{h} {field} {e}"));
            }
        }
    }
    f
}

fn holds_vip(c: &Cluster, host: &str) -> bool {
    c.lab
        .net
        .addresses(host)
        .iter()
        .any(|a| a.starts_with("192.0.2.100/"))
}
