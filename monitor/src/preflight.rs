//! `mmm-control check-cluster`: the live pre-flight an operator ran by hand before trusting
//! MMM. [`gather`] reads each configured server (bounded per host); [`judge`] is a pure
//! function from what was read to findings, one line each; any ERROR means exit 1.

use crate::replica::{self, ReadError};
use mmm_common::config::{Config, Host};
use mmm_common::error_chain;
use mmm_common::mysql::Target;
use mmm_common::sql::{quote, Dialect};
use mmm_common::types::{HostMode, ProbeMode};
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What one server told us. `None` where the variable does not exist on that server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub host: String,
    /// Why the agent user could not connect, if it could not.
    pub unreachable: Option<String>,
    pub server_id: u64,
    pub log_bin: bool,
    pub log_slave_updates: bool,
    pub read_only: bool,
    pub auto_increment_increment: u64,
    pub auto_increment_offset: u64,
    pub gtid_strict_mode: Option<bool>,
    /// MySQL only: `ON` is what auto-position needs.
    pub gtid_mode: Option<String>,
    pub semi_sync_master: Option<bool>,
    pub kill_conn_timeout: Option<u64>,
    pub relay_log_recovery: Option<bool>,
    /// The replication source (host, port) and whether both threads run.
    pub source: Option<(String, u16, bool)>,
    /// For the agent, monitor and replication users: the grants each holds, or why it
    /// could not log in.
    pub grants: BTreeMap<&'static str, Result<String, String>>,
    /// What the running monitor says of this host's eBPF probe; `None` when it was not
    /// asked (no monitor answered).
    pub probe: Option<ProbeSeen>,
}

/// A host's probe as the monitor's `show --json` reports it (`probe_state`,
/// `probe_blind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSeen {
    Watching,
    /// Loaded, watching no mysqld process though mysqld answers.
    Blind,
    /// Loaded, mysqld not running.
    Searching,
    Off,
    /// The monitor has not heard the agent.
    Unknown,
}

