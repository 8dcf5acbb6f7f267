//! The Prometheus text (`/metrics` of `monitor.http`, and `monitor.metrics`): host
//! states, role holders, check latencies, failover counts and durations, each agent's
//! probe, release and protocol. Served by http/.

use mmm_common::types::HostState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Each host's state, refreshed by the core loop after changes.
    pub hosts: Vec<(String, HostState)>,
    /// (role, ip, holder) of every held role IP ("" for a role without a VIP).
    pub roles: Vec<(String, String, String)>,
    /// The active master and its address, for proxies that route by it.
    pub writer: Option<(String, String)>,
    /// (host, check) -> last latency in seconds.
    pub check_latency: BTreeMap<(String, String), f64>,
    pub failovers: u64,
    pub last_failover_seconds: f64,
    /// (host, probe state, blind): see `HostRec::probe_blind`.
    pub probes: Vec<(String, &'static str, bool)>,
    /// host -> (the agent's release, the protocol spoken with it), as last negotiated
    /// (daemon/links.rs): kept after a link drops, so an upgrade's progress stays visible.
    pub agents: BTreeMap<String, (String, u8)>,
    /// The config file's loads (start, SIGHUP): daemon/reload.rs.
    pub config_load: mmm_common::config::reload::LoadState,
}

/// Every metric family `render` writes: what dashboards and alert rules may reference
/// (conf/grafana-dashboard.json and conf/alerts.yml are tested against it).
pub const FAMILIES: [&str; 11] = [
    "mmm_host_state",
    "mmm_writer",
    "mmm_role_holder",
    "mmm_check_latency_seconds",
    "mmm_probe_state",
    "mmm_probe_blind",
    "mmm_agent_link_info",
    "mmm_failovers_total",
    "mmm_last_failover_duration_seconds",
    "mmm_config_reload_success",
    "mmm_config_last_reload_timestamp_seconds",
];

/// Every value of `mmm_probe_state`'s `state` label (`HostRec::probe_state`).
const PROBE_STATES: [&str; 4] = ["watching", "searching", "off", "unknown"];

pub type Shared = Arc<Mutex<Metrics>>;

