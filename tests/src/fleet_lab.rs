//! The fleet lab: the usual cluster (db1 <-> db2, db3, agents) plus three etcd members
//! (etcd1..etcd3, 192.0.2.31-33) and monitors in their own namespaces (mon1 at .2, mon2
//! at .3, mon3 at .4), each with its own config copy (its own control socket) and
//! `--name`. Shared by the fleet scenarios, `cargo xtask lab --fleet` and the fleet bench.

use crate::etcd::EtcdCluster;
use crate::lab::{Cluster, Spec};
use crate::netns::wait_for;
use crate::{bin, mariadb::Setup};
use mmm_common::etcd::Keys;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

pub const PREFIX: &str = "/mmm/lab";

/// The etcd keys of the lab's fleet.
pub fn keys() -> Keys {
    Keys::new(PREFIX)
}
const ETCD: [(&str, u8); 3] = [("etcd1", 31), ("etcd2", 32), ("etcd3", 33)];
/// Monitor namespaces: "mon" is the lab's own (192.0.2.2).
const MONITORS: [(&str, &str); 3] = [("mon1", "mon"), ("mon2", "mon2"), ("mon3", "mon3")];

pub struct Monitor {
    pub node: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: String,
    pub pid: Option<u32>,
}

pub struct FleetLab {
    /// Before `c`: fields drop in order, and etcd members are killed outright (their
    /// data is a temp dir) rather than left to the lab's SIGTERM and its 5 s wait.
    pub etcd: EtcdCluster,
    pub c: Cluster,
    pub monitors: BTreeMap<String, Monitor>,
    /// Held for the lab's life (dropped last): see [`Slot`].
    _slot: Slot,
}

/// At most this many fleet labs at once in one test process. Each runs three etcd
/// members (each fsyncs every write), three MariaDB servers and up to three monitors; a
/// dozen at once on two cores delayed etcd's answers beyond the writer's 1 s lease
/// (the agent then fences itself, as it must), which is the machine, not the product.
const MAX_LABS: usize = 2;

static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= MAX_LABS {
            n = freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        freed.notify_one();
    }
}

impl FleetLab {
    /// The cluster with `[coordination]` (session_ttl 1 s) and etcd running; no monitor.
    /// The TTL is shorter than an etcd leader election can last (the lab's etcd runs with
    /// a 500 ms election timeout): scenarios about monitors and agents run faster on it;
    /// those that lose etcd members use [`FleetLab::start_per_rule`].
    pub fn start(tag: &str) -> FleetLab {
        FleetLab::start_coordination(tag, "session_ttl = \"1s\"\n")
    }

    /// As [`FleetLab::start`], the config naming the lab etcd's timings and leaving
    /// `session_ttl` to its default, the least that outlives an etcd leader election (4 s
    /// here): what docs/operations.md tells operators to do.
    pub fn start_per_rule(tag: &str) -> FleetLab {
        FleetLab::start_coordination(
            tag,
            "etcd_election_timeout = \"500ms\"\netcd_heartbeat_interval = \"50ms\"\n",
        )
    }

    fn start_coordination(tag: &str, timing: &str) -> FleetLab {
        let slot = Slot::take();
        let mut spec = Spec::three(Setup::default());
        let endpoints: Vec<String> = ETCD
            .iter()
            .map(|(_, last)| format!("\"http://192.0.2.{last}:2379\""))
            .collect();
        spec.append = format!(
            "[coordination]\netcd = [{}]\nprefix = \"{PREFIX}\"\n{timing}",
            endpoints.join(", ")
        );
        spec.nodes = ETCD.to_vec();
        spec.nodes.extend([("mon2", 3), ("mon3", 4)]);
        let c = Cluster::start_spec(tag, &[], &spec);
        let names: Vec<&str> = ETCD.iter().map(|(n, _)| *n).collect();
        let etcd = EtcdCluster::start_in(&c.lab.net, &format!("{tag}-etcd"), &names);
        let text = std::fs::read_to_string(&c.lab.config).expect("lab config");
        let mut monitors = BTreeMap::new();
        for (name, node) in MONITORS {
            let socket = c.lab.dir.path().join(format!("control-{name}.sock"));
            let path = c.lab.dir.path().join(format!("{name}.toml"));
            let own = text.replace(
                c.lab
                    .dir
                    .path()
                    .join("control.sock")
                    .to_str()
                    .expect("UTF-8"),
                socket.to_str().expect("UTF-8"),
            );
            std::fs::write(&path, own).expect("writing a monitor's config");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600 a monitor's config");
            monitors.insert(
                name.to_string(),
                Monitor {
                    node: node.to_string(),
                    config: path,
                    socket,
                    log: format!("monitor-{name}.log"),
                    pid: None,
                },
            );
        }
        FleetLab {
            c,
            etcd,
            monitors,
            _slot: slot,
        }
    }

