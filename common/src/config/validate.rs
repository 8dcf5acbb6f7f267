//! Raw config -> [`Config`], collecting every problem instead of stopping at the first.

use super::raw::{RawCheck, RawConfig, RawCoordination, RawHostFields};
use super::*;
use crate::duration::parse_duration;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// The control socket when none is configured: a unix socket for the monitor's user
/// (a TCP one, loopback included, needs the cluster key).
const DEFAULT_CONTROL: &str = "/run/mmm/mmm-monitor.sock";
/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bounds of the gratuitous ARP burst.
const MAX_GARP_COUNT: u32 = 100;
const MAX_GARP_INTERVAL: Duration = Duration::from_secs(10);

/// Collects problems while converting values; each conversion yields a usable fallback
/// so that validation can go on and find the rest.
pub(super) struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    pub(super) fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: &Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match parse_duration(text) {
                // Every duration ends up in deadline arithmetic (Instant + d, ms as u64):
                // a bound keeps an absurd value from overflowing it.
                Ok(d) if d > MAX_DURATION => {
                    self.problem(key, format!("{text:?} is too long (at most 30 days)"));
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.problem(key, e.to_string());
                    default
                }
            },
        }
    }

    /// An optional `IP:PORT` listener address.
    fn address(&mut self, key: &str, value: &Option<String>) -> Option<SocketAddr> {
        let text = value.as_deref()?;
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_not_an_address) => {
                self.problem(key, format!("{text:?} is not IP:PORT"));
                None
            }
        }
    }

    /// A duration where zero means "off".
    fn optional_duration(&mut self, key: &str, value: &Option<String>) -> Option<Duration> {
        Some(self.duration(key, value, Duration::ZERO)).filter(|d| !d.is_zero())
    }

    fn positive_duration(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(key, value, default);
        if d.is_zero() {
            self.problem(key, "must be greater than zero");
            return default;
        }
        d
    }

    pub(super) fn named<T: FromStr<Err = crate::types::UnknownName>>(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: T,
    ) -> T {
        match value {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|e: crate::types::UnknownName| {
                self.problem(key, e.to_string());
                default
            }),
        }
    }

    fn ipv4(&mut self, key: &str, text: &str) -> Option<Ipv4Addr> {
        match text.trim().parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
                self.problem(key, format!("{ip} cannot be a host or role address"));
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problem(key, format!("{text:?} is not an IPv4 address"));
                None
            }
        }
    }

    fn secret(&mut self, key: &str, inline: &Option<String>, file: &Option<String>) -> Secret {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("give {key} or {key}_file, not both"));
                Secret::Inline(String::new())
            }
            (Some(s), None) => Secret::Inline(s.clone()),
            (None, Some(f)) if f.trim().is_empty() => {
                self.problem(format!("{key}_file"), "is empty");
                Secret::Inline(String::new())
            }
            (None, Some(f)) => Secret::File(PathBuf::from(f)),
            (None, None) => {
                self.problem(
                    key,
                    format!("missing: set {key} or {key}_file (in [defaults] or the host)"),
                );
                Secret::Inline(String::new())
            }
        }
    }
}

