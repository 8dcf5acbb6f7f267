//! The agent lab: bridge, db1..db3, client and monitor namespaces on 192.0.2.0/24, the
//! lab config with a fresh key, and agents started as uid 65534 with their four
//! capabilities. Shared by the agent tests and the agent benchmark.

use crate::netns::{block_on_in, wait_for, Net};
use crate::{bin, TempDir};
use mmm_common::config::ClusterKey;
use mmm_common::proto::DesiredState;
use mmm_common::types::HostState;
use mmm_monitor::agents::link::AgentLink;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Bound on each wait of the lab's helpers.
pub const T: Duration = Duration::from_secs(5);
const NOBODY: u32 = 65534;

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
        let mut net = Net::new(tag);
        for (name, last) in [
            ("db1", 11),
            ("db2", 12),
            ("db3", 13),
            ("client", 50),
            ("mon", 2),
        ] {
            net.add_node(name, ip(last), &format!("02:00:00:00:00:{last:02x}"));
        }
        let dir = TempDir::new(tag);
        // The agent runs as nobody: it must be able to reach its config and key.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let key_hex = ClusterKey::generate_hex().unwrap();
        let key = ClusterKey::from_hex(&key_hex).unwrap();
        let key_path = dir.write("cluster.key", &key_hex, 0o600);
        let text = std::fs::read_to_string(crate::workspace_root().join("conf/lab.toml"))
            .unwrap()
            .replace("/tmp/mmm-lab/cluster.key", key_path.to_str().unwrap());
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
        let pid = self.agent_with_caps(host, log, "-all,+net_admin,+net_raw,+bpf,+perfmon");
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
        pid
    }

    /// Starts an agent as uid 65534 with the given capabilities (setpriv syntax).
    pub fn agent_with_caps(&self, host: &str, log: &str, caps: &str) -> u32 {
        let agent = bin("mmm-agent");
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
    }
}
