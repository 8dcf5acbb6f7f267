//! conf/grafana-dashboard.json and conf/alerts.yml parse, have the shape Grafana and
//! Prometheus load, and name only metrics the agent and the monitor export (their
//! FAMILIES lists, which the exporters' own tests hold to what they render).

use mmm_tests::workspace_root;
use std::collections::BTreeSet;

fn exported() -> BTreeSet<&'static str> {
    mmm_agent::http::metrics::FAMILIES
        .iter()
        .chain(&mmm_monitor::daemon::metrics::FAMILIES)
        .copied()
        .collect()
}

/// Every `mmm_...` word of a text: metric names (alert and group names are spelled
/// `Mmm...` and `mmm-...`, so they are not taken).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("mmm_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let before = rest[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(word.clone());
        }
        rest = &rest[at + word.len()..];
    }
    names
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn alert_rules_parse_and_reference_only_exported_metrics() {
    let text = read("conf/alerts.yml");
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).expect("conf/alerts.yml is YAML");
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    let mut alerts = 0;
    for g in groups {
        let group = g["name"].as_str().expect("every group has a name");
        for r in g["rules"].as_sequence().expect("rules: a list") {
            let alert = r["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("{group}: a rule without alert"));
            let expr = r["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no expr"));
            assert!(
                !metric_names(expr).is_empty(),
                "{alert}: its expr names no mmm metric"
            );
            assert!(
                ["critical", "warning", "info"]
                    .contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{alert}: severity critical, warning or info"
            );
            assert!(
                r["annotations"]["summary"].is_string(),
                "{alert}: no summary"
            );
            if let Some(d) = r.get("for") {
                let d = d.as_str().expect("for: a duration");
                assert!(d.ends_with(['s', 'm', 'h']), "{alert}: for {d}");
            }
            alerts += 1;
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
    let used = metric_names(&text);
    let exported = exported();
    for name in &used {
        assert!(
            exported.contains(name.as_str()),
            "conf/alerts.yml: {name} is not exported (exported: {exported:?})"
        );
    }
    // The invariant everyone alerts on.
    assert!(used.contains("mmm_agent_writer"), "{used:?}");
}

#[test]
fn grafana_dashboard_parses_and_references_only_exported_metrics() {
    let text = read("conf/grafana-dashboard.json");
    let doc: serde_json::Value =
        serde_json::from_str(&text).expect("conf/grafana-dashboard.json is JSON");
    assert!(
        doc["title"].is_string() && doc["uid"].is_string(),
        "title and uid"
    );
    let panels = doc["panels"].as_array().expect("panels: a list");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("a numeric id")),
            "{title}: duplicate id"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no mmm metric");
            used.extend(names);
        }
    }
    // Metrics named anywhere else in the file (descriptions) must exist too.
    used.extend(metric_names(&text));
    let exported = exported();
    for name in &used {
        assert!(
            exported.contains(name.as_str()),
            "conf/grafana-dashboard.json: {name} is not exported"
        );
    }
    // The dashboard shows the agents' lease, permit, probe and actions.
    for needed in [
        "mmm_agent_lease_seconds_left",
        "mmm_agent_writer_permit",
        "mmm_agent_probe_state",
        "mmm_agent_actions_total",
        "mmm_host_state",
    ] {
        assert!(used.contains(needed), "the dashboard lacks {needed}");
    }
}

#[test]
fn metric_names_takes_only_whole_mmm_words() {
    let names = metric_names("sum(mmm_agent_writer) > 1 # MmmTwoWriters mmm-control xmmm_no");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["mmm_agent_writer"]);
}