pub(super) fn validate(raw: RawConfig, unknown: Vec<String>) -> Result<Config, Problems> {
    let mut c = Collector {
        problems: unknown
            .into_iter()
            .map(|key| Problem {
                key,
                message: "unknown key".into(),
            })
            .collect(),
    };

    let hosts = hosts(&mut c, &raw);
    // Hosts whose mode did not parse got a placeholder; judging them by it would only
    // add misleading follow-on problems.
    let unknown_mode: BTreeSet<&str> = raw
        .hosts
        .iter()
        .filter(|(_, h)| {
            h.mode
                .as_deref()
                .is_some_and(|m| m.parse::<HostMode>().is_err())
        })
        .map(|(n, _)| n.as_str())
        .collect();
    let roles = roles(&mut c, &raw, &hosts);
    let active_master_role = raw
        .active_master_role
        .clone()
        .unwrap_or_else(|| "writer".into());
    check_active_master_role(&mut c, &active_master_role, &roles, &hosts, &unknown_mode);
    check_unique_ips(&mut c, &hosts, &roles);
    let monitor = monitor(&mut c, &raw);
    let checks = checks(&mut c, &raw.checks);
    let agent = agent(&mut c, &raw);
    check_agent_http(&mut c, agent.http, &hosts);
    let security = SecurityConfig {
        key: match (&raw.security.key, &raw.security.key_file) {
            (Some(_), Some(_)) => {
                c.problem("security", "give key or key_file, not both");
                Secret::Inline(String::new())
            }
            (Some(k), None) => {
                if let Err(e) = ClusterKey::from_hex(k) {
                    c.problem("security.key", e.to_string());
                }
                Secret::Inline(k.clone())
            }
            (None, Some(f)) => Secret::File(f.into()),
            (None, None) => {
                c.problem("security.key_file", "missing: the agent protocol needs the cluster key (mmm-control gen-key makes one)");
                Secret::Inline(String::new())
            }
        },
    };
    let coordination = raw.coordination.as_ref().map(|r| coordination(&mut c, r));
    if agent.fencing == Fencing::Lease && agent.lease <= monitor.heartbeat_interval {
        c.problem(
            "agent.lease",
            format!(
                "must be longer than monitor.heartbeat_interval ({:?}), or a healthy writer fences itself",
                monitor.heartbeat_interval
            ),
        );
    }

    if c.problems.is_empty() {
        Ok(Config {
            coordination,
            active_master_role,
            hosts,
            roles,
            monitor,
            checks,
            agent,
            security,
        })
    } else {
        Err(Problems(c.problems))
    }
}

fn hosts(c: &mut Collector, raw: &RawConfig) -> Vec<Host> {
    if raw.hosts.is_empty() {
        c.problem("hosts", "no hosts configured");
    }
    let defaults: &RawHostFields = &raw.defaults;
    let modes: BTreeMap<&str, Option<HostMode>> = raw
        .hosts
        .iter()
        .map(|(n, h)| (n.as_str(), h.mode.as_deref().and_then(|m| m.parse().ok())))
        .collect();
    let peers: BTreeMap<&str, Option<&str>> = raw
        .hosts
        .iter()
        .map(|(n, h)| (n.as_str(), h.peer.as_deref()))
        .collect();

    let mut out = Vec::new();
    for (name, h) in &raw.hosts {
        let key = |k: &str| format!("hosts.{name}.{k}");
        if !valid_name(name) {
            c.problem(
                format!("hosts.{name}"),
                "host names may use letters, digits, '-', '_' and '.' only, and start with a letter, a digit or '_'",
            );
        }
        let ip = match &h.ip {
            Some(ip) => c.ipv4(&key("ip"), ip),
            None => {
                c.problem(key("ip"), "missing");
                None
            }
        };
        let mode = match &h.mode {
            None => {
                c.problem(key("mode"), "missing (master or slave)");
                HostMode::Slave
            }
            some => c.named(&key("mode"), some, HostMode::Slave),
        };
        match (mode, h.peer.as_deref()) {
            (HostMode::Master, None) => {
                c.problem(key("peer"), "a master needs a peer (the other master)")
            }
            (HostMode::Slave, Some(_)) => c.problem(key("peer"), "only masters have a peer"),
            (HostMode::Master, Some(peer)) => match modes.get(peer) {
                None => c.problem(key("peer"), format!("unknown host {peer:?}")),
                Some(_) if peer == name => {
                    c.problem(key("peer"), "a master cannot be its own peer")
                }
                Some(Some(HostMode::Master)) => {
                    if peers.get(peer).copied().flatten() != Some(name.as_str()) {
                        c.problem(
                            key("peer"),
                            format!("{peer:?} does not name {name:?} as its peer"),
                        );
                    }
                }
                Some(_) => c.problem(key("peer"), format!("{peer:?} is not a master")),
            },
            (HostMode::Slave, None) => {}
        }
        let f = h.or(defaults);
        let ports = |c: &mut Collector, k: &str, v: Option<u16>, d: u16| match v {
            Some(0) => {
                c.problem(key(k), "port 0 is not a port");
                d
            }
            other => other.unwrap_or(d),
        };
        let agent_port = ports(c, "agent_port", f.agent_port, 9989);
        let mysql_port = ports(c, "mysql_port", f.mysql_port, 3306);
        let cluster_interface = f.cluster_interface.clone().unwrap_or_else(|| "eth0".into());
        if cluster_interface.is_empty()
            || cluster_interface.len() > 15
            || cluster_interface.contains(['/', ' '])
        {
            c.problem(
                key("cluster_interface"),
                format!("{cluster_interface:?} is not an interface name"),
            );
        }
        out.push(Host {
            name: name.clone(),
            ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            mode,
            peer: h.peer.clone().filter(|_| mode == HostMode::Master),
            cluster_interface,
            agent_port,
            mysql_port,
            agent_user: f.agent_user.clone().unwrap_or_else(|| "mmm_agent".into()),
            agent_password: c.secret(
                &key("agent_password"),
                &f.agent_password,
                &f.agent_password_file,
            ),
            monitor_user: f
                .monitor_user
                .clone()
                .unwrap_or_else(|| "mmm_monitor".into()),
            monitor_password: c.secret(
                &key("monitor_password"),
                &f.monitor_password,
                &f.monitor_password_file,
            ),
            replication_user: f.replication_user.clone().unwrap_or_else(|| "repl".into()),
            replication_password: c.secret(
                &key("replication_password"),
                &f.replication_password,
                &f.replication_password_file,
            ),
            mysql_pid_file: f.mysql_pid_file.clone().map(PathBuf::from),
            mysql_tls: super::tls::validate(c, name, &f),
        });
    }
    out
}

