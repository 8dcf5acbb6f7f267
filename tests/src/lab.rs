//! The agent lab: bridge, db1..db3, client and monitor namespaces on 192.0.2.0/24, the
//! lab config with a fresh key, and agents started as uid 65534 with their four
//! capabilities. Shared by the agent tests and the agent benchmark.

use crate::netns::{block_on_in, wait_for, Net};
use crate::{bin, TempDir};
use mmm_common::config::ClusterKey;
use mmm_common::proto::DesiredState;
use mmm_common::types::HostState;
use mmm_monitor::agents::client::AgentLink;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on each wait of the lab's helpers.
pub const T: Duration = Duration::from_secs(5);
const NOBODY: u32 = 65534;
/// The agent's capabilities in the lab, as its unit gives them.
const AGENT_CAPS: &str = "-all,+net_admin,+net_raw,+bpf,+perfmon";

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

pub struct Lab {
    pub net: Net,
    pub dir: TempDir,
    pub config: PathBuf,
    pub key: ClusterKey,
}

impl Lab {
    /// Bridge, db1, db2, a client and the monitor's namespace; `extra` is appended to
    /// conf/lab.toml.
    pub fn new(tag: &str, extra: &str) -> Lab {
        Lab::with_nodes(tag, extra, &[])
    }

    /// For agents driven by single desired states, without a monitor's heartbeats: no
    /// lease, so steps apart by more than one are not undone by the agent's own fence.
    pub fn without_lease(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(
            text.contains("fencing = \"lease\""),
            "lab.toml lacks fencing = \"lease\""
        );
        let text = text.replacen("fencing = \"lease\"", "fencing = \"none\"", 1);
        std::fs::write(&self.config, text).unwrap();
    }

    /// As [`Lab::new`], with more nodes (name, last octet of 192.0.2.x) on the bridge.
    pub fn with_nodes(tag: &str, extra: &str, more: &[(&str, u8)]) -> Lab {
        let mut net = Net::new(tag);
        let base = [
            ("db1", 11),
            ("db2", 12),
            ("db3", 13),
            ("client", 50),
            ("mon", 2),
        ];
        for &(name, last) in base.iter().chain(more) {
            net.add_node(name, ip(last), &format!("02:00:00:00:00:{last:02x}"));
        }
        let dir = TempDir::new(tag);
        // The agent runs as nobody: it must be able to reach its config and key.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let key_hex = ClusterKey::generate_hex().unwrap();
        let key = ClusterKey::from_hex(&key_hex).unwrap();
        let key_path = dir.write("cluster.key", &key_hex, 0o600);
        // The agents keep their lease deadlines here (one file per host), writable by them.
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        let text = std::fs::read_to_string(crate::workspace_root().join("conf/lab.toml"))
            .unwrap()
            .replace("/tmp/mmm-lab/cluster.key", key_path.to_str().unwrap())
            .replace("/tmp/mmm-lab/state", state.to_str().unwrap())
            .replace(
                "/tmp/mmm-lab/control.sock",
                dir.path().join("control.sock").to_str().unwrap(),
            );
        let config = dir.write("lab.toml", &format!("{text}\n{extra}"), 0o600);
        for f in [&key_path, &config] {
            std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Lab {
            net,
            dir,
            config,
            key,
        }
    }

    /// Starts an agent as uid 65534 holding only its four capabilities.
    pub fn agent(&self, host: &str, log: &str) -> u32 {
        self.agent_from(host, log, &bin("mmm-agent"))
    }

    /// As [`Lab::agent`], from the binary at `agent` (another release's, say).
    pub fn agent_from(&self, host: &str, log: &str, agent: &Path) -> u32 {
        let pid = self.spawn_agent(host, log, AGENT_CAPS, agent);
        self.wait_agent_listening(host, log);
        pid
    }

    /// Waits until `host`'s agent listens for the monitor; panics with its `log`.
    pub fn wait_agent_listening(&self, host: &str, log: &str) {
        let addr = self.agent_addr(host);
        let up = wait_for(T, || {
            let out = self
                .net
                .try_exec(host, &["ss", "-Htln", &format!("src {}", addr)]);
            (!out.stdout.is_empty()).then_some(())
        });
        assert!(
            up.is_some(),
            "agent {host} did not listen on {addr}:\n{}",
            self.log(log)
        );
    }

    /// Starts an agent as uid 65534 with the given capabilities (setpriv syntax).
    pub fn agent_with_caps(&self, host: &str, log: &str, caps: &str) -> u32 {
        self.spawn_agent(host, log, caps, &bin("mmm-agent"))
    }

    fn spawn_agent(&self, host: &str, log: &str, caps: &str, agent: &Path) -> u32 {
        let args = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--",
            agent.to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--host",
            host,
        ];
        self.net.spawn(host, &args, &self.dir.path().join(log))
    }

