//! `[checks.default]` and one section per check kind laid over it.

use super::Collector;
use crate::config::raw::RawCheck;
use crate::config::{CheckConfig, Checks};
use crate::types::CheckKind;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) fn checks(c: &mut Collector, raw: &[(String, RawCheck)]) -> Checks {
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