/// Names reach command lines (kill_host_bin gets the host name as an argument): a leading
/// '-' or '.' would read as an option or a path there.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
}

fn roles(c: &mut Collector, raw: &RawConfig, hosts: &[Host]) -> Vec<Role> {
    if raw.roles.is_empty() {
        c.problem("roles", "no roles configured");
    }
    let mut out = Vec::new();
    for (name, r) in &raw.roles {
        let key = |k: &str| format!("roles.{name}.{k}");
        if !valid_name(name) {
            c.problem(
                format!("roles.{name}"),
                "role names may use letters, digits, '-', '_' and '.' only",
            );
        }
        let mode = match &r.mode {
            None => {
                c.problem(key("mode"), "missing (exclusive or balanced)");
                RoleMode::Balanced
            }
            some => c.named(&key("mode"), some, RoleMode::Balanced),
        };
        if r.hosts.is_empty() {
            c.problem(key("hosts"), "a role needs at least one host");
        }
        let mut seen = BTreeSet::new();
        for h in &r.hosts {
            if !hosts.iter().any(|x| &x.name == h) {
                c.problem(key("hosts"), format!("unknown host {h:?}"));
            }
            if !seen.insert(h) {
                c.problem(key("hosts"), format!("host {h:?} listed twice"));
            }
        }
        let ips: Vec<Ipv4Addr> = r
            .ips
            .iter()
            .filter_map(|ip| c.ipv4(&key("ips"), ip))
            .collect();
        // An exclusive role may have no VIP (`ips = []`): its holder is published (show,
        // show --json, metrics, notify_command) for proxies and clouds that route by it.
        if r.ips.is_empty() && mode == RoleMode::Balanced {
            c.problem(key("ips"), "a balanced role needs at least one IP");
        }
        if mode == RoleMode::Exclusive && r.ips.len() > 1 {
            c.problem(
                key("ips"),
                format!(
                    "an exclusive role has one IP or none, found {}",
                    r.ips.len()
                ),
            );
        }
        if let Some(p) = &r.prefer {
            if mode == RoleMode::Balanced {
                c.problem(key("prefer"), "only exclusive roles have a preferred host");
            } else if !r.hosts.contains(p) {
                c.problem(
                    key("prefer"),
                    format!("{p:?} is not one of the role's hosts"),
                );
            }
        }
        out.push(Role {
            name: name.clone(),
            mode,
            hosts: r.hosts.clone(),
            ips,
            prefer: r.prefer.clone(),
        });
    }
    out
}