    pub fn agent_addr(&self, host: &str) -> SocketAddr {
        SocketAddr::from((self.net.node(host).ip, 9989))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Every log file in the lab's directory whose name mentions `host`, last lines
    /// first-to-last, for a failing test's message.
    pub fn logs_of(&self, host: &str) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        let mut out = String::new();
        for name in names.iter().filter_map(|n| n.to_str()) {
            if name.contains(host) && name.ends_with(".log") {
                let text = self.log(name);
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                out.push_str(&format!(
                    "--- {name} (last {} lines)\n{}\n",
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        out
    }

    /// Runs `f` with a link to `host`'s agent from the monitor's namespace.
    pub fn with_link<T: Send + 'static, Fut: std::future::Future<Output = T>>(
        &self,
        host: &str,
        f: impl FnOnce(AgentLink) -> Fut + Send + 'static,
    ) -> T {
        let (addr, key, host) = (self.agent_addr(host), self.key.clone(), host.to_string());
        block_on_in(&self.net.node("mon").ns.clone(), move || async move {
            let link = AgentLink::connect(addr, &key, "mon", &host, T)
                .await
                .unwrap_or_else(|e| panic!("connecting to {host}: {e:#}"));
            f(link).await
        })
    }
}

pub fn desired(epoch: u32, writable: bool, roles: &[(&str, u8)]) -> DesiredState {
    DesiredState {
        epoch,
        state: HostState::Online,
        active_master: "db1".into(),
        writable,
        roles: roles
            .iter()
            .map(|(r, last)| (r.to_string(), ip(*last)))
            .collect(),
        parked: vec![],
    }
}

/// The full lab: MariaDB on db1..db3 (db1 <-> db2 master-master, db3 a slave of db1, GTID),
/// an agent on each, and helpers for the monitor and mmm-control in the `mon` namespace.
pub struct Cluster {
    pub lab: Lab,
    pub dbs: Vec<crate::mariadb::Mariadb>,
    pub agents: Vec<u32>,
    pub monitor: Option<u32>,
}

/// One database server of a [`Spec`].
#[derive(Debug, Clone)]
pub struct Server {
    pub host: &'static str,
    /// Last octet of its 192.0.2.x address.
    pub last: u8,
    /// Last octet of the server it replicates from at start.
    pub source: u8,
    pub setup: crate::mariadb::Setup,
}

/// A lab other than the usual three servers: more servers, other accounts or options.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Servers in order (server_id = position + 1); db1, db2, db3 must be among them, as
    /// conf/lab.toml names them.
    pub servers: Vec<Server>,
    /// Appended to conf/lab.toml (after `replace`): hosts beyond db3, say.
    pub append: String,
    /// Nodes on the bridge that run no server (etcd members, more monitors).
    pub nodes: Vec<(&'static str, u8)>,
    /// Each host's `mysql_pid_file` in the config; without it the agent's probe finds
    /// the running mysqld by its listening socket.
    pub mysql_pid_file: bool,
}

impl Spec {
    /// The usual lab: db1 <-> db2, db3 a slave of db1, every server set up alike.
    pub fn three(setup: crate::mariadb::Setup) -> Spec {
        let server = |host, last, source| Server {
            host,
            last,
            source,
            setup: setup.clone(),
        };
        Spec {
            servers: vec![
                server("db1", 11, 12),
                server("db2", 12, 11),
                server("db3", 13, 11),
            ],
            append: String::new(),
            nodes: Vec::new(),
            mysql_pid_file: true,
        }
    }
}

impl Cluster {
    /// `replace` edits conf/lab.toml (pairs of from, to) before it is written.
    pub fn start(tag: &str, replace: &[(&str, &str)]) -> Cluster {
        Cluster::start_spec(tag, replace, &Spec::three(crate::mariadb::Setup::default()))
    }

    /// As [`Cluster::start`], with the servers and config additions of `spec`.
    pub fn start_spec(tag: &str, replace: &[(&str, &str)], spec: &Spec) -> Cluster {
        Cluster::start_spec_from(tag, replace, spec, &bin("mmm-agent"))
    }

    /// As [`Cluster::start_spec`], every agent run from the binary at `agent`.
    pub fn start_spec_from(
        tag: &str,
        replace: &[(&str, &str)],
        spec: &Spec,
        agent: &Path,
    ) -> Cluster {
        let more: Vec<(&str, u8)> = spec
            .servers
            .iter()
            .filter(|s| !["db1", "db2", "db3"].contains(&s.host))
            .map(|s| (s.host, s.last))
            .chain(spec.nodes.iter().copied())
            .collect();
        let lab = Lab::with_nodes(tag, "", &more);
        let mut text = std::fs::read_to_string(&lab.config).expect("lab config");
        let status = lab.dir.path().join("status.json");
        text = text.replace("/tmp/mmm-lab/status", status.to_str().expect("UTF-8 path"));
        for (from, to) in replace {
            assert!(text.contains(from), "lab.toml lacks {from:?}");
            text = text.replacen(from, to, 1);
        }
        text.push('\n');
        text.push_str(&spec.append);
        // The probe finds an already running mysqld through its pid file.
        let pid_files = spec.servers.iter().filter(|_| spec.mysql_pid_file);
        for (host, last) in pid_files.map(|s| (s.host, s.last)) {
            let ip_line = format!("ip = \"192.0.2.{last}\"\n");
            let pid = lab.dir.path().join(format!("{host}.pid"));
            text = text.replacen(
                &ip_line,
                &format!("{ip_line}mysql_pid_file = \"{}\"\n", pid.display()),
                1,
            );
        }
        std::fs::write(&lab.config, text).expect("writing the lab config");
        let dbs: Vec<_> = spec
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                crate::mariadb::Mariadb::start_with(
                    &lab.net,
                    s.host,
                    i as u32 + 1,
                    lab.dir.path(),
                    &s.setup,
                )
            })
            .collect();
        let repoint = |db: &crate::mariadb::Mariadb, s: &Server| {
            db.sql(&format!(
                "CHANGE MASTER TO MASTER_HOST='192.0.2.{}', MASTER_USER='{}', MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE",
                s.source, s.setup.repl.0, s.setup.repl.1
            ))
        };
        // db2 first: the usual lab's order (db1's link back to its peer comes after).
        let order = |s: &&Server| (s.host != "db2", s.host != "db1");
        let mut servers: Vec<&Server> = spec.servers.iter().collect();
        servers.sort_by_key(order);
        for s in servers {
            let db = dbs
                .iter()
                .find(|d| d.node == s.host)
                .expect("started above");
            repoint(db, s);
        }
        let agents = spec
            .servers
            .iter()
            .map(|s| lab.agent_from(s.host, &format!("agent-{}.log", s.host), agent))
            .collect();
        Cluster {
            lab,
            dbs,
            agents,
            monitor: None,
        }
    }

    pub fn db(&self, host: &str) -> &crate::mariadb::Mariadb {
        self.dbs
            .iter()
            .find(|d| d.node == host)
            .unwrap_or_else(|| panic!("no server {host}"))
    }

    /// Starts mmm-monitor in the monitor's namespace; waits until it answers `ping`.
    pub fn start_monitor(&mut self, log: &str) -> u32 {
        self.start_monitor_from(log, &bin("mmm-monitor"))
    }

    /// As [`Cluster::start_monitor`], from the binary at `bin` (another release's, say).
    pub fn start_monitor_from(&mut self, log: &str, bin: &Path) -> u32 {
        let pid = self.lab.net.spawn(
            "mon",
            &[
                bin.to_str().expect("UTF-8 path"),
                "--config",
                self.lab.config.to_str().expect("UTF-8 path"),
            ],
            &self.lab.dir.path().join(log),
        );
        self.monitor = Some(pid);
        let up = wait_for(Duration::from_secs(10), || {
            (self.control(&["ping"]).1 == "OK: Pinged successfully!\n").then_some(())
        });
        assert!(
            up.is_some(),
            "monitor did not answer:\n{}",
            self.lab.log(log)
        );
        pid
    }

    /// Replaces `host`'s agent: SIGTERM, and once it has exited the binary at `agent`
    /// starts with the same config, logging to `log`. The agent keeps its VIPs and
    /// read_only across the restart (its lease deadline is in its state_dir).
    pub fn restart_agent(&mut self, host: &str, log: &str, agent: &Path) {
        let i = self
            .dbs
            .iter()
            .position(|d| d.node == host)
            .unwrap_or_else(|| panic!("no server {host}"));
        self.lab.net.signal(self.agents[i], "TERM");
        assert!(
            self.lab
                .net
                .wait_exit(self.agents[i], Duration::from_secs(10)),
            "{host}'s agent ignored SIGTERM:\n{}",
            self.lab.logs_of(host)
        );
        self.agents[i] = self.lab.agent_from(host, log, agent);
    }

    /// Stops the monitor with SIGTERM and waits for it.
    pub fn stop_monitor(&mut self) {
        if let Some(pid) = self.monitor.take() {
            self.lab.net.signal(pid, "TERM");
            assert!(
                self.lab.net.wait_exit(pid, Duration::from_secs(10)),
                "monitor ignored SIGTERM"
            );
        }
    }

    /// Runs mmm-control against the monitor; returns (exit code, stdout).
    pub fn control(&self, args: &[&str]) -> (i32, String) {
        let bin = bin("mmm-control");
        let sock = self.lab.dir.path().join("control.sock");
        let mut full = vec![
            bin.to_str().expect("UTF-8 path"),
            "--monitor",
            sock.to_str().expect("UTF-8 path"),
            "--timeout",
            "30",
        ];
        full.extend_from_slice(args);
        let out = self.lab.net.try_exec("mon", &full);
        (out.status.code().unwrap_or(-1), crate::shown(&out))
    }

    /// The `show` line of one host.
    pub fn show_line(&self, host: &str) -> String {
        let (_, out) = self.control(&["show"]);
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{host}(")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Waits until `host`'s show line is exactly `line` (trimmed); panics with `show`.
    pub fn wait_line(&self, host: &str, line: &str, timeout: Duration) {
        let ok = wait_for(timeout, || (self.show_line(host) == line).then_some(()));
        if ok.is_none() {
            panic!(
                "{host} never showed {line:?}; show:\n{}",
                self.control(&["show"]).1
            );
        }
    }

    /// Waits until `host`'s show line contains `needle`; panics with the whole `show`.
    pub fn wait_show(&self, host: &str, needle: &str, timeout: Duration) {
        let ok = wait_for(timeout, || {
            self.show_line(host).contains(needle).then_some(())
        });
        if ok.is_none() {
            panic!(
                "{host} never showed {needle:?}; show:\n{}",
                self.control(&["show"]).1
            );
        }
    }
}

impl Cluster {
    /// set_online for db1, db2, db3 (db1 first: it becomes the writer), then waits for
    /// the writer and the readers to be placed.
    pub fn bring_online(&self) {
        let t = Duration::from_secs(20);
        let hosts: Vec<&str> = self.dbs.iter().map(|d| d.node.as_str()).collect();
        for &h in &hosts {
            let reply = wait_for(t, || {
                let (code, out) = self.control(&["set_online", h]);
                (code == 0).then_some(out)
            });
            let want = format!("OK: State of '{h}' changed to ONLINE. Now you can wait some time and check its new roles!\n");
            assert_eq!(
                reply.as_deref(),
                Some(want.as_str()),
                "set_online {h}; show:\n{}",
                self.control(&["show"]).1
            );
        }
        self.wait_show("db1", "writer(192.0.2.100)", t);
        for h in hosts.iter().filter(|h| **h != "db1") {
            self.wait_show(h, "reader(", t);
        }
    }

    /// The monitor's log lines.
    pub fn monitor_log(&self, name: &str) -> String {
        self.lab.log(name)
    }
}

/// A link to `host`'s agent from the monitor's namespace that heartbeats continuously in
/// the background and passes on every probe event with the moment it arrived. Like the
/// monitor's own links it reconnects at once when the agent closes the session (a loaded
/// test machine can stall the agent long enough for its freeze detection to do that).
pub fn probe_events(
    lab: &Lab,
    host: &str,
) -> std::sync::mpsc::Receiver<(std::time::Instant, mmm_common::proto::ProbeEventKind, u32)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (addr, key, ns, host) = (
        lab.agent_addr(host),
        lab.key.clone(),
        lab.net.node("mon").ns.clone(),
        host.to_string(),
    );
    std::thread::spawn(move || {
        block_on_in(&ns, move || async move {
            let mut link = AgentLink::connect(addr, &key, "mon", &host, T)
                .await
                .expect("link to the agent");
            let _ = ready_tx.send(());
            loop {
                if link.heartbeat(0, T).await.is_err() {
                    // The agent closed the session: come back, as the monitor does.
                    match AgentLink::connect(addr, &key, "mon", &host, T).await {
                        Ok(again) => link = again,
                        Err(_) => return,
                    }
                    continue;
                }
                for m in link.take_events() {
                    if let mmm_common::proto::Message::ProbeEvent(e) = m {
                        if tx
                            .send((std::time::Instant::now(), e.kind, e.tgid))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        })
    });
    // Events are only seen once the link is up: return then, not before.
    ready_rx
        .recv_timeout(T)
        .expect("the link to the agent did not come up");
    rx
}
