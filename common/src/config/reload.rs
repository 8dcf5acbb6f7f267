//! SIGHUP: what a running daemon takes from its re-read config, and what needs a restart.
//!
//! A key is applied at run time only when the daemon reads it at each use and no bound of
//! the fencing contract ([`Timing`]) derives from it: changing a lease, a heartbeat or an
//! agent_timeout under a running monitor would leave its agents counting a lease the
//! monitor no longer counts. Everything else the daemon reads (addresses, ports, hosts,
//! roles, keys, the etcd coordination, the checks' pace) is compared, named, and left as it
//! was until the next start.

use super::{
    AgentConfig, CheckConfig, Config, Coordination, Host, MonitorConfig, Role, SecurityConfig,
};
use crate::timing::Timing;
use crate::types::CheckKind;

/// Which daemon reloads: each reads (and so applies or must restart for) other keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Monitor,
    Agent,
}

/// The keys the monitor applies on SIGHUP (`*`: any check). docs/operations.md lists them,
/// and a test holds that list to this one.
pub const MONITOR_RELOADS: [&str; 7] = [
    "monitor.notify_command",
    "monitor.kill_host_bin",
    "monitor.failback",
    "monitor.flap_duration",
    "monitor.flap_count",
    "monitor.auto_set_online",
    "checks.*.trap_period",
];

/// The keys the agent applies on SIGHUP: none yet (it validates the file and names the
/// keys that need a restart).
pub const AGENT_RELOADS: [&str; 0] = [];

/// Keys of the agent's section and hosts the monitor never reads (the agent does).
const MONITOR_IGNORES: [&str; 11] = [
    "agent.probe",
    "agent.max_kill_retries",
    "agent.garp_count",
    "agent.garp_interval",
    "agent.garp_refresh",
    "agent.state_dir",
    "agent.monitor_ips",
    "agent.mysql_socket",
    "agent.block_users",
    "agent.http",
    "hosts.*.mysql_pid_file",
];

/// The only keys of `[monitor]` and `[checks]` the agent reads: its fencing timing and the
/// bounds of its own MySQL calls and health verdicts.
const AGENT_READS: [&str; 4] = [
    "monitor.heartbeat_interval",
    "monitor.agent_timeout",
    "checks.mysql.timeout",
    "checks.rep_backlog.max_backlog",
];

/// What a daemon does with a re-read config.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The running config with every applicable change made: what the daemon runs on now.
    pub config: Config,
    /// Keys changed and applied.
    pub applied: Vec<String>,
    /// Keys changed that this daemon reads only at start: not applied.
    pub restart: Vec<String>,
}

impl Daemon {
    /// The keys this daemon applies at run time.
    pub fn reloads(self) -> &'static [&'static str] {
        match self {
            Daemon::Monitor => &MONITOR_RELOADS,
            Daemon::Agent => &AGENT_RELOADS,
        }
    }

    fn ignores(self, key: &str) -> bool {
        match self {
            Daemon::Monitor => MONITOR_IGNORES.iter().any(|p| matches(p, key)),
            Daemon::Agent => {
                (key.starts_with("monitor.") || key.starts_with("checks."))
                    && !AGENT_READS.contains(&key)
            }
        }
    }
}

/// Compares the running config with a re-read one, for `daemon`.
pub fn plan(daemon: Daemon, running: &Config, read: &Config) -> Plan {
    let mut config = running.clone();
    let (mut applied, mut restart) = (Vec::new(), Vec::new());
    for key in changed(running, read) {
        if daemon.ignores(&key) {
            continue;
        }
        if daemon.reloads().iter().any(|p| matches(p, &key)) && apply(&key, read, &mut config) {
            applied.push(key);
        } else {
            restart.push(key);
        }
    }
    // The fencing contract is proven for one Timing for the life of the process: should a
    // reloadable key ever feed it, the change waits for a restart instead.
    if Timing::from_config(&config) != Timing::from_config(running) {
        restart.append(&mut applied);
        restart.sort();
        config = running.clone();
    }
    Plan {
        config,
        applied,
        restart,
    }
}