fn check_active_master_role(
    c: &mut Collector,
    name: &str,
    roles: &[Role],
    hosts: &[Host],
    unknown_mode: &BTreeSet<&str>,
) {
    let Some(role) = roles.iter().find(|r| r.name == name) else {
        c.problem(
            "active_master_role",
            format!("names no configured role ({name:?})"),
        );
        return;
    };
    if role.mode != RoleMode::Exclusive {
        c.problem(
            "active_master_role",
            format!("role {name:?} must be exclusive"),
        );
    }
    if role.hosts.len() > 2 {
        c.problem(
            format!("roles.{name}.hosts"),
            format!(
                "at most two hosts (a master pair) can hold the active-master role, found {}",
                role.hosts.len()
            ),
        );
    }
    for h in &role.hosts {
        if let Some(host) = hosts.iter().find(|x| &x.name == h) {
            if host.mode != HostMode::Master && !unknown_mode.contains(h.as_str()) {
                c.problem(
                    format!("roles.{name}.hosts"),
                    format!("{h:?} is a slave and cannot be the active master"),
                );
            }
        }
    }
}

fn check_unique_ips(c: &mut Collector, hosts: &[Host], roles: &[Role]) {
    let mut owner: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for h in hosts.iter().filter(|h| !h.ip.is_unspecified()) {
        let key = format!("hosts.{}.ip", h.name);
        match owner.get(&h.ip) {
            Some(prev) => c.problem(key, format!("{} is also {prev}", h.ip)),
            None => {
                owner.insert(h.ip, key);
            }
        }
    }
    for r in roles {
        let key = format!("roles.{}.ips", r.name);
        for ip in &r.ips {
            match owner.get(ip) {
                Some(prev) if prev.starts_with("hosts.") => {
                    c.problem(&key, format!("{ip} is a host's own address ({prev})"))
                }
                Some(prev) => c.problem(&key, format!("{ip} is also in {prev}")),
                None => {
                    owner.insert(*ip, key.clone());
                }
            }
        }
    }
}

