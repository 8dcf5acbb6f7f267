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
    peer_url: String,
    child: Option<Child>,
    /// A member started in a lab namespace: the lab's `Net` owns (and reaps) its process.
    pid: Option<u32>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub dir: TempDir,
    /// The namespace etcdctl runs in (None: this one, for loopback members).
    ctl_ns: Option<String>,
    /// etcdctl's TLS flags when the members speak https.
    ctl_tls: Vec<String>,
    /// `--initial-cluster` and `--initial-cluster-token`: a cluster re-created with the
    /// same ones gets the same cluster id and member ids.
    initial: Vec<String>,
    token: String,
}

/// Certificates for TLS to etcd, made with openssl: a CA, the member's certificate (for
/// 127.0.0.1) and a client certificate, all signed by the CA; and a second CA that
/// signed nothing, to show a wrong CA is refused.
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

impl TlsFiles {
    pub fn generate(dir: &std::path::Path) -> TlsFiles {
        let p = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let s = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_string();
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN=mmm test {ca}"),
                "-keyout",
                &s(&p(&format!("{ca}.key"))),
                "-out",
                &s(&p(&format!("{ca}.pem"))),
            ]);
        }
        let ext = p("san.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("writing the certificate extensions");
        for who in ["server", "client"] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN=mmm test {who}"),
                "-keyout",
                &s(&p(&format!("{who}.key"))),
                "-out",
                &s(&p(&format!("{who}.csr"))),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &s(&p(&format!("{who}.csr"))),
                "-CA",
                &s(&p("ca.pem")),
                "-CAkey",
                &s(&p("ca.key")),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &s(&ext),
                "-out",
                &s(&p(&format!("{who}.pem"))),
            ]);
        }
        TlsFiles {
            ca: p("ca.pem"),
            other_ca: p("other-ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        }
    }
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

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (bounded).
    pub fn start(tag: &str, n: usize) -> EtcdCluster {
        EtcdCluster::start_with(tag, n, None)
    }

    /// As [`EtcdCluster::start`]; with `tls`, clients must speak https and present a
    /// certificate signed by its CA (`--client-cert-auth`).
    pub fn start_with(tag: &str, n: usize, tls: Option<&TlsFiles>) -> EtcdCluster {
        let dir = TempDir::new(tag);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let flags = |pairs: [(&str, &std::path::Path); 3]| -> Vec<String> {
            pairs
                .iter()
                .flat_map(|(k, v)| [k.to_string(), v.display().to_string()])
                .collect()
        };
        let tls_args: Vec<String> = tls
            .map(|t| {
                let mut f = flags([
                    ("--cert-file", &t.server_cert),
                    ("--key-file", &t.server_key),
                    ("--trusted-ca-file", &t.ca),
                ]);
                f.push("--client-cert-auth".into());
                f
            })
            .unwrap_or_default();
        let ctl_tls: Vec<String> = tls
            .map(|t| {
                flags([
                    ("--cacert", &t.ca),
                    ("--cert", &t.client_cert),
                    ("--key", &t.client_key),
                ])
            })
            .unwrap_or_default();
        let peers: Vec<(String, u16, u16)> = (1..=n)
            .map(|i| (format!("m{i}"), crate::free_port(), crate::free_port()))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .map(|(name, peer, _)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect();
        let members = peers
            .iter()
            .map(|(name, peer, client)| {
                let client_url = format!("{scheme}://127.0.0.1:{client}");
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
                    .args(&tls_args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("starting etcd {name} (apt-get install etcd-server): {e}")
                    });
                Member {
                    name: name.clone(),
                    client_url,
                    peer_url,
                    child: Some(child),
                    pid: None,
                }
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            dir,
            ctl_ns: None,
            ctl_tls,
            initial,
            token: tag.to_string(),
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
                let mut m = Member {
                    name: name.to_string(),
                    client_url: format!("http://{ip}:2379"),
                    peer_url: format!("http://{ip}:2380"),
                    child: None,
                    pid: None,
                };
                m.pid = Some(m.spawn_in(net, dir.path(), &initial, tag));
                m
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            dir,
            ctl_ns: Some(net.node(nodes[0]).ns.clone()),
            ctl_tls: Vec::new(),
            initial,
            token: tag.to_string(),
        };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// etcd lost and set up again (members started by [`EtcdCluster::start_in`]): every
    /// member killed, its data deleted, and a fresh cluster started on the same addresses
    /// with the same names and token, so with the same cluster and member ids. Revisions
    /// start again at 1; every key and lease is gone.
    pub fn wipe_and_recreate_in(&mut self, net: &Net) {
        self.kill_all_in(net);
        for m in &self.members {
            let data = self.dir.path().join(&m.name);
            std::fs::remove_dir_all(&data)
                .unwrap_or_else(|e| panic!("deleting {}: {e}", data.display()));
        }
        self.start_all_in(net);
    }

    /// `etcdctl snapshot save` from the first member, into `path`.
    pub fn snapshot_save(&self, path: &std::path::Path) {
        let out = self.etcdctl_at(
            &self.members[0].client_url,
            &["snapshot", "save", path.to_str().expect("UTF-8 path")],
        );
        assert!(
            out.status.success(),
            "snapshot save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// etcd lost and restored from `snapshot` as etcd's disaster recovery says (members
    /// started by [`EtcdCluster::start_in`]): every member killed, its data deleted and
    /// `etcdctl snapshot restore`d into a fresh data dir with the same names, peer URLs
    /// and token, then started. Keys, leases and revisions go back to the snapshot.
    pub fn restore_in(&mut self, net: &Net, snapshot: &std::path::Path) {
        self.kill_all_in(net);
        for m in &self.members {
            let data = self.dir.path().join(&m.name);
            std::fs::remove_dir_all(&data)
                .unwrap_or_else(|e| panic!("deleting {}: {e}", data.display()));
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "snapshot",
                    "restore",
                    snapshot.to_str().expect("UTF-8 path"),
                ])
                .args(["--name", &m.name])
                .args(["--data-dir", data.to_str().expect("UTF-8 path")])
                .args(["--initial-cluster", &self.initial.join(",")])
                .args(["--initial-cluster-token", &self.token])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .output()
                .expect("running etcdctl snapshot restore");
            assert!(
                out.status.success(),
                "snapshot restore for {}: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.start_all_in(net);
    }

    fn kill_all_in(&mut self, net: &Net) {
        for m in &mut self.members {
            if let Some(pid) = m.pid {
                m.stop();
                assert!(
                    net.wait_exit(pid, Duration::from_secs(10)),
                    "etcd {} did not exit after SIGKILL",
                    m.name
                );
            }
        }
    }

    fn start_all_in(&mut self, net: &Net) {
        for m in &mut self.members {
            m.pid = Some(m.spawn_in(net, self.dir.path(), &self.initial, &self.token));
        }
        self.wait_healthy(Duration::from_secs(20));
    }

    /// Runs `etcdctl` (API 3) against every member, from a namespace that reaches them.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.endpoints().join(","), args)
    }

    /// Runs `etcdctl` (API 3) against `endpoints` (comma-separated).
    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut cmd = match &self.ctl_ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints])
            .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
            .args(&self.ctl_tls)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running etcdctl {args:?}: {e}"))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Waits until etcdctl reports every member healthy; panics with the members' logs.
    pub fn wait_healthy(&self, within: Duration) {
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

    /// The member that leads etcd's raft now, as `etcdctl endpoint status` reports it
    /// (None while no answering member names a leader among the answering ones).
    pub fn raft_leader(&self) -> Option<String> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find_map(|e| {
            let status = &e["Status"];
            let me = status["header"]["member_id"].as_u64()?;
            (status["leader"].as_u64()? == me).then(|| {
                let url = e["Endpoint"].as_str().unwrap_or_default();
                self.members
                    .iter()
                    .find(|m| m.client_url == url)
                    .map(|m| m.name.clone())
            })?
        })
    }

    /// Waits until etcd's raft has a leader and returns it.
    pub fn wait_raft_leader(&self, within: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(l) = self.raft_leader() {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd has no raft leader:\n{}", self.logs());
    }

    /// The members that do not lead etcd's raft now (waits for a leader).
    pub fn followers(&self, within: Duration) -> Vec<String> {
        let leader = self.wait_raft_leader(within);
        self.members
            .iter()
            .map(|m| m.name.clone())
            .filter(|m| *m != leader)
            .collect()
    }

    /// Sends `signal` (KILL, STOP, CONT) to a member's process.
    pub fn signal(&self, name: &str, signal: &str) {
        let m = self
            .members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no etcd member {name}"));
        let pid = m
            .pid
            .or_else(|| m.child.as_ref().map(|c| c.id()))
            .unwrap_or_else(|| panic!("etcd member {name} is not running"));
        send_signal(pid, signal).unwrap_or_else(|e| panic!("SIG{signal} to etcd {name}: {e}"));
    }

    /// Starts a member stopped by [`EtcdCluster::kill`] again, on its data (a machine back
    /// after a crash), in the lab namespace of the same name.
    pub fn restart_in(&mut self, net: &Net, name: &str) {
        let (dir, initial, token) = (
            self.dir.path().to_path_buf(),
            self.initial.clone(),
            self.token.clone(),
        );
        let m = self
            .members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no etcd member {name}"));
        assert!(
            m.pid.is_none() && m.child.is_none(),
            "etcd {name} is running"
        );
        m.pid = Some(m.spawn_in(net, &dir, &initial, &token));
    }

    /// Stops a member with SIGKILL (a lost machine).
    pub fn kill(&mut self, name: &str) {
        if let Some(m) = self.members.iter_mut().find(|m| m.name == name) {
            m.stop();
        }
    }
}

impl Member {
    /// Starts this member in the lab namespace of the same name, logging to
    /// `<dir>/<name>.log` (a member started again logs to `<name>.log.1`, `.2`, ...).
    fn spawn_in(&self, net: &Net, dir: &std::path::Path, initial: &[String], token: &str) -> u32 {
        let mut args = vec!["etcd".to_string()];
        args.extend(member_args(
            &self.name,
            &dir.join(&self.name),
            &self.client_url,
            &self.peer_url,
            initial,
            token,
        ));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let n = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{}.log", self.name))
                    })
                    .count()
            })
            .unwrap_or(0);
        let log = if n == 0 {
            format!("{}.log", self.name)
        } else {
            format!("{}.log.{n}", self.name)
        };
        net.spawn(&self.name, &args, &dir.join(log))
    }

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