/// `pattern` with `*` standing for one dotted component.
fn matches(pattern: &str, key: &str) -> bool {
    let (mut p, mut k) = (pattern.split('.'), key.split('.'));
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// Copies `key` from `from` into `to`; false for a key that cannot be applied.
fn apply(key: &str, from: &Config, to: &mut Config) -> bool {
    let (m, n) = (&from.monitor, &mut to.monitor);
    match key {
        "monitor.notify_command" => n.notify_command.clone_from(&m.notify_command),
        "monitor.kill_host_bin" => n.kill_host_bin.clone_from(&m.kill_host_bin),
        "monitor.failback" => n.failback = m.failback,
        "monitor.flap_duration" => n.flap_duration = m.flap_duration,
        "monitor.flap_count" => n.flap_count = m.flap_count,
        "monitor.auto_set_online" => n.auto_set_online = m.auto_set_online,
        _ => {
            let Some(kind) = key
                .strip_prefix("checks.")
                .and_then(|k| k.strip_suffix(".trap_period"))
                .and_then(|k| k.parse::<CheckKind>().ok())
            else {
                return false;
            };
            let period = from.checks.get(kind).trap_period;
            let to = match kind {
                CheckKind::Ping => &mut to.checks.ping,
                CheckKind::Mysql => &mut to.checks.mysql,
                CheckKind::RepThreads => &mut to.checks.rep_threads,
                CheckKind::RepBacklog => &mut to.checks.rep_backlog,
            };
            to.trap_period = period;
        }
    }
    true
}

/// Pushes `prefix.field` for every field that differs. The destructuring lists every field
/// of the struct, so a new one does not compile until it is compared here too.
macro_rules! compare {
    ($out:expr, $prefix:expr, $ty:ident, $old:expr, $new:expr, [$($f:ident),* $(,)?]) => {{
        let $ty { $($f: _),* } = $old;
        $(
            if $old.$f != $new.$f {
                $out.push(format!("{}.{}", $prefix, stringify!($f)));
            }
        )*
    }};
}

/// Every key whose effective value differs, as the config writes it (hosts and roles by
/// name; a host or role added or removed is named whole). A key set in `[defaults]` or
/// `[checks.default]` is named where it takes effect.
pub fn changed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let Config {
        active_master_role,
        hosts,
        roles,
        monitor,
        checks: _,
        agent,
        security,
        coordination,
    } = old;
    if *active_master_role != new.active_master_role {
        out.push("active_master_role".into());
    }
    named(&mut out, "hosts", hosts, &new.hosts, |h| &h.name, host);
    named(&mut out, "roles", roles, &new.roles, |r| &r.name, role);
    compare!(
        out,
        "monitor",
        MonitorConfig,
        monitor,
        new.monitor,
        [
            control,
            status_path,
            ping_ips,
            ping_interval,
            heartbeat_interval,
            agent_timeout,
            flap_duration,
            flap_count,
            auto_set_online,
            failback,
            kill_host_bin,
            notify_command,
            careful_startup,
            mode,
            wait_for_other_master,
            promotion_timeout,
            metrics,
            http,
            http_token_file,
        ]
    );
    for kind in CheckKind::ALL {
        let (a, b) = (old.checks.get(*kind), new.checks.get(*kind));
        compare!(
            out,
            format!("checks.{kind}"),
            CheckConfig,
            a,
            b,
            [
                check_period,
                trap_period,
                timeout,
                restart_after,
                max_backlog
            ]
        );
    }
    compare!(
        out,
        "agent",
        AgentConfig,
        agent,
        new.agent,
        [
            probe,
            fencing,
            lease,
            max_kill_retries,
            garp_count,
            garp_interval,
            garp_refresh,
            state_dir,
            monitor_ips,
            mysql_socket,
            block_users,
            http,
        ]
    );
    compare!(
        out,
        "security",
        SecurityConfig,
        security,
        new.security,
        [key]
    );
    match (coordination, &new.coordination) {
        (None, None) => {}
        (Some(a), Some(b)) => compare!(
            out,
            "coordination",
            Coordination,
            a,
            b,
            [
                etcd,
                prefix,
                session_ttl,
                etcd_election_timeout,
                etcd_heartbeat_interval,
                tls,
            ]
        ),
        _ => out.push("coordination".into()),
    }
    out
}

fn host(out: &mut Vec<String>, prefix: &str, a: &Host, b: &Host) {
    compare!(
        out,
        prefix,
        Host,
        a,
        b,
        [
            name,
            ip,
            mode,
            peer,
            cluster_interface,
            agent_port,
            mysql_port,
            agent_user,
            agent_password,
            monitor_user,
            monitor_password,
            replication_user,
            replication_password,
            mysql_pid_file,
            mysql_tls,
        ]
    );
}