pub fn render(m: &Metrics) -> String {
    let mut out = String::from(
        "# HELP mmm_host_state 1 for the state each host is in.\n# TYPE mmm_host_state gauge\n",
    );
    for (host, state) in &m.hosts {
        for s in HostState::ALL {
            out.push_str(&format!(
                "mmm_host_state{{host=\"{host}\",state=\"{s}\"}} {}\n",
                u8::from(state == s)
            ));
        }
    }
    out.push_str("# HELP mmm_writer 1 for the active master (the host to write to), with its address.\n# TYPE mmm_writer gauge\n");
    if let Some((host, ip)) = &m.writer {
        out.push_str(&format!("mmm_writer{{host=\"{host}\",ip=\"{ip}\"}} 1\n"));
    }
    out.push_str("# HELP mmm_role_holder 1 for the host holding each role IP.\n# TYPE mmm_role_holder gauge\n");
    for (role, ip, host) in &m.roles {
        out.push_str(&format!(
            "mmm_role_holder{{role=\"{role}\",ip=\"{ip}\",host=\"{host}\"}} 1\n"
        ));
    }
    out.push_str("# HELP mmm_check_latency_seconds Duration of the last run of each check.\n# TYPE mmm_check_latency_seconds gauge\n");
    for ((h, c), v) in &m.check_latency {
        out.push_str(&format!(
            "mmm_check_latency_seconds{{host=\"{h}\",check=\"{c}\"}} {v}\n"
        ));
    }
    out.push_str("# HELP mmm_probe_state 1 for the state of each agent's eBPF liveness probe.\n# TYPE mmm_probe_state gauge\n");
    for (host, state, _) in &m.probes {
        for s in PROBE_STATES {
            out.push_str(&format!(
                "mmm_probe_state{{host=\"{host}\",state=\"{s}\"}} {}\n",
                u8::from(*state == s)
            ));
        }
    }
    out.push_str("# HELP mmm_probe_blind 1 while a host's probe watches no mysqld process though mysqld answers (its death would be seen by the mysql check only).\n# TYPE mmm_probe_blind gauge\n");
    for (host, _, blind) in &m.probes {
        out.push_str(&format!(
            "mmm_probe_blind{{host=\"{host}\"}} {}\n",
            u8::from(*blind)
        ));
    }
    // Named apart from the agent's own mmm_agent_info{host,version}: both are scraped,
    // and a query counting releases must not count each agent twice.
    out.push_str("# HELP mmm_agent_link_info Each agent's release and the protocol this monitor speaks with it, as last negotiated (always 1).\n# TYPE mmm_agent_link_info gauge\n");
    for (host, (version, protocol)) in &m.agents {
        out.push_str(&format!(
            "mmm_agent_link_info{{host=\"{host}\",version=\"{version}\",protocol=\"{protocol}\"}} 1\n"
        ));
    }
    out.push_str(&format!(
        "# HELP mmm_failovers_total Writer promotions completed.\n# TYPE mmm_failovers_total counter\nmmm_failovers_total {}\n",
        m.failovers
    ));
    out.push_str(&format!(
        "# HELP mmm_last_failover_duration_seconds Duration of the last promotion.\n# TYPE mmm_last_failover_duration_seconds gauge\nmmm_last_failover_duration_seconds {}\n",
        m.last_failover_seconds
    ));
    out.push_str(&m.config_load.render("mmm"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `render` writes is exactly FAMILIES, each named per Prometheus' conventions.
    #[test]
    fn families_are_the_exported_list_and_follow_the_conventions() {
        let m = Metrics {
            hosts: vec![("db1".into(), HostState::Online)],
            roles: vec![("writer".into(), "10.0.0.100".into(), "db1".into())],
            writer: Some(("db1".into(), "10.0.0.11".into())),
            check_latency: [(("db1".into(), "ping".into()), 0.001)].into(),
            probes: vec![("db1".into(), "watching", false)],
            agents: [("db1".into(), ("0.2.0".into(), 9))].into(),
            ..Default::default()
        };
        let text = render(&m);
        let typed: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let names: Vec<&str> = typed.iter().map(|t| t.0).collect();
        assert_eq!(names, FAMILIES);
        for (name, kind) in typed {
            let problem = mmm_common::http::metric_name_problem(name, kind);
            assert!(problem.is_none(), "{problem:?}");
        }
    }

    /// The writer is published even when its role has no VIP: proxies route by it.
    #[test]
    fn the_writer_and_role_holders_are_rendered() {
        let m = Metrics {
            hosts: vec![("db1".into(), HostState::Online)],
            roles: vec![("writer".into(), String::new(), "db1".into())],
            writer: Some(("db1".into(), "192.0.2.11".into())),
            probes: vec![("db1".into(), "searching", true)],
            agents: [
                ("db1".into(), ("0.2.0".into(), 9)),
                ("db2".into(), ("0.1.0".into(), 8)),
            ]
            .into(),
            ..Default::default()
        };
        let text = render(&m);
        assert!(
            text.contains("mmm_writer{host=\"db1\",ip=\"192.0.2.11\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mmm_role_holder{role=\"writer\",ip=\"\",host=\"db1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mmm_host_state{host=\"db1\",state=\"ONLINE\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mmm_probe_state{host=\"db1\",state=\"searching\"} 1\n")
                && text.contains("mmm_probe_state{host=\"db1\",state=\"watching\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("mmm_probe_blind{host=\"db1\"} 1\n"), "{text}");
        // A rolling upgrade half done: one agent of each release.
        assert!(
            text.contains("mmm_agent_link_info{host=\"db1\",version=\"0.2.0\",protocol=\"9\"} 1\n")
                && text.contains(
                    "mmm_agent_link_info{host=\"db2\",version=\"0.1.0\",protocol=\"8\"} 1\n"
                ),
            "{text}"
        );
    }
}