fn monitor(c: &mut Collector, raw: &RawConfig) -> MonitorConfig {
    let m = &raw.monitor;
    let control = match m.control.as_deref() {
        None => ControlAddr::Unix(DEFAULT_CONTROL.into()),
        Some(s) if s.starts_with('/') => ControlAddr::Unix(s.into()),
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => ControlAddr::Tcp(a),
            Err(_) => {
                c.problem(
                    "monitor.control",
                    format!("{s:?} is neither IP:PORT nor an absolute unix socket path"),
                );
                ControlAddr::Unix(DEFAULT_CONTROL.into())
            }
        },
    };
    let ping_ips = match &m.ping_ips {
        None => {
            c.problem(
                "monitor.ping_ips",
                "missing: the network guard needs addresses to ping (MMM required them too)",
            );
            vec![]
        }
        Some(list) => {
            if list.is_empty() {
                c.problem(
                    "monitor.ping_ips",
                    "empty: the network guard needs at least one address",
                );
            }
            list.iter()
                .filter_map(|s| match s.parse::<IpAddr>() {
                    Ok(ip @ IpAddr::V4(_)) => Some(ip),
                    // The guard pings over ICMPv4 only: an IPv6 target would be dropped
                    // silently and could leave it with nothing to ping.
                    Ok(IpAddr::V6(_)) => {
                        c.problem(
                            "monitor.ping_ips",
                            format!("{s:?} is IPv6: the network guard pings IPv4 addresses only"),
                        );
                        None
                    }
                    Err(_) => {
                        c.problem("monitor.ping_ips", format!("{s:?} is not an IP address"));
                        None
                    }
                })
                .collect()
        }
    };
    let heartbeat_interval = c.positive_duration(
        "monitor.heartbeat_interval",
        &m.heartbeat_interval,
        Duration::from_millis(100),
    );
    let agent_timeout = c.positive_duration(
        "monitor.agent_timeout",
        &m.agent_timeout,
        Duration::from_millis(500),
    );
    if agent_timeout <= heartbeat_interval {
        c.problem(
            "monitor.agent_timeout",
            "must be longer than monitor.heartbeat_interval",
        );
    }
    let flap_count = m.flap_count.unwrap_or(3);
    if flap_count == 0 {
        c.problem("monitor.flap_count", "must be at least 1");
    }
    let metrics = c.address("monitor.metrics", &m.metrics);
    let http = c.address("monitor.http", &m.http);
    if metrics.is_some() && metrics == http {
        c.problem(
            "monitor.metrics",
            "is monitor.http's address: the HTTP listener serves /metrics too, leave monitor.metrics out",
        );
    }
    let http_token_file = m.http_token_file.as_deref().map(PathBuf::from);
    match &http_token_file {
        Some(p) if !p.is_absolute() => {
            c.problem("monitor.http_token_file", "must be an absolute path")
        }
        Some(_) if http.is_none() => c.problem(
            "monitor.http_token_file",
            "set without monitor.http: there is no HTTP listener for it to protect",
        ),
        _ => {}
    }
    MonitorConfig {
        control,
        status_path: m
            .status_path
            .clone()
            .unwrap_or_else(|| "/var/lib/mmm/status".into())
            .into(),
        ping_ips,
        ping_interval: c.positive_duration(
            "monitor.ping_interval",
            &m.ping_interval,
            Duration::from_secs(1),
        ),
        heartbeat_interval,
        agent_timeout,
        flap_duration: c.positive_duration(
            "monitor.flap_duration",
            &m.flap_duration,
            Duration::from_secs(3600),
        ),
        flap_count,
        auto_set_online: c.optional_duration("monitor.auto_set_online", &m.auto_set_online),
        failback: m.failback.unwrap_or(false),
        kill_host_bin: m
            .kill_host_bin
            .clone()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        notify_command: {
            let cmd = m
                .notify_command
                .clone()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            if cmd.as_ref().is_some_and(|p| !p.is_absolute()) {
                c.problem(
                    "monitor.notify_command",
                    "must be an absolute path to an executable (or empty: off)",
                );
            }
            cmd
        },
        careful_startup: m.careful_startup.unwrap_or(true),
        mode: c.named("monitor.mode", &m.mode, MonitorMode::Active),
        wait_for_other_master: c.duration(
            "monitor.wait_for_other_master",
            &m.wait_for_other_master,
            Duration::from_secs(120),
        ),
        promotion_timeout: c.positive_duration(
            "monitor.promotion_timeout",
            &m.promotion_timeout,
            Duration::from_secs(10),
        ),
        metrics,
        http,
        http_token_file,
    }
}

fn checks(c: &mut Collector, raw: &[(String, RawCheck)]) -> Checks {
    let mut default = CheckConfig {
        check_period: Duration::from_secs(1),
        trap_period: Duration::from_secs(3),
        timeout: Duration::from_secs(1),
        restart_after: 10_000,
        max_backlog: Duration::from_secs(60),
    };
    let mut overrides: BTreeMap<CheckKind, &RawCheck> = BTreeMap::new();
    for (name, check) in raw {
        if name == "default" {
            default = overlay(c, "checks.default", check, default);
            continue;
        }
        match name.parse::<CheckKind>() {
            Ok(kind) => {
                if kind != CheckKind::RepBacklog && check.max_backlog.is_some() {
                    c.problem(
                        format!("checks.{name}.max_backlog"),
                        "only the rep_backlog check has a max_backlog",
                    );
                }
                overrides.insert(kind, check);
            }
            Err(e) => c.problem(format!("checks.{name}"), format!("{e}, or default")),
        }
    }
    let mut resolve = |kind: CheckKind| match overrides.get(&kind) {
        Some(check) => overlay(c, &format!("checks.{kind}"), check, default),
        None => default,
    };
    Checks {
        ping: resolve(CheckKind::Ping),
        mysql: resolve(CheckKind::Mysql),
        rep_threads: resolve(CheckKind::RepThreads),
        rep_backlog: resolve(CheckKind::RepBacklog),
    }
}