fn role(out: &mut Vec<String>, prefix: &str, a: &Role, b: &Role) {
    compare!(out, prefix, Role, a, b, [name, mode, hosts, ips, prefer]);
}

/// Compares two lists of named entries: each by name, a new or gone one whole, and the
/// order itself (role distribution breaks ties by it).
fn named<T>(
    out: &mut Vec<String>,
    section: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    fields: impl Fn(&mut Vec<String>, &str, &T, &T),
) {
    for a in old {
        let key = format!("{section}.{}", name(a));
        match new.iter().find(|b| name(b) == name(a)) {
            Some(b) => fields(out, &key, a, b),
            None => out.push(key),
        }
    }
    for b in new {
        if !old.iter().any(|a| name(a) == name(b)) {
            out.push(format!("{section}.{}", name(b)));
        }
    }
    let order = |l: &[T]| -> Vec<String> { l.iter().map(&name).cloned().collect() };
    let (mut was, mut is) = (order(old), order(new));
    if was != is {
        was.sort();
        is.sort();
        if was == is {
            out.push(format!("{section} (order)"));
        }
    }
}

/// The outcome of the config's loads, for the daemons' metrics: whether the last one (at
/// start or on SIGHUP) succeeded, and when the last successful one was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadState {
    pub success: bool,
    /// Unix seconds of the last successful load.
    pub last_success_s: f64,
}

impl Default for LoadState {
    /// A daemon runs only once its config loaded: at start, success, now.
    fn default() -> LoadState {
        LoadState {
            success: true,
            last_success_s: unix_now(),
        }
    }
}

impl LoadState {
    pub fn record(&mut self, success: bool) {
        self.success = success;
        if success {
            self.last_success_s = unix_now();
        }
    }

    /// The two metric families, named `{prefix}_config_reload_success` and
    /// `{prefix}_config_last_reload_timestamp_seconds`, in Prometheus' text format.
    pub fn render(&self, prefix: &str) -> String {
        format!(
            "# HELP {prefix}_config_reload_success 1 if the last load of the config file (at start or on SIGHUP) succeeded; 0 while the daemon runs on an older config because the file is invalid.\n\
             # TYPE {prefix}_config_reload_success gauge\n\
             {prefix}_config_reload_success {}\n\
             # HELP {prefix}_config_last_reload_timestamp_seconds When the config file was last loaded successfully (Unix time).\n\
             # TYPE {prefix}_config_last_reload_timestamp_seconds gauge\n\
             {prefix}_config_last_reload_timestamp_seconds {}\n",
            u8::from(self.success),
            self.last_success_s
        )
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// SIGHUP in a daemon: re-reads `path`, records the outcome in `state` and logs it once
/// (an invalid file at error with every problem, keys needing a restart at warn, applied
/// keys at info). Returns the config to run on from now on; `None` when it is the running
/// one (the file is invalid, or nothing this daemon applies changed).
#[cfg(feature = "cli")]
pub fn reread(
    daemon: Daemon,
    path: &std::path::Path,
    running: &Config,
    state: &mut LoadState,
) -> Option<Config> {
    let read = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            state.record(false);
            // One log line: a TOML syntax error spans several (the line, a caret).
            let problems: Vec<String> = e
                .lines()
                .iter()
                .map(|l| l.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                .collect();
            tracing::error!(
                path = %path.display(),
                "config reload refused, still running on the config loaded before: {}",
                problems.join("; ")
            );
            return None;
        }
    };
    state.record(true);
    for w in read.warnings() {
        tracing::warn!("{w}");
    }
    let plan = plan(daemon, running, &read);
    if !plan.restart.is_empty() {
        tracing::warn!(
            keys = ?plan.restart,
            "config reload: {} changed but needs a restart (not applied)",
            plan.restart.join(", ")
        );
    }
    if plan.applied.is_empty() {
        tracing::info!(path = %path.display(), "config reloaded: nothing to apply");
        return None;
    }
    tracing::info!(
        keys = ?plan.applied,
        "config reloaded: applied {}",
        plan.applied.join(", ")
    );
    Some(plan.config)
}

#[cfg(test)]
mod tests;
