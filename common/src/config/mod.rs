//! The one TOML configuration shared by monitor, agents and mmm-control (conf/mmm.toml
//! documents every key).
//!
//! Loading is two steps: [`Config::parse`] turns text into a validated [`Config`] without
//! touching the file system, reporting every problem at once, each naming its key;
//! [`Config::load`] adds what needs the file system (the file's own mode, secret files).

mod raw;
pub mod reload;
mod secret;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
mod validate;

pub use secret::{ClusterKey, KeyError, Secret, SecretError};
pub use tls::MysqlTls;

use crate::types::{CheckKind, Fencing, HostMode, MonitorMode, ProbeMode, RoleMode, TlsMode};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub active_master_role: String,
    /// In file order: MMM broke role-distribution ties by it.
    pub hosts: Vec<Host>,
    /// In file order.
    pub roles: Vec<Role>,
    pub monitor: MonitorConfig,
    pub checks: Checks,
    pub agent: AgentConfig,
    pub security: SecurityConfig,
    /// A monitor fleet on etcd (`[coordination]`); `None`: one monitor, a status file.
    pub coordination: Option<Coordination>,
}

/// `[coordination]`: the etcd cluster a monitor fleet coordinates through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordination {
    /// Client URLs of the etcd members (`http://10.0.0.5:2379`).
    pub etcd: Vec<String>,
    /// One per cluster: the election, the status and the published writer live under it.
    pub prefix: String,
    /// TTL of the leader's etcd session and of each agent's writer permit, whole seconds
    /// (etcd grants no less than 1 s). Default: the least that outlives an etcd leader
    /// election ([`Coordination::min_session_ttl`]).
    pub session_ttl: Duration,
    /// etcd's own `--election-timeout` and `--heartbeat-interval` (etcd's defaults 1 s and
    /// 100 ms): how long an etcd leader election can stall every renewal.
    pub etcd_election_timeout: Duration,
    pub etcd_heartbeat_interval: Duration,
    /// With `https://` endpoints: how etcd's certificate is checked, and ours if any.
    pub tls: Option<EtcdTls>,
}

impl Coordination {
    /// The longest an etcd leader election stalls every request: a follower notices its
    /// leader's silence after a randomised election timeout of up to twice the configured
    /// one, then a vote round of about a heartbeat.
    pub fn etcd_election_bound(&self) -> Duration {
        2 * self.etcd_election_timeout + self.etcd_heartbeat_interval
    }

    /// The least `session_ttl` whose permit outlives an etcd leader election. An agent
    /// renews every TTL/8 and its permit lasts 3/4 TTL after the last answered renewal was
    /// sent; with the leader gone right after one, the renewals fail until the election
    /// is over (at most [`Coordination::etcd_election_bound`]) and the first retry after
    /// it comes at most a retry gap (TTL/8) later and is answered within TTL/8: the
    /// permit holds while TTL/8 + election + TTL/8 + TTL/8 < 3/4 TTL, that is while the
    /// election is shorter than 3/8 TTL. Three elections' bound, in whole seconds, keeps a
    /// margin for moving off a dead member on top.
    pub fn min_session_ttl(&self) -> Duration {
        min_session_ttl(self.etcd_election_bound())
    }
}

/// [`Coordination::min_session_ttl`] for an election bound.
pub fn min_session_ttl(election: Duration) -> Duration {
    let ms = (3 * election).as_millis() as u64;
    Duration::from_secs(ms.div_ceil(1000).max(1))
}