fn overlay(c: &mut Collector, prefix: &str, raw: &RawCheck, base: CheckConfig) -> CheckConfig {
    let key = |k: &str| format!("{prefix}.{k}");
    CheckConfig {
        check_period: c.positive_duration(
            &key("check_period"),
            &raw.check_period,
            base.check_period,
        ),
        trap_period: c.duration(&key("trap_period"), &raw.trap_period, base.trap_period),
        timeout: c.positive_duration(&key("timeout"), &raw.timeout, base.timeout),
        restart_after: raw.restart_after.unwrap_or(base.restart_after),
        max_backlog: c.positive_duration(&key("max_backlog"), &raw.max_backlog, base.max_backlog),
    }
}

fn agent(c: &mut Collector, raw: &RawConfig) -> AgentConfig {
    let a = &raw.agent;
    let garp_count = a.garp_count.unwrap_or(5);
    if garp_count == 0 {
        c.problem(
            "agent.garp_count",
            "must be at least 1: clients keep the old MAC for ~40 s without a gratuitous ARP",
        );
    }
    if garp_count > MAX_GARP_COUNT {
        c.problem(
            "agent.garp_count",
            format!("must be at most {MAX_GARP_COUNT}: a longer burst only floods the segment"),
        );
    }
    let garp_interval = c.positive_duration(
        "agent.garp_interval",
        &a.garp_interval,
        Duration::from_millis(50),
    );
    if garp_interval > MAX_GARP_INTERVAL {
        c.problem(
            "agent.garp_interval",
            format!(
                "must be at most {MAX_GARP_INTERVAL:?}: the burst exists to switch clients at once"
            ),
        );
    }
    let state_dir = PathBuf::from(a.state_dir.as_deref().unwrap_or("/run/mmm"));
    if !state_dir.is_absolute() {
        c.problem("agent.state_dir", "must be an absolute path");
    }
    let mysql_socket = a
        .mysql_socket
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if mysql_socket.as_ref().is_some_and(|p| !p.is_absolute()) {
        c.problem(
            "agent.mysql_socket",
            "must be an absolute path (or empty: the host's ip)",
        );
    }
    let mut monitor_ips = Vec::new();
    for (i, text) in a.monitor_ips.iter().flatten().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => monitor_ips.push(ip),
            Err(_) => c.problem(
                format!("agent.monitor_ips[{i}]"),
                format!("{text:?} is not an IP address"),
            ),
        }
    }
    AgentConfig {
        probe: c.named("agent.probe", &a.probe, ProbeMode::Auto),
        fencing: c.named("agent.fencing", &a.fencing, Fencing::Lease),
        lease: c.positive_duration("agent.lease", &a.lease, Duration::from_secs(1)),
        max_kill_retries: a.max_kill_retries.unwrap_or(10),
        garp_count,
        garp_interval,
        garp_refresh: c.optional_duration("agent.garp_refresh", &a.garp_refresh),
        state_dir,
        monitor_ips,
        mysql_socket,
        http: c.address("agent.http", &a.http),
        block_users: {
            let list = a.block_users.clone().unwrap_or_default();
            for (i, p) in list.iter().enumerate() {
                if p.trim().is_empty() || p.chars().all(|c| c == '%') {
                    c.problem(
                        format!("agent.block_users[{i}]"),
                        format!("{p:?} would lock every account: name the application users"),
                    );
                }
            }
            list
        },
    }
}

/// `agent.http` is bound by every agent: its port must be free on each database host,
/// where the agent's own port and mysqld's already listen (at the host's ip, which an
/// unspecified address covers too).
fn check_agent_http(c: &mut Collector, http: Option<SocketAddr>, hosts: &[Host]) {
    let Some(addr) = http else { return };
    for h in hosts {
        let overlaps = addr.ip().is_unspecified() || addr.ip() == IpAddr::V4(h.ip);
        for (key, port) in [("agent_port", h.agent_port), ("mysql_port", h.mysql_port)] {
            if overlaps && addr.port() == port {
                c.problem(
                    "agent.http",
                    format!("{addr} takes hosts.{}.{key} ({port}): give the HTTP listener a port of its own", h.name),
                );
            }
        }
    }
}

