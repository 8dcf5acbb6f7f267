//! `/metrics`: the agent's state in Prometheus' text format (names per its conventions:
//! `mmm_agent_` prefix, base units, `_total` counters, 0/1 gauges for booleans, one
//! series per state of an enumeration), rendered from a [`Snapshot`] without IO; and the
//! counters of actions the monitor asked for.

use super::verdict::{self, Snapshot};
use mmm_common::proto::{Action, ActionOutcome, ProbeState};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every metric family `render` can write (some only in some states: replication,
/// fencing, a fleet): what dashboards and alert rules may reference
/// (conf/grafana-dashboard.json and conf/alerts.yml are tested against it).
pub const FAMILIES: [&str; 22] = [
    "mmm_agent_info",
    "mmm_agent_writer",
    "mmm_agent_reader",
    "mmm_agent_mysql_up",
    "mmm_agent_writer_wanted",
    "mmm_agent_writer_permit",
    "mmm_agent_lease_fenced",
    "mmm_agent_lease_seconds_left",
    "mmm_agent_lease_fences_total",
    "mmm_agent_mysql_read_only",
    "mmm_agent_mysql_answered_age_seconds",
    "mmm_agent_probe_state",
    "mmm_agent_probe_mysqld_exited",
    "mmm_agent_vip_held",
    "mmm_agent_replication_io_running",
    "mmm_agent_replication_sql_running",
    "mmm_agent_replication_lag_seconds",
    "mmm_agent_actions_total",
    "mmm_agent_etcd_lease_renewed",
    "mmm_agent_etcd_lease_renewal_age_seconds",
    "mmm_agent_config_reload_success",
    "mmm_agent_config_last_reload_timestamp_seconds",
];

/// Action kinds, as labelled (`action=`).
const ACTIONS: [&str; 9] = [
    "set_read_only",
    "lift_read_only",
    "kill_sessions",
    "catch_up",
    "stop_replication",
    "start_replication",
    "change_master",
    "demote",
    "stop_io_thread",
];

/// Action outcomes, as labelled (`outcome=`), in `ActionOutcome`'s order.
const OUTCOMES: [&str; 4] = ["ok", "failed", "timed_out", "not_replica"];

/// The label of an action's kind.
pub fn action_kind(a: &Action) -> &'static str {
    ACTIONS[match a {
        Action::SetReadOnly { on: true } => 0,
        Action::SetReadOnly { on: false } => 1,
        Action::KillSessions => 2,
        Action::CatchUp { .. } => 3,
        Action::StopReplication => 4,
        Action::StartReplication => 5,
        Action::ChangeMaster { .. } => 6,
        Action::Demote => 7,
        Action::StopIoThread { .. } => 8,
    }]
}

/// Actions done since the agent started, by kind and outcome.
#[derive(Default)]
pub struct Counters {
    actions: [[AtomicU64; OUTCOMES.len()]; ACTIONS.len()],
}

impl Counters {
    pub fn action(&self, kind: &'static str, outcome: ActionOutcome) {
        let o = match outcome {
            ActionOutcome::Ok => 0,
            ActionOutcome::Failed => 1,
            ActionOutcome::TimedOut => 2,
            ActionOutcome::NotReplica => 3,
        };
        if let Some(row) = ACTIONS.iter().position(|k| *k == kind) {
            self.actions[row][o].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{labels}}} {value}")
        };
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    Family { out }
}

fn bit(b: bool) -> u8 {
    u8::from(b)
}

