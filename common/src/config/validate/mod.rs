//! Raw config -> [`Config`], collecting every problem instead of stopping at the first.
//! One module per section of the file; [`Collector`] converts values and gathers the
//! problems for all of them.

mod agent;
mod checks;
mod collector;
mod coordination;
mod hosts;
mod monitor;
mod roles;

pub(super) use collector::Collector;

use super::raw::RawConfig;
use super::{ClusterKey, Config, Problem, Problems, Secret, SecurityConfig};
use crate::types::{Fencing, HostMode};
use std::collections::BTreeSet;
use std::ops::Bound::{Excluded, Unbounded};

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

    let hosts = hosts::hosts(&mut c, &raw);
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
    let roles = roles::roles(&mut c, &raw, &hosts);
    let active_master_role = raw
        .active_master_role
        .clone()
        .unwrap_or_else(|| "writer".into());
    roles::check_active_master_role(&mut c, &active_master_role, &roles, &hosts, &unknown_mode);
    roles::check_unique_ips(&mut c, &hosts, &roles);
    let monitor = monitor::monitor(&mut c, &raw);
    let checks = checks::checks(&mut c, &raw.checks);
    let agent = agent::agent(&mut c, &raw);
    agent::check_agent_http(&mut c, agent.http, &hosts);
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
    let coordination = raw
        .coordination
        .as_ref()
        .map(|r| coordination::coordination(&mut c, r));
    if agent.fencing == Fencing::Lease {
        c.within(
            "agent.lease",
            agent.lease,
            (Excluded(monitor.heartbeat_interval), Unbounded),
            || format!(
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