    /// Starts monitor `name` (mon1..mon3) and waits until it answers `ping`.
    pub fn start_monitor(&mut self, name: &str) -> u32 {
        self.start_monitor_as(name, name)
    }

    /// Starts the process of monitor slot `slot` with `--name name`; waits for `ping`.
    pub fn start_monitor_as(&mut self, slot: &str, name: &str) -> u32 {
        let m = &self.monitors[slot];
        let monitor = bin("mmm-monitor");
        let pid = self.c.lab.net.spawn(
            &m.node,
            &[
                monitor.to_str().expect("UTF-8"),
                "--config",
                m.config.to_str().expect("UTF-8"),
                "--name",
                name,
            ],
            &self.c.lab.dir.path().join(&m.log),
        );
        self.monitors.get_mut(slot).expect("known slot").pid = Some(pid);
        let up = wait_for(Duration::from_secs(10), || {
            (self.control(slot, &["ping"]).1 == "OK: Pinged successfully!\n").then_some(())
        });
        assert!(
            up.is_some(),
            "monitor {slot} did not answer:\n{}",
            self.log(slot)
        );
        pid
    }

    /// Runs monitor slot `slot` as `--name name` in the foreground until it exits (at
    /// most 20 s: `timeout` ends it otherwise), for a monitor that must refuse to run.
    pub fn run_monitor_to_exit(&self, slot: &str, name: &str) -> std::process::Output {
        let m = &self.monitors[slot];
        let monitor = bin("mmm-monitor");
        self.c.lab.net.try_exec(
            &m.node,
            &[
                "timeout",
                "20",
                monitor.to_str().expect("UTF-8"),
                "--config",
                m.config.to_str().expect("UTF-8"),
                "--name",
                name,
            ],
        )
    }

    pub fn log(&self, slot: &str) -> String {
        self.c.lab.log(&self.monitors[slot].log)
    }

    /// mmm-control against monitor `slot`'s own socket, from its namespace.
    pub fn control(&self, slot: &str, args: &[&str]) -> (i32, String) {
        let m = &self.monitors[slot];
        let control = bin("mmm-control");
        let mut full = vec![
            control.to_str().expect("UTF-8"),
            "--monitor",
            m.socket.to_str().expect("UTF-8"),
            "--timeout",
            "30",
        ];
        full.extend_from_slice(args);
        let out = self.c.lab.net.try_exec(&m.node, &full);
        (out.status.code().unwrap_or(-1), crate::shown(&out))
    }

    /// The fleet line of `show` asked through `slot`: (leader, term, standbys).
    pub fn fleet_line(&self, slot: &str) -> Option<(String, u64, Vec<String>)> {
        let (_, out) = self.control(slot, &["show"]);
        parse_fleet_line(&out)
    }

