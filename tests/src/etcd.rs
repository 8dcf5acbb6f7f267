//! A real etcd cluster for the fleet tests: Debian's etcd-server, members on loopback
//! ports, data in a temp dir, every member ended (by PID) and its data removed on drop,
//! even when the test panics. [`EtcdCluster::start_in`] runs the members in lab
//! namespaces instead, on their nodes' addresses, so agents in the lab reach them. Timings as in production recommendations for a LAN: a 50 ms
//! heartbeat and a 500 ms election timeout, so a lost leader is replaced in about a second.

use crate::netns::{send_signal, Net};
use crate::TempDir;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_url: String,
    child: Option<Child>,
    /// A member started in a lab namespace: the lab's `Net` owns (and reaps) its process.
    pid: Option<u32>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub dir: TempDir,
    /// The namespace etcdctl runs in (None: this one, for loopback members).
    ctl_ns: Option<String>,
}

/// etcd's flags for one member of a new cluster.
fn member_args(
    name: &str,
    data: &std::path::Path,
    client_url: &str,
    peer_url: &str,
    initial: &[String],
    token: &str,
) -> Vec<String> {
    [
        ("--name", name.to_string()),
        ("--data-dir", data.display().to_string()),
        ("--listen-client-urls", client_url.into()),
        ("--advertise-client-urls", client_url.into()),
        ("--listen-peer-urls", peer_url.into()),
        ("--initial-advertise-peer-urls", peer_url.into()),
        ("--initial-cluster", initial.join(",")),
        ("--initial-cluster-state", "new".into()),
        ("--initial-cluster-token", token.into()),
        ("--heartbeat-interval", "50".into()),
        ("--election-timeout", "500".into()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// A port nobody listens on now (the kernel picks it; the race with another taker is
/// harmless in a test: etcd then fails to start and says why).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (bounded).
    pub fn start(tag: &str, n: usize) -> EtcdCluster {
        let dir = TempDir::new(tag);
        let peers: Vec<(String, u16, u16)> = (1..=n)
            .map(|i| (format!("m{i}"), free_port(), free_port()))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .map(|(name, peer, _)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect();
        let members = peers
            .iter()
            .map(|(name, peer, client)| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = std::fs::File::create(dir.path().join(format!("{name}.log")))
                    .expect("etcd log file");
                let child = Command::new("etcd")
                    .args(member_args(
                        name,
                        &dir.path().join(name),
                        &client_url,
                        &peer_url,
                        &initial,
                        tag,
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("starting etcd {name} (apt-get install etcd-server): {e}")
                    });
                Member {
                    name: name.clone(),
                    client_url,
                    child: Some(child),
                    pid: None,
                }
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            dir,
            ctl_ns: None,
        };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Starts one member in each of the lab's `nodes` (already on its bridge), listening
    /// on the node's address (client port 2379, peer port 2380), and waits until the
    /// cluster answers. Member names are the node names. The lab's `Net` must outlive it.
    pub fn start_in(net: &Net, tag: &str, nodes: &[&str]) -> EtcdCluster {
        let dir = TempDir::new(tag);
        let initial: Vec<String> = nodes
            .iter()
            .map(|n| format!("{n}=http://{}:2380", net.node(n).ip))
            .collect();
        let members = nodes
            .iter()
            .map(|&name| {
                let ip = net.node(name).ip;
                let client_url = format!("http://{ip}:2379");
                let peer_url = format!("http://{ip}:2380");
                let mut args = vec!["etcd".to_string()];
                args.extend(member_args(
                    name,
                    &dir.path().join(name),
                    &client_url,
                    &peer_url,
                    &initial,
                    tag,
                ));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let pid = net.spawn(name, &args, &dir.path().join(format!("{name}.log")));
                Member {
                    name: name.to_string(),
                    client_url,
                    child: None,
                    pid: Some(pid),
                }
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            dir,
            ctl_ns: Some(net.node(nodes[0]).ns.clone()),
        };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Runs `etcdctl` (API 3) against every member, from a namespace that reaches them.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.ctl_ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints().join(",")])
            .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running etcdctl {args:?}: {e}"))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Waits until etcdctl reports every member healthy; panics with the members' logs.
    fn wait_healthy(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            let ok = self.etcdctl(&["endpoint", "health"]).status.success();
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd did not become healthy within {within:?}:\n{}",
            self.logs()
        );
    }

    /// Every member's log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!(
                    "--- {}:\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops a member with SIGKILL (a lost machine).
    pub fn kill(&mut self, name: &str) {
        if let Some(m) = self.members.iter_mut().find(|m| m.name == name) {
            m.stop();
        }
    }
}

impl Member {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.pid.take() {
            // The lab's Net reaps it; it stops serving at once.
            let _ = send_signal(pid, "KILL");
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.stop();
        }
        // The data dir goes with `dir` (TempDir), after the members are gone.
    }
}
