//! `[roles.NAME]` and `active_master_role`: which hosts may hold which addresses, and no
//! address claimed twice.

use super::hosts::valid_name;
use super::Collector;
use crate::config::raw::RawConfig;
use crate::config::{Host, Role};
use crate::types::{HostMode, RoleMode};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub(super) fn roles(c: &mut Collector, raw: &RawConfig, hosts: &[Host]) -> Vec<Role> {
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

pub(super) fn check_active_master_role(
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

pub(super) fn check_unique_ips(c: &mut Collector, hosts: &[Host], roles: &[Role]) {
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
