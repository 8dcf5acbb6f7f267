//! From the monitor's desired state to ordered steps, and their execution.
//!
//! [`plan`] is pure: desired state + what the host holds -> steps, in the order that
//! keeps the cluster safe: first VIPs are removed (the writer's first), then the server
//! becomes read-only and client sessions are killed (docs/fencing.md); then, when this host
//! is to write, it becomes writable before it takes VIPs and announces them. A host that
//! already matches gets no steps, so re-applying the same state (after an agent restart,
//! or the monitor's periodic re-assertion) touches nothing. A parked writer VIP (see
//! [`crate::rst`]) is answered with RST and announced, never added: parking goes last,
//! and taking the VIP for real ends it (the RST program lets its packets pass again just
//! after the address is added, which follows the server going writable).

//!
//! The steps run in [`Executor`] (`executor`); what must happen around each address,
//! whoever adds or removes it, is in [`VipGuards`] (`guards`).

use mmm_common::config::{Config, Host};
use mmm_common::proto::DesiredState;
use mmm_common::types::HostState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

mod executor;
mod guards;
#[cfg(test)]
mod tests;

pub use executor::{Executor, StepError};
pub use guards::VipGuards;
pub use mmm_common::error_chain;

/// A desired state checked against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub epoch: u32,
    pub state: HostState,
    pub active_master: String,
    pub writable: bool,
    /// VIP -> role.
    pub vips: BTreeMap<Ipv4Addr, String>,
    /// Writer VIPs to park.
    pub parked: BTreeSet<Ipv4Addr>,
}

/// What the host holds, as read from the kernel and the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub vips: BTreeSet<Ipv4Addr>,
    /// `None` when mysqld did not answer.
    pub read_only: Option<bool>,
    /// VIPs the RST program answers for as parked.
    pub parked: BTreeSet<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    RemoveVip(Ipv4Addr),
    SetReadOnly(bool),
    KillSessions,
    AddVip(Ipv4Addr),
    Announce(Ipv4Addr),
    /// Answer TCP to the VIP with RST and announce it, without adding it.
    Park(Ipv4Addr),
    /// Parked no more and not taken: answered with RST until the owner's ARP (as released).
    Unpark(Ipv4Addr),
    /// Parked, yet the address is ours (added by hand): only the kernel may answer for it.
    Reclaim(Ipv4Addr),
}

/// What the agent needs to know of the config to judge and apply desired states.
#[derive(Debug, Clone)]
pub struct Scope {
    pub host: String,
    /// Every role IP in the config: the only addresses the agent ever removes.
    pub managed: BTreeSet<Ipv4Addr>,
    /// role IP -> (role, hosts allowed to hold it).
    pub roles: BTreeMap<Ipv4Addr, (String, Vec<String>)>,
    pub writer_role: String,
    /// Hosts of the writer role: the only ones ever made writable (the role may have no
    /// VIP, so this is not in `roles`).
    pub writer_hosts: Vec<String>,
}

impl Scope {
    pub fn new(config: &Config, host: &Host) -> Scope {
        let mut roles = BTreeMap::new();
        for r in &config.roles {
            for ip in &r.ips {
                roles.insert(*ip, (r.name.clone(), r.hosts.clone()));
            }
        }
        Scope {
            host: host.name.clone(),
            managed: roles.keys().copied().collect(),
            roles,
            writer_role: config.active_master_role.clone(),
            writer_hosts: config
                .role(&config.active_master_role)
                .map(|r| r.hosts.clone())
                .unwrap_or_default(),
        }
    }