    /// Waits until `show` through `slot` names a leader other than `not`; returns it.
    pub fn wait_leader(&self, slot: &str, not: Option<&str>, within: Duration) -> (String, u64) {
        let found = wait_for(within, || {
            self.fleet_line(slot)
                .filter(|(l, _, _)| Some(l.as_str()) != not)
                .map(|(l, t, _)| (l, t))
        });
        found.unwrap_or_else(|| {
            panic!(
                "no leader other than {not:?} within {within:?}; show through {slot}:\n{}\nlogs:\n{}",
                self.control(slot, &["show"]).1,
                self.monitors
                    .keys()
                    .map(|k| format!("--- {k}:\n{}", tail(&self.log(k), 30)))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    /// Sends `signal` (KILL, TERM, STOP, CONT) to monitor `slot`'s process.
    pub fn signal(&mut self, slot: &str, signal: &str) {
        let pid = self.monitors[slot].pid.expect("monitor running");
        self.c.lab.net.signal(pid, signal);
        if signal == "KILL" || signal == "TERM" {
            assert!(
                self.c.lab.net.wait_exit(pid, Duration::from_secs(15)),
                "monitor {slot} did not exit after SIG{signal}"
            );
            self.monitors.get_mut(slot).expect("known slot").pid = None;
        }
    }

    /// Blocks (or, with `cut = false`, restores) traffic between monitor `slot`'s
    /// namespace and the given addresses: blackhole routes, both directions in effect.
    pub fn cut(&self, slot: &str, lasts: &[u8], cut: bool) {
        let node = &self.monitors[slot].node;
        for last in lasts {
            let ip = format!("192.0.2.{last}/32");
            let op = if cut { "add" } else { "del" };
            self.c
                .lab
                .net
                .exec(node, &["ip", "route", op, "blackhole", &ip]);
        }
    }

    /// [`FleetLab::cut`] of `host` in every running monitor's namespace (or, with `cut =
    /// false`, healed): no monitor reaches its agent, mysqld or address, while its
    /// replicas, the client and etcd still do.
    pub fn cut_from_monitors(&self, host: &str, cut: bool) {
        let last = self.c.lab.net.node(host).ip.octets()[3];
        for (slot, m) in &self.monitors {
            if m.pid.is_some() {
                self.cut(slot, &[last], cut);
            }
        }
    }

    /// The last `n` lines of every monitor's and agent's log, for a failure's message.
    pub fn logs(&self, n: usize) -> String {
        let mut logs: Vec<String> = self
            .monitors
            .keys()
            .map(|k| format!("--- {k}:\n{}", tail(&self.log(k), n)))
            .collect();
        for h in ["db1", "db2", "db3"] {
            let name = format!("agent-{h}.log");
            logs.push(format!("--- {name}:\n{}", tail(&self.c.lab.log(&name), n)));
        }
        logs.join("\n")
    }

    /// Brings db1..db3 online through monitor `slot` (db1 becomes the writer).
    pub fn bring_online(&self, slot: &str) {
        let t = Duration::from_secs(30);
        for h in ["db1", "db2", "db3"] {
            let reply = wait_for(t, || {
                let (code, out) = self.control(slot, &["set_online", h]);
                (code == 0).then_some(out)
            });
            assert!(
                reply.is_some_and(|r| r.starts_with("OK: State of")),
                "set_online {h}; show:\n{}",
                self.control(slot, &["show"]).1
            );
        }
        self.wait_show(slot, "db1", "writer(192.0.2.100)", t);
    }

    /// The master that `show` through `slot` names as the writer, if any.
    pub fn shown_writer(&self, slot: &str) -> Option<String> {
        let (_, show) = self.control(slot, &["show"]);
        show.lines()
            .find(|l| l.contains("writer(192.0.2.100)"))
            .and_then(|l| l.trim_start().split('(').next())
            .map(str::to_string)
    }

    /// Waits until `host`'s show line (through `slot`) contains `needle`.
    pub fn wait_show(&self, slot: &str, host: &str, needle: &str, within: Duration) {
        let ok = wait_for(within, || {
            let (_, out) = self.control(slot, &["show"]);
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{host}(")) && l.contains(needle))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "{host} never showed {needle:?}; show through {slot}:\n{}",
            self.control(slot, &["show"]).1
        );
    }

    /// Panics, with every log that could say why, if any client write failed.
    pub fn assert_no_failed_writes(&self, log: &crate::client::WriteLog, during: &str) {
        if log.failed.is_empty() {
            return;
        }
        panic!(
            "client writes failed {during}: {:?}\n{}",
            log.failed,
            self.logs(40)
        );
    }

    /// The value of `key` (one of [`keys`]) read with etcdctl from an etcd member's
    /// namespace.
    pub fn etcd_get(&self, key: &str) -> String {
        let out = self.c.lab.net.try_exec(
            "etcd1",
            &[
                "etcdctl",
                "--endpoints",
                "http://192.0.2.31:2379",
                "get",
                "--print-value-only",
                key,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        for m in self.monitors.values_mut() {
            if let Some(pid) = m.pid.take() {
                let _ = crate::netns::send_signal(pid, "CONT");
                let _ = crate::netns::send_signal(pid, "KILL");
            }
        }
    }
}

/// `# monitor fleet: leader NAME (term N, epoch E), standby A, B` -> (NAME, N, [A, B]).
pub fn parse_fleet_line(show: &str) -> Option<(String, u64, Vec<String>)> {
    let line = show
        .lines()
        .find_map(|l| l.strip_prefix("# monitor fleet: leader "))?;
    let (leader, rest) = line.split_once(" (term ")?;
    let (inside, rest) = rest.split_once(')')?;
    let term = inside.split_once(", epoch ").map_or(inside, |(t, _)| t);
    let standbys = rest
        .trim_start_matches(", ")
        .strip_prefix("standby ")
        .map(|s| s.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    Some((leader.to_string(), term.parse().ok()?, standbys))
}

/// The epoch in the fleet line of `show`.
pub fn parse_fleet_epoch(show: &str) -> Option<u64> {
    let line = show
        .lines()
        .find(|l| l.starts_with("# monitor fleet: leader "))?;
    let (_, rest) = line.split_once(", epoch ")?;
    let (epoch, _) = rest.split_once(')')?;
    u64::from_str_radix(epoch, 16).ok()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_fleet_line() {
        let show = "# monitor fleet: leader mon1 (term 5, epoch 3fa4c1d2e5f60718), standby mon2\n";
        assert_eq!(
            super::parse_fleet_line(show),
            Some(("mon1".into(), 5, vec!["mon2".into()]))
        );
        assert_eq!(super::parse_fleet_epoch(show), Some(0x3fa4_c1d2_e5f6_0718));
        assert_eq!(
            super::parse_fleet_line(
                "x\n# monitor fleet: leader mon1 (term 42), standby mon2, mon3\n"
            ),
            Some(("mon1".into(), 42, vec!["mon2".into(), "mon3".into()]))
        );
        assert_eq!(
            super::parse_fleet_line("# monitor fleet: leader mon1 (term 7), no standby\n"),
            Some(("mon1".into(), 7, vec![]))
        );
    }
}