/// Each host's probe from the monitor's `show --json` answer.
pub fn probes_from_show(show: &serde_json::Value) -> BTreeMap<String, ProbeSeen> {
    let hosts = show["hosts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    hosts
        .iter()
        .filter_map(|h| {
            let seen = match (h["probe_state"].as_str()?, h["probe_blind"].as_bool()) {
                (_, Some(true)) => ProbeSeen::Blind,
                ("watching", _) => ProbeSeen::Watching,
                ("searching", _) => ProbeSeen::Searching,
                ("off", _) => ProbeSeen::Off,
                _ => ProbeSeen::Unknown,
            };
            Some((h["name"].as_str()?.to_string(), seen))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub host: Option<String>,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        };
        match &self.host {
            Some(h) => write!(f, "{level}: {h}: {}", self.text),
            None => write!(f, "{level}: {}", self.text),
        }
    }
}

/// The privileges each user needs: every group must be satisfied by one of its words
/// (ALL PRIVILEGES satisfies everything). MariaDB spells its fine-grained privileges
/// with spaces, MySQL 8 its dynamic ones with underscores.
const NEEDS: &[(&str, &[&[&str]])] = &[
    (
        "agent",
        &[
            &["SUPER", "READ_ONLY ADMIN", "SYSTEM_VARIABLES_ADMIN"],
            &["SUPER", "CONNECTION ADMIN", "CONNECTION_ADMIN"],
            &["REPLICATION CLIENT", "BINLOG MONITOR", "SLAVE MONITOR"],
            &[
                "SUPER",
                "REPLICATION SLAVE ADMIN",
                "REPLICATION_SLAVE_ADMIN",
            ],
        ],
    ),
    (
        "monitor",
        &[&["REPLICATION CLIENT", "SLAVE MONITOR", "BINLOG MONITOR"]],
    ),
    ("replication", &[&["REPLICATION SLAVE"]]),
];

/// Judges what `gather` read; one finding per problem, and OK lines for what passed.
pub fn judge(config: &Config, facts: &[Facts]) -> Vec<Finding> {
    let mut out = Vec::new();
    let err = |h: &str, t: String| Finding {
        level: Level::Error,
        host: Some(h.into()),
        text: t,
    };
    let warn = |h: &str, t: String| Finding {
        level: Level::Warning,
        host: Some(h.into()),
        text: t,
    };
    let up: Vec<&Facts> = facts.iter().filter(|f| f.unreachable.is_none()).collect();
    for f in facts {
        if let Some(why) = &f.unreachable {
            out.push(err(
                &f.host,
                format!("cannot connect as the agent user: {why}"),
            ));
        }
    }
    // server_id unique.
    let mut ids: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for f in &up {
        ids.entry(f.server_id).or_default().push(&f.host);
    }
    for (id, hosts) in &ids {
        if hosts.len() > 1 {
            out.push(Finding {
                level: Level::Error,
                host: None,
                text: format!("server_id {id} is used by {}", hosts.join(", ")),
            });
        }
    }
    let host_cfg = |name: &str| config.hosts.iter().find(|h| h.name == name);
    let masters: Vec<&Facts> = up
        .iter()
        .copied()
        .filter(|f| host_cfg(&f.host).is_some_and(|h| h.mode == HostMode::Master))
        .collect();
    // auto_increment: masters must not hand out the same ids.
    for (i, a) in masters.iter().enumerate() {
        for b in &masters[i + 1..] {
            if a.auto_increment_offset == b.auto_increment_offset
                || a.auto_increment_increment < 2
                || b.auto_increment_increment < 2
            {
                out.push(Finding {
                    level: Level::Error,
                    host: None,
                    text: format!(
                        "masters {} and {} can generate the same AUTO_INCREMENT values (increment {} / {}, offset {} / {}): set auto_increment_increment = 2 and distinct offsets",
                        a.host, b.host, a.auto_increment_increment, b.auto_increment_increment,
                        a.auto_increment_offset, b.auto_increment_offset
                    ),
                });
            }
        }
    }
    // At most one writable server, never a slave.
    let writable: Vec<&str> = up
        .iter()
        .filter(|f| !f.read_only)
        .map(|f| f.host.as_str())
        .collect();
    if writable.len() > 1 {
        out.push(Finding {
            level: Level::Error,
            host: None,
            text: format!(
                "more than one server is writable: {} (read_only = 1 everywhere but the writer)",
                writable.join(", ")
            ),
        });
    }
    for f in &up {
        let Some(h) = host_cfg(&f.host) else { continue };
        if h.mode == HostMode::Slave && !f.read_only {
            out.push(err(&f.host, "a slave is writable (read_only = 0)".into()));
        }
        if !f.log_bin {
            out.push(err(
                &f.host,
                "log_bin is off: no server can replicate from it after a failover".into(),
            ));
        }
        if !f.log_slave_updates {
            // A promoted master's binlog must hold what it applied from the old writer,
            // or the slaves re-pointed at it by GTID cannot find their position (1236).
            // A slave is never promoted: only what chains from it or restores its binlog
            // suffers.
            if h.mode == HostMode::Master {
                out.push(err(
                    &f.host,
                    "log_slave_updates is off: slaves cannot follow it after a failover".into(),
                ));
            } else {
                out.push(warn(
                    &f.host,
                    "log_slave_updates is off: its binlog lacks what it replicates (no replica or binlog restore can rely on it)".into(),
                ));
            }
        }
        if f.gtid_strict_mode == Some(false) {
            out.push(warn(
                &f.host,
                "gtid_strict_mode is off: diverged servers are not refused".into(),
            ));
        }
        if let Some(mode) = f
            .gtid_mode
            .as_deref()
            .filter(|m| !m.eq_ignore_ascii_case("ON"))
        {
            out.push(err(
                &f.host,
                format!("gtid_mode is {mode}: replicas are re-pointed by GTID auto-position, which needs gtid_mode = ON"),
            ));
        }
        if h.mode == HostMode::Master && f.semi_sync_master == Some(false) {
            out.push(warn(
                &f.host,
                "semi-sync is off: an acknowledged write may exist on this master alone".into(),
            ));
        }
        if f.kill_conn_timeout.is_some_and(|t| t > 1) {
            out.push(warn(&f.host, format!("rpl_semi_sync_slave_kill_conn_timeout = {}: a failover over a lost host waits that long (set 1)", f.kill_conn_timeout.unwrap_or(0))));
        }
        if f.relay_log_recovery == Some(false) {
            out.push(warn(
                &f.host,
                "relay_log_recovery is off: a replica that crashed may not resume cleanly".into(),
            ));
        }
        topology(config, h, f, &mut out);
        match f.probe {
            Some(ProbeSeen::Blind) => out.push(err(
                &f.host,
                "the agent's eBPF probe watches no mysqld process though mysqld answers: a mysqld crash is detected by the mysql check only (seconds, not milliseconds); the agent's log says why (`probe watches no mysqld: ...`)".into(),
            )),
            Some(ProbeSeen::Off) if config.agent.probe != ProbeMode::Off => out.push(warn(
                &f.host,
                "the agent's eBPF probe is off (it lacks CAP_BPF or CAP_PERFMON, or the probe failed to load: see its log); deaths are seen by the monitor's checks only".into(),
            )),
            _ => {}
        }
        for (user, needs) in NEEDS {
            match f.grants.get(user) {
                None => {}
                Some(Err(why)) => out.push(err(
                    &f.host,
                    format!("the {user} user cannot log in: {why}"),
                )),
                Some(Ok(grants)) => {
                    let g = grants.to_uppercase();
                    for group in needs.iter() {
                        if !g.contains("ALL PRIVILEGES") && !group.iter().any(|w| g.contains(w)) {
                            out.push(err(
                                &f.host,
                                format!("the {user} user lacks {}", group.join(" or ")),
                            ));
                        }
                    }
                }
            }
        }
    }
    if !out.iter().any(|f| f.level == Level::Error) {
        out.push(Finding {
            level: Level::Ok,
            host: None,
            text: format!("{} servers checked, no errors", facts.len()),
        });
    }
    out
}

/// Masters replicate from their peer, slaves from a master, each with both threads.
fn topology(config: &Config, h: &Host, f: &Facts, out: &mut Vec<Finding>) {
    let expected: Vec<&Host> = match (&h.mode, &h.peer) {
        (HostMode::Master, Some(p)) => config.hosts.iter().filter(|x| &x.name == p).collect(),
        _ => config
            .hosts
            .iter()
            .filter(|x| x.mode == HostMode::Master)
            .collect(),
    };
    match &f.source {
        None => out.push(Finding {
            level: Level::Error,
            host: Some(f.host.clone()),
            text: "does not replicate from anything".into(),
        }),
        Some((src, port, running)) => {
            let known = expected
                .iter()
                .find(|x| x.ip.to_string() == *src && x.mysql_port == *port);
            match known {
                None => out.push(Finding {
                    level: Level::Error,
                    host: Some(f.host.clone()),
                    text: format!(
                        "replicates from {src}:{port}, not from {}",
                        expected
                            .iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                }),
                // The writer's link back to its peer matters only after a failover (the
                // monitor restarts it then): a warning; anywhere else an error.
                Some(_) if !running => out.push(Finding {
                    level: if f.read_only {
                        Level::Error
                    } else {
                        Level::Warning
                    },
                    host: Some(f.host.clone()),
                    text: format!("replication from {src}:{port} is not running"),
                }),
                Some(_) => {}
            }
        }
    }
}

/// Reads every configured server, each bounded by `timeout`.
pub async fn gather(config: &Config, timeout: Duration) -> Vec<Facts> {
    let mut out = Vec::new();
    for h in &config.hosts {
        let f = match tokio::time::timeout(timeout, read_host(h)).await {
            Ok(f) => f,
            Err(_elapsed) => Facts {
                host: h.name.clone(),
                unreachable: Some(format!("no answer within {timeout:?}")),
                ..Default::default()
            },
        };
        out.push(f);
    }
    out
}

async fn read_host(h: &Host) -> Facts {
    let mut f = Facts {
        host: h.name.clone(),
        ..Default::default()
    };
    let users = [
        ("agent", &h.agent_user, &h.agent_password),
        ("monitor", &h.monitor_user, &h.monitor_password),
        ("replication", &h.replication_user, &h.replication_password),
    ];
    for (role, user, secret) in users {
        let grants = async {
            let password = secret.reveal().map_err(|e| e.to_string())?;
            let mut c = Target::tcp(h, user, &password)
                .connect()
                .await
                .map_err(|e| error_chain(&e))?;
            let rows: Vec<String> = c
                .query("SHOW GRANTS FOR CURRENT_USER()")
                .await
                .map_err(|e| e.to_string())?;
            if role == "agent" {
                read_vars(&mut c, &mut f)
                    .await
                    .map_err(|e| error_chain(&e))?;
            }
            let _ = c.disconnect().await;
            Ok::<_, String>(rows.join("\n"))
        }
        .await;
        if role == "agent" {
            if let Err(e) = &grants {
                f.unreachable = Some(e.clone());
                return f;
            }
        }
        f.grants.insert(role, grants);
    }
    f
}

/// The variables check-cluster reads, under the names the server's release uses:
/// MariaDB's list is its own (gtid_strict_mode, the semi-sync kill_conn_timeout), MySQL's
/// has gtid_mode instead.
fn variables_query(dialect: Dialect) -> String {
    if dialect.is_mariadb() {
        return "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('server_id', 'log_bin', \
             'log_slave_updates', 'log_replica_updates', 'read_only', \
             'auto_increment_increment', 'auto_increment_offset', 'gtid_strict_mode', \
             'rpl_semi_sync_master_enabled', 'rpl_semi_sync_slave_kill_conn_timeout', \
             'relay_log_recovery')"
            .into();
    }
    let mut names = vec![
        "server_id",
        "log_bin",
        dialect.log_replica_updates(),
        "read_only",
        "auto_increment_increment",
        "auto_increment_offset",
        "gtid_mode",
    ];
    names.extend(dialect.semi_sync_source_enabled());
    names.push("relay_log_recovery");
    let names: Vec<String> = names.into_iter().map(quote).collect();
    format!(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
        names.join(", ")
    )
}

async fn read_vars(c: &mut mysql_async::Conn, f: &mut Facts) -> Result<(), ReadError> {
    let dialect = replica::detect(c).await?;
    let vars: Vec<(String, String)> =
        c.query(variables_query(dialect))
            .await
            .map_err(|source| ReadError::Query {
                op: "reading the server's variables",
                source,
            })?;
    let on = |v: &str| v.eq_ignore_ascii_case("ON") || v == "1";
    for (name, value) in vars {
        match name.as_str() {
            "server_id" => f.server_id = value.parse().unwrap_or(0),
            "log_bin" => f.log_bin = on(&value),
            "log_slave_updates" | "log_replica_updates" => f.log_slave_updates = on(&value),
            "read_only" => f.read_only = on(&value),
            "auto_increment_increment" => f.auto_increment_increment = value.parse().unwrap_or(1),
            "auto_increment_offset" => f.auto_increment_offset = value.parse().unwrap_or(1),
            "gtid_strict_mode" => f.gtid_strict_mode = Some(on(&value)),
            "rpl_semi_sync_master_enabled" | "rpl_semi_sync_source_enabled" => {
                f.semi_sync_master = Some(on(&value))
            }
            "gtid_mode" => f.gtid_mode = Some(value),
            "rpl_semi_sync_slave_kill_conn_timeout" => f.kill_conn_timeout = value.parse().ok(),
            "relay_log_recovery" => f.relay_log_recovery = Some(on(&value)),
            _ => {}
        }
    }
    if let Some(status) = replica::status(c, dialect).await? {
        if let (Some(host), Some(port)) = (status.source_host.clone(), status.source_port) {
            f.source = Some((host, port, status.threads_running()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmm_common::sql::Version;
    use std::path::Path;

    #[test]
    fn mariadb_variables_are_read_as_before() {
        assert_eq!(
            variables_query(Dialect::MariaDb),
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('server_id', 'log_bin', 'log_slave_updates', 'log_replica_updates', 'read_only', 'auto_increment_increment', 'auto_increment_offset', 'gtid_strict_mode', 'rpl_semi_sync_master_enabled', 'rpl_semi_sync_slave_kill_conn_timeout', 'relay_log_recovery')"
        );
    }

    #[test]
    fn mysql_variables_are_read_under_their_release_names() {
        let q = variables_query(Dialect::MySql(Version::new(5, 7, 44)));
        assert!(
            q.contains("'log_slave_updates'") && q.contains("'gtid_mode'"),
            "{q}"
        );
        assert!(q.contains("'rpl_semi_sync_master_enabled'"), "{q}");
        let q = variables_query(Dialect::MySql(Version::new(8, 4, 0)));
        assert!(q.contains("'log_replica_updates'"), "{q}");
        assert!(q.contains("'rpl_semi_sync_source_enabled'"), "{q}");
        let lower = q.to_lowercase();
        assert!(!lower.contains("slave") && !lower.contains("master"), "{q}");
    }

    fn lab() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab.toml");
        let text = std::fs::read_to_string(&path).expect("conf/lab.toml");
        Config::parse(&text, &path).expect("the lab config")
    }

    /// db1 and db2 replicate from each other, db3 from db1; db1 is the writer.
    fn healthy() -> Vec<Facts> {
        let host = |name: &str, id: u64, source: &str, offset: u64| Facts {
            host: name.into(),
            server_id: id,
            log_bin: true,
            log_slave_updates: true,
            read_only: name != "db1",
            auto_increment_increment: 2,
            auto_increment_offset: offset,
            source: Some((source.into(), 3306, true)),
            ..Default::default()
        };
        vec![
            host("db1", 1, "192.0.2.12", 1),
            host("db2", 2, "192.0.2.11", 2),
            host("db3", 3, "192.0.2.11", 1),
        ]
    }

    #[test]
    fn mysql_without_gtid_mode_on_is_an_error() {
        let config = lab();
        let mut facts = healthy();
        for f in &mut facts {
            f.gtid_mode = Some("ON".into());
        }
        let errors = |facts: &[Facts]| -> Vec<String> {
            judge(&config, facts)
                .into_iter()
                .filter(|f| f.level == Level::Error)
                .map(|f| f.to_string())
                .collect()
        };
        assert_eq!(errors(&facts), Vec::<String>::new());
        facts[2].gtid_mode = Some("OFF_PERMISSIVE".into());
        assert_eq!(
            errors(&facts),
            ["ERROR: db3: gtid_mode is OFF_PERMISSIVE: replicas are re-pointed by GTID auto-position, which needs gtid_mode = ON"]
        );
    }

    #[test]
    fn mysql_dynamic_privileges_satisfy_the_agent() {
        let config = lab();
        let mut facts = healthy();
        facts[0].grants.insert(
            "agent",
            Ok("GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO `mmm_agent`@`%`\nGRANT CONNECTION_ADMIN,REPLICATION_SLAVE_ADMIN,SYSTEM_VARIABLES_ADMIN ON *.* TO `mmm_agent`@`%`".into()),
        );
        let lacking: Vec<Finding> = judge(&config, &facts)
            .into_iter()
            .filter(|f| f.text.contains("lacks"))
            .collect();
        assert_eq!(lacking, []);
    }

    /// The lab as check-cluster reads it when healthy: db1 the writer, db2 its peer,
    /// db3 a slave of db1.
    fn healthy_lab(config: &Config) -> Vec<Facts> {
        let ip = |n: &str| config.host(n).map(|h| h.ip.to_string()).unwrap_or_default();
        let ok: Result<String, String> = Ok("GRANT ALL PRIVILEGES ON *.* TO `x`@`%`".into());
        [("db1", 1, "db2"), ("db2", 2, "db1"), ("db3", 3, "db1")]
            .into_iter()
            .map(|(host, id, source)| Facts {
                host: host.into(),
                unreachable: None,
                server_id: id,
                log_bin: true,
                log_slave_updates: true,
                read_only: host != "db1",
                auto_increment_increment: 2,
                auto_increment_offset: id,
                gtid_strict_mode: Some(true),
                semi_sync_master: Some(true),
                kill_conn_timeout: Some(1),
                relay_log_recovery: Some(true),
                gtid_mode: None,
                source: Some((ip(source), 3306, true)),
                grants: ["agent", "monitor", "replication"]
                    .into_iter()
                    .map(|u| (u, ok.clone()))
                    .collect(),
                probe: Some(ProbeSeen::Watching),
            })
            .collect()
    }

    /// The monitor's `show --json` says which probe watches nothing while mysqld runs:
    /// an error, as that host's crash would be seen seconds late.
    #[test]
    fn a_blind_probe_is_an_error_and_an_off_one_a_warning() {
        let config = lab();
        let show = serde_json::json!({"hosts": [
            {"name": "db1", "probe_state": "searching", "probe_blind": true},
            {"name": "db2", "probe_state": "off", "probe_blind": false},
            {"name": "db3", "probe_state": "watching", "probe_blind": false},
        ]});
        let seen = probes_from_show(&show);
        let mut facts = healthy_lab(&config);
        for f in &mut facts {
            f.probe = seen.get(&f.host).copied();
        }
        let found = lines(&judge(&config, &facts));
        assert!(
            found
                .iter()
                .any(|l| l
                    .starts_with("ERROR: db1: the agent's eBPF probe watches no mysqld process")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l.starts_with("WARNING: db2: the agent's eBPF probe is off")),
            "{found:?}"
        );
        assert!(!found.iter().any(|l| l.contains("db3")), "{found:?}");
    }

    fn lines(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_healthy_lab_has_no_findings_but_ok() {
        let config = lab();
        let found = judge(&config, &healthy_lab(&config));
        assert_eq!(
            lines(&found),
            ["OK: 3 servers checked, no errors"],
            "{found:?}"
        );
    }

    #[test]
    fn log_slave_updates_off_is_an_error_on_a_master_and_a_warning_on_a_slave() {
        let config = lab();
        let mut facts = healthy_lab(&config);
        facts[1].log_slave_updates = false;
        let found = lines(&judge(&config, &facts));
        assert!(
            found.contains(
                &"ERROR: db2: log_slave_updates is off: slaves cannot follow it after a failover"
                    .to_string()
            ),
            "{found:?}"
        );

        let mut facts = healthy_lab(&config);
        facts[2].log_slave_updates = false;
        let found = judge(&config, &facts);
        assert!(
            found.iter().any(|f| f.level == Level::Warning
                && f.host.as_deref() == Some("db3")
                && f.text.starts_with("log_slave_updates is off")),
            "{found:?}"
        );
        // A slave without it still passes: it is never promoted.
        assert!(!found.iter().any(|f| f.level == Level::Error), "{found:?}");
    }
}