/// TLS to etcd: the CA that signed the members' certificates, and a client certificate
/// with its key when etcd requires one (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mode: HostMode,
    /// The other master; always set for masters, never for slaves.
    pub peer: Option<String>,
    pub cluster_interface: String,
    pub agent_port: u16,
    pub mysql_port: u16,
    pub agent_user: String,
    pub agent_password: Secret,
    pub monitor_user: String,
    pub monitor_password: Secret,
    pub replication_user: String,
    pub replication_password: Secret,
    pub mysql_pid_file: Option<PathBuf>,
    /// TLS for every connection the agent and the monitor open to this host's server.
    pub mysql_tls: MysqlTls,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub name: String,
    pub mode: RoleMode,
    pub hosts: Vec<String>,
    pub ips: Vec<Ipv4Addr>,
    pub prefer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ControlAddr {
    /// Whether the cluster key guards it: every TCP socket does (any local user reaches
    /// loopback); a unix socket is guarded by its mode (0600, the monitor's user).
    pub fn keyed(&self) -> bool {
        matches!(self, ControlAddr::Tcp(_))
    }
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Tcp(a) => write!(f, "{a}"),
            ControlAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    pub control: ControlAddr,
    pub status_path: PathBuf,
    pub ping_ips: Vec<IpAddr>,
    pub ping_interval: Duration,
    pub heartbeat_interval: Duration,
    pub agent_timeout: Duration,
    pub flap_duration: Duration,
    pub flap_count: u32,
    /// `None` when `auto_set_online = "0s"` (off, as in MMM).
    pub auto_set_online: Option<Duration>,
    pub failback: bool,
    pub kill_host_bin: Option<PathBuf>,
    /// Run for every state change, role move, promotion step and refusal, with one JSON
    /// event on stdin (in order, bounded in time, never blocking the monitor).
    pub notify_command: Option<PathBuf>,
    pub careful_startup: bool,
    pub mode: MonitorMode,
    pub wait_for_other_master: Duration,
    pub promotion_timeout: Duration,
    /// Prometheus text endpoint, off when unset (`http` serves `/metrics` too).
    pub metrics: Option<SocketAddr>,
    /// The read-only HTTP listener (live page, `/status`, `/hosts/NAME`, `/events`,
    /// `/metrics`), off when unset.
    pub http: Option<SocketAddr>,
    /// A token (one line, the file 0600) every HTTP request must carry, as a bearer
    /// token or as basic auth's password; none: no authentication.
    pub http_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    pub check_period: Duration,
    /// How long an ambiguous failure must last before it counts (MMM's trap_period).
    pub trap_period: Duration,
    pub timeout: Duration,
    /// MMM restarted its checker process after this many checks; kept for import
    /// fidelity, our checkers reuse connections instead.
    pub restart_after: u32,
    pub max_backlog: Duration,
}

/// The effective settings of each check: `[checks.default]` overlaid by `[checks.NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub ping: CheckConfig,
    pub mysql: CheckConfig,
    pub rep_threads: CheckConfig,
    pub rep_backlog: CheckConfig,
}

impl Checks {
    pub fn get(&self, kind: CheckKind) -> &CheckConfig {
        match kind {
            CheckKind::Ping => &self.ping,
            CheckKind::Mysql => &self.mysql,
            CheckKind::RepThreads => &self.rep_threads,
            CheckKind::RepBacklog => &self.rep_backlog,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub probe: ProbeMode,
    pub fencing: Fencing,
    pub lease: Duration,
    pub max_kill_retries: u32,
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// `None` when `garp_refresh = "0s"` (off).
    pub garp_refresh: Option<Duration>,
    /// Where the agent keeps its lease deadline across its own restarts (a tmpfs such as
    /// /run/mmm: the deadline means nothing after a reboot, when the VIPs are gone too).
    pub state_dir: PathBuf,
    /// The addresses monitors connect from; any other peer is closed before the handshake.
    /// Empty: any address (the handshake still authenticates).
    pub monitor_ips: Vec<IpAddr>,
    /// The agent reaches its own mysqld through this unix socket; None: at the host's
    /// `ip`:mysql_port, as MMM did (grants like 'mmm_agent'@'10.0.0.%' keep working).
    pub mysql_socket: Option<PathBuf>,
    /// SQL LIKE patterns of accounts locked on a demoted master (sessions killed) and
    /// unlocked on promotion; the agent, monitor and replication users never match.
    pub block_users: Vec<String>,
    /// The agent's read-only HTTP listener for load balancers and Prometheus (`/writer`,
    /// `/reader`, `/health`, `/metrics`), off when unset. One address for every agent, so
    /// an unspecified IP (`0.0.0.0:9991`) or one every database host has (127.0.0.1).
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    pub key: Secret,
}

/// One thing wrong with a configuration, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key (`hosts.db1.peer`), or the file for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in one configuration, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML or has a value of the wrong type")]
    Syntax {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config {path} has {problems}")]
    Invalid { path: PathBuf, problems: Problems },
}

impl ConfigError {
    /// Every problem as one line each, for `--check-config` and start-up refusals.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { path, problems } => problems
                .0
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
            other => {
                let mut line = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    line.push_str(&format!(": {}", s.to_string().trim_end()));
                    source = s.source();
                }
                vec![line]
            }
        }
    }
}