/// `[coordination]`: etcd client URLs (all http, or all https with the CA file and an
/// optional client certificate), a prefix that is one absolute etcd key path, and a
/// session TTL of whole seconds.
fn coordination(c: &mut Collector, r: &RawCoordination) -> Coordination {
    let etcd = r.etcd.clone().unwrap_or_default();
    if etcd.is_empty() {
        c.problem(
            "coordination.etcd",
            "missing: the client URLs of the etcd members (http://HOST:2379)",
        );
    }
    let mut schemes = std::collections::BTreeSet::new();
    for url in &etcd {
        let (scheme, host_port) = match url.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            _ => ("", ""),
        };
        let valid = !host_port.is_empty()
            && !host_port.contains('/')
            && host_port
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if valid {
            schemes.insert(scheme);
        } else {
            c.problem(
                "coordination.etcd",
                format!(
                    "{url:?} is not an etcd client URL (http://HOST:PORT or https://HOST:PORT)"
                ),
            );
        }
    }
    if schemes.len() > 1 {
        c.problem(
            "coordination.etcd",
            "mixes http:// and https:// endpoints: one etcd cluster speaks one of them",
        );
    }
    let https = schemes.contains("https");
    let file = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(PathBuf::from);
    let (ca, cert, key) = (file(&r.ca_file), file(&r.cert_file), file(&r.key_file));
    if !https {
        for (k, v) in [("ca_file", &ca), ("cert_file", &cert), ("key_file", &key)] {
            if v.is_some() {
                c.problem(
                    format!("coordination.{k}"),
                    "only with https:// etcd endpoints",
                );
            }
        }
    } else if ca.is_none() {
        c.problem(
            "coordination.ca_file",
            "missing: https:// endpoints need the CA certificate that signed etcd's (PEM)",
        );
    }
    if cert.is_some() != key.is_some() {
        c.problem(
            if cert.is_some() {
                "coordination.key_file"
            } else {
                "coordination.cert_file"
            },
            "a client certificate needs both cert_file and key_file",
        );
    }
    let tls = match (https, ca) {
        (true, Some(ca_file)) => Some(EtcdTls {
            ca_file,
            client: cert.zip(key),
        }),
        _ => None,
    };
    let prefix = r.prefix.clone().unwrap_or_default();
    let prefix_ok = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains("//")
        && prefix.chars().all(|ch| ch.is_ascii_graphic());
    if !prefix_ok {
        c.problem(
            "coordination.prefix",
            format!("{prefix:?}: one absolute key path per cluster, like \"/mmm/main\" (no trailing '/', no spaces)"),
        );
    }
    let etcd_election_timeout = c.duration(
        "coordination.etcd_election_timeout",
        &r.etcd_election_timeout,
        Duration::from_secs(1),
    );
    let etcd_heartbeat_interval = c.duration(
        "coordination.etcd_heartbeat_interval",
        &r.etcd_heartbeat_interval,
        Duration::from_millis(100),
    );
    if etcd_heartbeat_interval.is_zero() || etcd_heartbeat_interval >= etcd_election_timeout {
        c.problem(
            "coordination.etcd_heartbeat_interval",
            format!("{etcd_heartbeat_interval:?}: etcd's --heartbeat-interval, above zero and below its --election-timeout ({etcd_election_timeout:?})"),
        );
    }
    let derived = super::min_session_ttl(2 * etcd_election_timeout + etcd_heartbeat_interval)
        .min(Duration::from_secs(60));
    let session_ttl = c.duration("coordination.session_ttl", &r.session_ttl, derived);
    if session_ttl.subsec_nanos() != 0
        || session_ttl < Duration::from_secs(1)
        || session_ttl > Duration::from_secs(60)
    {
        c.problem(
            "coordination.session_ttl",
            format!(
                "{session_ttl:?}: whole seconds from 1s to 60s (etcd grants leases in seconds)"
            ),
        );
    }
    Coordination {
        etcd,
        prefix,
        session_ttl,
        etcd_election_timeout,
        etcd_heartbeat_interval,
        tls,
    }
}