/// The text of `/metrics`.
pub fn render(host: &str, s: &Snapshot, counters: &Counters) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    family(
        o,
        "mmm_agent_info",
        "gauge",
        "The agent's host and version (always 1).",
    )
    .sample(
        "mmm_agent_info",
        &format!("host=\"{host}\",version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    let gauges: [(&str, &str, bool); 6] = [
        ("mmm_agent_writer", "1 while /writer answers 200: this host is the writer, with a valid permit, the writer VIP (or role) and mysqld writable.", verdict::writer(s).ok),
        ("mmm_agent_reader", "1 while /reader answers 200.", verdict::reader(s).ok),
        ("mmm_agent_mysql_up", "1 while mysqld answers the agent (/health).", verdict::health(s).ok),
        ("mmm_agent_writer_wanted", "1 while the monitor's desired state makes this host writable and the permit allows it.", s.writer_wanted),
        ("mmm_agent_writer_permit", "1 while the writer permit is valid: the lease (or the agent's etcd lease in a fleet) runs and no fence holds; always 1 with fencing = \"none\".", s.permit.valid()),
        ("mmm_agent_lease_fenced", "1 while the lease's self-fence holds (until a monitor connected after it sends a desired state).", s.permit.fenced.is_some()),
    ];
    for (name, help, value) in gauges {
        family(o, name, "gauge", help).sample(name, "", bit(value));
    }
    if s.permit.enforced {
        let left = s.permit.left.unwrap_or_default().as_secs_f64();
        family(o, "mmm_agent_lease_seconds_left", "gauge", "Seconds until the writer permit runs out (0: expired); absent with fencing = \"none\".")
            .sample("mmm_agent_lease_seconds_left", "", left);
    }
    family(
        o,
        "mmm_agent_lease_fences_total",
        "counter",
        "Times the lease fenced this host since the agent started.",
    )
    .sample("mmm_agent_lease_fences_total", "", s.fences);
    if let Some(ro) = s.read_only {
        family(
            o,
            "mmm_agent_mysql_read_only",
            "gauge",
            "mysqld's read_only as last read (absent while it does not answer).",
        )
        .sample("mmm_agent_mysql_read_only", "", bit(ro));
    }
    if let Some(ago) = s.answered_ago {
        family(
            o,
            "mmm_agent_mysql_answered_age_seconds",
            "gauge",
            "Seconds since mysqld last answered the agent.",
        )
        .sample(
            "mmm_agent_mysql_answered_age_seconds",
            "",
            ago.as_secs_f64(),
        );
    }
    let probe = s.probe.unwrap_or(ProbeState::Off);
    let f = &mut family(o, "mmm_agent_probe_state", "gauge", "The eBPF liveness probe's state: 1 for the current one (off, searching for mysqld, watching it).");
    for (label, state) in [
        ("off", ProbeState::Off),
        ("searching", ProbeState::Searching),
        ("watching", ProbeState::Watching),
    ] {
        f.sample(
            "mmm_agent_probe_state",
            &format!("state=\"{label}\""),
            bit(probe == state),
        );
    }
    family(
        o,
        "mmm_agent_probe_mysqld_exited",
        "gauge",
        "1 while the probe has seen mysqld exit and no new one listening.",
    )
    .sample("mmm_agent_probe_mysqld_exited", "", bit(s.mysqld_exited));
    let f = &mut family(
        o,
        "mmm_agent_vip_held",
        "gauge",
        "1 for each role VIP this host holds, by role kind (writer or reader).",
    );
    for ip in &s.held_vips {
        let role = if s.writer_vips.contains(ip) {
            "writer"
        } else {
            "reader"
        };
        f.sample(
            "mmm_agent_vip_held",
            &format!("vip=\"{ip}\",role=\"{role}\""),
            1,
        );
    }
    if let Some(r) = &s.replication {
        let source = format!("source=\"{}:{}\"", r.source_host, r.source_port);
        family(
            o,
            "mmm_agent_replication_io_running",
            "gauge",
            "1 while the replication IO thread runs.",
        )
        .sample(
            "mmm_agent_replication_io_running",
            &source,
            bit(r.io_running),
        );
        family(
            o,
            "mmm_agent_replication_sql_running",
            "gauge",
            "1 while the replication SQL thread runs.",
        )
        .sample(
            "mmm_agent_replication_sql_running",
            &source,
            bit(r.sql_running),
        );
        if let Some(lag) = r.seconds_behind {
            family(
                o,
                "mmm_agent_replication_lag_seconds",
                "gauge",
                "Seconds_Behind_Master (absent while NULL).",
            )
            .sample("mmm_agent_replication_lag_seconds", &source, lag);
        }
    }
    let f = &mut family(
        o,
        "mmm_agent_actions_total",
        "counter",
        "Actions the monitor asked for since the agent started, by kind and outcome.",
    );
    for (row, action) in ACTIONS.iter().enumerate() {
        for (col, outcome) in OUTCOMES.iter().enumerate() {
            let n = counters.actions[row][col].load(Ordering::Relaxed);
            f.sample(
                "mmm_agent_actions_total",
                &format!("action=\"{action}\",outcome=\"{outcome}\""),
                n,
            );
        }
    }
    if let Some(etcd) = &s.etcd {
        family(o, "mmm_agent_etcd_lease_renewed", "gauge", "In a fleet: 1 while etcd renewed the agent's own lease (its writer permit) within two keepalive periods.")
            .sample("mmm_agent_etcd_lease_renewed", "", bit(etcd.ok));
        if let Some(ago) = etcd.ago {
            family(
                o,
                "mmm_agent_etcd_lease_renewal_age_seconds",
                "gauge",
                "In a fleet: seconds since etcd last renewed the agent's own lease.",
            )
            .sample(
                "mmm_agent_etcd_lease_renewal_age_seconds",
                "",
                ago.as_secs_f64(),
            );
        }
    }
    out.push_str(&s.config_load.render("mmm_agent"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::verdict::{EtcdRenewal, Permit};
    use std::time::Duration;

    /// Every sample line parses as `name{labels} value`, every family has HELP and TYPE
    /// before its samples, names carry the prefix, and the values say what the state is.
    #[test]
    fn the_text_is_prometheus_exposition_with_the_agent_state() {
        let counters = Counters::default();
        counters.action(action_kind(&Action::Demote), ActionOutcome::Ok);
        counters.action(action_kind(&Action::Demote), ActionOutcome::Ok);
        counters.action(
            action_kind(&Action::SetReadOnly { on: false }),
            ActionOutcome::TimedOut,
        );
        let s = Snapshot {
            answered_ago: Some(Duration::from_millis(100)),
            fresh: Duration::from_secs(2),
            read_only: Some(true),
            held_vips: vec!["10.0.0.101".parse().expect("ip")],
            reader_vips: ["10.0.0.101".parse().expect("ip")].into(),
            permit: Permit {
                enforced: true,
                left: None,
                fenced: None,
                etcd: true,
            },
            probe: Some(ProbeState::Watching),
            fences: 3,
            etcd: Some(EtcdRenewal {
                ok: false,
                ago: Some(Duration::from_secs(4)),
            }),
            ..Snapshot::default()
        };
        let text = render("db2", &s, &counters);
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert!(
                    !kind.is_empty() && (kind != "counter" || name.ends_with("_total")),
                    "{line}"
                );
                typed.insert(name.to_string());
                continue;
            }
            if line.starts_with("# HELP mmm_agent_") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name = series.split('{').next().expect("name");
            assert!(name.starts_with("mmm_agent_"), "{line}");
            assert!(typed.contains(name), "no TYPE before {line}");
            value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        for expected in [
            "mmm_agent_info{host=\"db2\",version=\"",
            "\nmmm_agent_writer 0\n",
            "\nmmm_agent_reader 1\n",
            "\nmmm_agent_mysql_up 1\n",
            "\nmmm_agent_writer_permit 0\n",
            "\nmmm_agent_lease_seconds_left 0\n",
            "\nmmm_agent_lease_fences_total 3\n",
            "\nmmm_agent_mysql_read_only 1\n",
            "mmm_agent_probe_state{state=\"watching\"} 1\n",
            "mmm_agent_probe_state{state=\"off\"} 0\n",
            "mmm_agent_vip_held{vip=\"10.0.0.101\",role=\"reader\"} 1\n",
            "mmm_agent_actions_total{action=\"demote\",outcome=\"ok\"} 2\n",
            "mmm_agent_actions_total{action=\"lift_read_only\",outcome=\"timed_out\"} 1\n",
            "mmm_agent_actions_total{action=\"catch_up\",outcome=\"not_replica\"} 0\n",
            "\nmmm_agent_etcd_lease_renewed 0\n",
            "\nmmm_agent_etcd_lease_renewal_age_seconds 4\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        assert!(
            !text.contains("mmm_agent_replication_"),
            "no replication, no series"
        );
    }

    /// Every family rendered is in docs/operations.md's table of agent metrics.
    #[test]
    fn every_metric_is_documented() {
        let s = Snapshot {
            answered_ago: Some(Duration::from_millis(100)),
            read_only: Some(false),
            permit: Permit {
                enforced: true,
                ..Permit::default()
            },
            replication: Some(mmm_common::proto::Replication {
                source_host: "10.0.0.11".into(),
                source_port: 3306,
                io_running: true,
                sql_running: true,
                seconds_behind: Some(0),
                last_error: String::new(),
            }),
            etcd: Some(EtcdRenewal {
                ok: true,
                ago: Some(Duration::ZERO),
            }),
            ..Snapshot::default()
        };
        let text = render("db1", &s, &Counters::default());
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .expect("docs/operations.md");
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        // With every optional part present, exactly FAMILIES, each named per the conventions.
        assert_eq!(families, FAMILIES);
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let (name, kind) = line.split_once(' ').expect("TYPE name kind");
            let problem = mmm_common::http::metric_name_problem(name, kind);
            assert!(problem.is_none(), "{problem:?}");
        }
        for name in families {
            assert!(
                docs.contains(&format!("`{name}")),
                "{name} is not in docs/operations.md"
            );
        }
    }
}