impl Config {
    /// Parses and validates config text; touches no file. `origin` names the text in
    /// errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            path: origin.into(),
            source: Box::new(e),
        })?;
        let raw: raw::RawConfig = serde_ignored::deserialize(de, |path| {
            // serde_ignored writes an optional table as "?": the key is what operators see.
            unknown.push(path.to_string().replace(".?.", "."));
        })
        .map_err(|e| ConfigError::Syntax {
            path: origin.into(),
            source: Box::new(e),
        })?;
        validate::validate(raw, unknown).map_err(|problems| ConfigError::Invalid {
            path: origin.into(),
            problems,
        })
    }

    /// Reads, parses and validates a config file, and checks what needs the file system:
    /// the file and every secret file it names must not be readable by group or others,
    /// and must exist; the TLS files to MySQL must be readable PEM of their kind.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut problems = Vec::new();
        if let Some(p) = secret::insecure_mode(path, "(file)") {
            problems.push(p);
        }
        let config = match Config::parse(&text, path) {
            Ok(c) => Some(c),
            Err(ConfigError::Invalid { problems: p, .. }) => {
                problems.extend(p.0);
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(config) = &config {
            problems.extend(config.secret_file_problems());
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                path: path.into(),
                problems: Problems(problems),
            }),
        }
    }

    /// Values that validate but break a timing rule of docs/operations.md: each names
    /// its key, what breaks and the value that satisfies the rule. `--check-config` prints
    /// them and the monitor and agent log them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.coordination {
            let least = c.min_session_ttl();
            if c.session_ttl < least {
                out.push(format!(
                    "coordination.session_ttl: {:?} does not outlive an etcd leader election (up to {:?} with etcd_election_timeout {:?} and etcd_heartbeat_interval {:?}): the writer's permit can lapse and writes fail when etcd's leader is lost; use at least {:?} (leave it out for that default)",
                    c.session_ttl,
                    c.etcd_election_bound(),
                    c.etcd_election_timeout,
                    c.etcd_heartbeat_interval,
                    least
                ));
            }
        }
        let verify_ca: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| h.mysql_tls.mode == TlsMode::VerifyCa)
            .map(|h| h.name.as_str())
            .collect();
        if !verify_ca.is_empty() {
            // mysql_async 0.37.1 cannot skip only the name check with rustls 0.23
            // (blackbeam/mysql_async#404, fixed after that release).
            out.push(format!(
                "mysql_tls: \"verify_ca\" on {} also checks that the server's certificate names the host's ip (the MySQL driver cannot yet skip only that check): a certificate without it is refused; say verify_identity to mean it",
                verify_ca.join(", ")
            ));
        }
        out
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Secret files named by the config that are missing or too open, and TLS files that
    /// are missing or not what their key says.
    fn secret_file_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut check = |secret: &Secret, key: String| {
            if let Secret::File(path) = secret {
                if seen.insert(path.clone()) {
                    out.extend(secret::file_problem(path, &key));
                }
            }
        };
        check(&self.security.key, "security.key_file".into());
        for h in &self.hosts {
            check(
                &h.agent_password,
                format!("hosts.{}.agent_password_file", h.name),
            );
            check(
                &h.monitor_password,
                format!("hosts.{}.monitor_password_file", h.name),
            );
            check(
                &h.replication_password,
                format!("hosts.{}.replication_password_file", h.name),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.hosts {
            out.extend(tls::file_problems(h, &mut seen));
        }
        out
    }
}

#[cfg(test)]
mod tests;