    /// The writer role's VIPs.
    pub fn writer_vips(&self) -> BTreeSet<Ipv4Addr> {
        self.roles
            .iter()
            .filter(|(_, (role, _))| *role == self.writer_role)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Checks a desired state against the config; every problem is listed and nothing
    /// of a refused state is applied.
    pub fn check(&self, d: &DesiredState) -> Result<Desired, Vec<String>> {
        let mut problems = Vec::new();
        let mut vips = BTreeMap::new();
        for (role, ip) in &d.roles {
            match self.roles.get(ip) {
                None => problems.push(format!("{ip} is not an IP of any configured role")),
                Some((r, _)) if r != role => {
                    problems.push(format!("{ip} belongs to role {r}, not {role}"))
                }
                Some((_, hosts)) if !hosts.contains(&self.host) => {
                    problems.push(format!("role {role} may not be held by {}", self.host))
                }
                Some(_) => {
                    if vips.insert(*ip, role.clone()).is_some() {
                        problems.push(format!("{ip} is listed twice"));
                    }
                }
            }
        }
        let writer_vips = self.writer_vips();
        let mut parked = BTreeSet::new();
        for ip in &d.parked {
            if !writer_vips.contains(ip) {
                problems.push(format!(
                    "{ip} is parked but is not a VIP of role {}",
                    self.writer_role
                ));
            } else if !self.writer_hosts.contains(&self.host) {
                problems.push(format!(
                    "{ip} is parked, but {} is not a host of role {}",
                    self.host, self.writer_role
                ));
            } else if vips.contains_key(ip) {
                problems.push(format!("{ip} is both held and parked"));
            } else if !parked.insert(*ip) {
                problems.push(format!("{ip} is parked twice"));
            }
        }
        if d.writable && !d.parked.is_empty() {
            problems.push("parked VIPs with writable = true".to_string());
        }
        let writes = d.roles.iter().any(|(r, _)| *r == self.writer_role);
        if writes && !d.writable {
            problems.push(format!("role {} without writable = true", self.writer_role));
        }
        if d.writable && !self.writer_hosts.contains(&self.host) {
            problems.push(format!(
                "writable = true, but {} is not a host of role {}",
                self.host, self.writer_role
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Desired {
            epoch: d.epoch,
            state: d.state,
            active_master: d.active_master.clone(),
            writable: d.writable,
            vips,
            parked,
        })
    }
}

/// The ordered steps that take `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &Observed, scope: &Scope) -> Vec<Step> {
    let mut steps = Vec::new();
    let writer_vips = scope.writer_vips();
    let mut removals: Vec<Ipv4Addr> = observed
        .vips
        .iter()
        .filter(|ip| scope.managed.contains(ip) && !desired.vips.contains_key(ip))
        .copied()
        .collect();
    // The writer VIP goes first: it is what lets clients write here.
    removals.sort_by_key(|ip| !writer_vips.contains(ip));
    steps.extend(removals.into_iter().map(Step::RemoveVip));
    // Parked no more: a VIP about to be added is reclaimed by its addition.
    for ip in &observed.parked {
        if desired.parked.contains(ip) {
            continue;
        }
        match (desired.vips.contains_key(ip), observed.vips.contains(ip)) {
            (false, _) => steps.push(Step::Unpark(*ip)),
            (true, true) => steps.push(Step::Reclaim(*ip)),
            (true, false) => {}
        }
    }
    if !desired.writable && observed.read_only != Some(true) {
        steps.push(Step::SetReadOnly(true));
        steps.push(Step::KillSessions);
    }
    if desired.writable && observed.read_only != Some(false) {
        steps.push(Step::SetReadOnly(false));
    }
    let mut additions: Vec<Ipv4Addr> = desired
        .vips
        .keys()
        .filter(|ip| !observed.vips.contains(ip))
        .copied()
        .collect();
    additions.sort_by_key(|ip| !writer_vips.contains(ip));
    steps.extend(additions.iter().map(|ip| Step::AddVip(*ip)));
    steps.extend(additions.into_iter().map(Step::Announce));
    steps.extend(
        desired
            .parked
            .iter()
            .filter(|ip| !observed.parked.contains(ip))
            .map(|ip| Step::Park(*ip)),
    );
    steps
}
