//! Debian's HAProxy in the lab's client namespace, routing MySQL connections to the two
//! masters by each agent's `/writer` health check, as an operator who puts HAProxy in
//! front of the cluster configures it. Used by tests/tests/haproxy.rs and by the
//! failover bench's HAProxy client.

use crate::lab::Cluster;
use crate::netns::wait_for;
use std::path::PathBuf;
use std::time::Duration;

/// HAProxy's frontend for writes, in the client's namespace.
pub const FRONTEND: (&str, u16) = ("127.0.0.1", 3307);

/// The agents' HTTP listener, which HAProxy checks (`Cluster::start`'s edit of lab.toml).
pub const AGENT_HTTP: (&str, &str) = ("[agent]\n", "[agent]\nhttp = \"0.0.0.0:9991\"\n");

/// HAProxy checks each master's agent every 200 ms and takes one answer as the truth
/// (fall 1, rise 1): a host leaves the moment its agent says it is not the writer.
/// `on-marked-down shutdown-sessions` ends the sessions of a server marked down.
pub fn config() -> String {
    let (host, port) = FRONTEND;
    format!(
        "global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
frontend writes
    bind {host}:{port}
    default_backend masters
backend masters
    option httpchk GET /writer
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions
    server db1 192.0.2.11:3306 check port 9991
    server db2 192.0.2.12:3306 check port 9991
"
    )
}

/// HAProxy running in the client's namespace; it ends with the lab's processes.
pub struct Haproxy {
    pub pid: u32,
    log: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with [`config`] and waits (bounded by `t`) until its first checks
    /// have marked the server that is not the writer (db2) down, so the frontend routes
    /// to the writer alone from then on. Panics when it never does.
    pub fn start(c: &Cluster, t: Duration) -> Haproxy {
        let config = c.lab.dir.write("haproxy.cfg", &config(), 0o600);
        let log = c.lab.dir.path().join("haproxy.log");
        let pid = c.lab.net.spawn(
            "client",
            &["haproxy", "-db", "-f", config.to_str().expect("UTF-8 path")],
            &log,
        );
        let h = Haproxy { pid, log };
        assert!(
            h.wait_log("masters/db2 is DOWN", t),
            "HAProxy never marked db2 down:\n{}",
            h.log()
        );
        h
    }

    /// What HAProxy logged so far (its state changes, with their reasons).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log holds `needle`; whether it did.
    pub fn wait_log(&self, needle: &str, t: Duration) -> bool {
        wait_for(t, || self.log().contains(needle).then_some(())).is_some()
    }
}

/// Whether Debian's HAProxy is installed (`cargo xtask test` and `bench` install it).
pub fn installed() -> bool {
    std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok()
}
