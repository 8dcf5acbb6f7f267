//! A real etcd cluster for the fleet tests: Debian's etcd-server, members on loopback
//! ports, data in a temp dir, every member ended (by PID) and its data removed on drop,
//! even when the test panics. Timings as in production recommendations for a LAN: a 50 ms
//! heartbeat and a 500 ms election timeout, so a lost leader is replaced in about a second.

use crate::TempDir;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_url: String,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub dir: TempDir,
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
                    .args(["--name", name])
                    .args(["--data-dir", &dir.path().join(name).display().to_string()])
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", tag])
                    .args(["--heartbeat-interval", "50"])
                    .args(["--election-timeout", "500"])
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
                }
            })
            .collect();
        let cluster = EtcdCluster { members, dir };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Waits until etcdctl reports every member healthy; panics with the members' logs.
    fn wait_healthy(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoints().join(",")])
                .args(["--dial-timeout", "1s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
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
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The data dir goes with `dir` (TempDir), after the members are gone.
    }
}
