//! The role table and MMM's distribution rules: an orphaned IP goes to the role's
//! preferred host if it is eligible, else to the eligible host with the fewest roles
//! (the active-master role counting 0.5), config order breaking ties; balanced roles are
//! evened out one IP at a time until no host has two more than another.

use mmm_common::config::Config;
use mmm_common::types::RoleMode;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleIp {
    pub role: String,
    /// `None`: an exclusive role without a VIP (`ips = []`): the holder is published
    /// (show, show --json, metrics, notify_command) for proxies that route by it.
    pub ip: Option<Ipv4Addr>,
    pub mode: RoleMode,
    /// Hosts allowed to hold it, in config order.
    pub hosts: Vec<String>,
    pub prefer: Option<String>,
    pub holder: Option<String>,
}

impl RoleIp {
    /// `reader(10.0.0.101)`, or `writer` for a role without a VIP.
    pub fn label(&self) -> String {
        match self.ip {
            Some(ip) => format!("{}({ip})", self.role),
            None => self.role.clone(),
        }
    }
}

/// Who holds which role IP. Its fields are its own: a holder changes only through the
/// methods below, so an exclusive role never has two holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleTable {
    ips: Vec<RoleIp>,
    writer_role: String,
}

impl RoleTable {
    pub fn new(config: &Config) -> RoleTable {
        let mut ips = Vec::new();
        for r in &config.roles {
            // A role without IPs (exclusive only) is one entry without a VIP.
            let role_ips: Vec<Option<Ipv4Addr>> = if r.ips.is_empty() {
                vec![None]
            } else {
                r.ips.iter().copied().map(Some).collect()
            };
            for ip in role_ips {
                ips.push(RoleIp {
                    role: r.name.clone(),
                    ip,
                    mode: r.mode,
                    hosts: r.hosts.clone(),
                    prefer: r.prefer.clone(),
                    holder: None,
                });
            }
        }
        RoleTable {
            ips,
            writer_role: config.active_master_role.clone(),
        }
    }

    /// Every role IP, in config order.
    pub fn ips(&self) -> &[RoleIp] {
        &self.ips
    }

    /// The active-master role's name.
    pub fn writer_role(&self) -> &str {
        &self.writer_role
    }

    /// The role IP at `i` (an index from [`RoleTable::find_ip`]).
    pub fn ip_at(&self, i: usize) -> &RoleIp {
        &self.ips[i]
    }

    /// The index of `role`'s entry without a VIP.
    pub fn find_without_ip(&self, role: &str) -> Option<usize> {
        self.ips
            .iter()
            .position(|r| r.role == role && r.ip.is_none())
    }

    /// The first entry of `role`: its holder, for an exclusive role.
    pub fn first_of(&self, role: &str) -> Option<&RoleIp> {
        self.ips.iter().find(|r| r.role == role)
    }

    /// Gives the role IP at `i` to `host` (or to nobody).
    pub fn set_holder(&mut self, i: usize, host: Option<String>) {
        self.ips[i].holder = host;
    }

    /// Gives `role`'s first entry to `host`.
    pub fn give_first(&mut self, role: &str, host: &str) {
        if let Some(r) = self.ips.iter_mut().find(|r| r.role == role) {
            r.holder = Some(host.into());
        }
    }

    /// Takes every IP of `role` from `host`.
    pub fn take_role_from(&mut self, role: &str, host: &str) {
        for r in self
            .ips
            .iter_mut()
            .filter(|r| r.role == role && r.holder.as_deref() == Some(host))
        {
            r.holder = None;
        }
    }

    /// A VIP `host` reports holding at start-up is kept there, if nobody holds it, the
    /// host may hold it, and it is not the writer's (only the start-up vote decides that).
    pub fn adopt(&mut self, ip: Ipv4Addr, host: &str) {
        let Some(i) = self.find_ip(ip) else {
            return;
        };
        let r = &mut self.ips[i];
        if r.role != self.writer_role && r.holder.is_none() && r.hosts.iter().any(|h| h == host) {
            r.holder = Some(host.into());
        }
    }

    /// MMM's count_host_roles: every IP counts 1, the active-master role 0.5.
    pub fn weight(&self, host: &str) -> f64 {
        self.ips
            .iter()
            .filter(|r| r.holder.as_deref() == Some(host))
            .map(|r| if r.role == self.writer_role { 0.5 } else { 1.0 })
            .sum()
    }

    /// The VIPs `host` holds, by role: what its agent is told (a role without a VIP
    /// has nothing for the agent to add).
    pub fn host_roles(&self, host: &str) -> Vec<(String, Ipv4Addr)> {
        self.ips
            .iter()
            .filter(|r| r.holder.as_deref() == Some(host))
            .filter_map(|r| Some((r.role.clone(), r.ip?)))
            .collect()
    }

    /// `reader(10.0.0.101)` strings (`writer` for a role without a VIP), sorted, as
    /// `show` prints them.
    pub fn host_role_labels(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .ips
            .iter()
            .filter(|r| r.holder.as_deref() == Some(host))
            .map(RoleIp::label)
            .collect();
        v.sort();
        v
    }

    pub fn writer(&self) -> Option<&RoleIp> {
        self.ips.iter().find(|r| r.role == self.writer_role)
    }

    pub fn writer_holder(&self) -> Option<&str> {
        self.writer().and_then(|r| r.holder.as_deref())
    }

    pub fn set_writer_holder(&mut self, host: Option<String>) {
        let writer = self.writer_role.clone();
        if let Some(r) = self.ips.iter_mut().find(|r| r.role == writer) {
            r.holder = host;
        }
    }

    pub fn find_ip(&self, ip: Ipv4Addr) -> Option<usize> {
        self.ips.iter().position(|r| r.ip == Some(ip))
    }

    /// The writer role's VIP; `None` when it has none (`ips = []`).
    pub fn writer_ip(&self) -> Option<Ipv4Addr> {
        self.writer().and_then(|r| r.ip)
    }

    pub fn role_exists(&self, role: &str) -> bool {
        self.ips.iter().any(|r| r.role == role)
    }

    pub fn role_hosts(&self, role: &str) -> Vec<String> {
        self.ips
            .iter()
            .find(|r| r.role == role)
            .map(|r| r.hosts.clone())
            .unwrap_or_default()
    }

    pub fn role_mode(&self, role: &str) -> Option<RoleMode> {
        self.ips.iter().find(|r| r.role == role).map(|r| r.mode)
    }

    /// Removes every role from `host`; returns whether it held the active-master role.
    pub fn clear_host(&mut self, host: &str) -> bool {
        let mut had_writer = false;
        for r in &mut self.ips {
            if r.holder.as_deref() == Some(host) {
                had_writer |= r.role == self.writer_role;
                r.holder = None;
            }
        }
        had_writer
    }

    /// The host an orphaned IP of `role` goes to: the preferred host when eligible,
    /// else the eligible host with the lowest weight, config order breaking ties.
    pub fn eligible_host(&self, role: &str, eligible: &dyn Fn(&str) -> bool) -> Option<String> {
        let r = self.ips.iter().find(|r| r.role == role)?;
        if let Some(p) = &r.prefer {
            if eligible(p) {
                return Some(p.clone());
            }
        }
        let mut best: Option<(&String, f64)> = None;
        for h in &r.hosts {
            if !eligible(h) {
                continue;
            }
            let w = self.weight(h);
            if best.is_none_or(|(_, bw)| w < bw) {
                best = Some((h, w));
            }
        }
        best.map(|(h, _)| h.clone())
    }

    /// Assigns orphaned IPs of non-writer roles (the writer is assigned only by a
    /// promotion). Returns the (role, ip, host) assignments made.
    pub fn assign_orphans(&mut self, eligible: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut made = Vec::new();
        for mode in [RoleMode::Exclusive, RoleMode::Balanced] {
            for i in 0..self.ips.len() {
                let r = &self.ips[i];
                if r.mode != mode || r.holder.is_some() || r.role == self.writer_role {
                    continue;
                }
                let role = r.role.clone();
                if let Some(h) = self.eligible_host(&role, eligible) {
                    self.ips[i].holder = Some(h.clone());
                    made.push((self.ips[i].label(), h));
                }
            }
        }
        made
    }

    /// Evens out balanced roles among eligible hosts, one IP per step, until no host has
    /// two more than another. Returns the moves made as (role, ip, from, to).
    pub fn balance(&mut self, eligible: &dyn Fn(&str) -> bool) -> Vec<(String, String, String)> {
        let mut moves = Vec::new();
        let roles: Vec<String> = {
            let mut v: Vec<String> = self
                .ips
                .iter()
                .filter(|r| r.mode == RoleMode::Balanced)
                .map(|r| r.role.clone())
                .collect();
            v.dedup();
            v
        };
        for role in roles {
            let hosts: Vec<String> = self
                .role_hosts(&role)
                .into_iter()
                .filter(|h| eligible(h))
                .collect();
            if hosts.len() < 2 {
                continue;
            }
            loop {
                let count = |t: &RoleTable, h: &str| {
                    t.ips
                        .iter()
                        .filter(|r| r.role == role && r.holder.as_deref() == Some(h))
                        .count()
                };
                let (mut max_h, mut min_h) = (&hosts[0], &hosts[0]);
                for h in &hosts {
                    if count(self, h) > count(self, max_h) {
                        max_h = h;
                    }
                    if count(self, h) < count(self, min_h) {
                        min_h = h;
                    }
                }
                if count(self, max_h) <= count(self, min_h) + 1 {
                    break;
                }
                let Some(i) = self
                    .ips
                    .iter()
                    .position(|r| r.role == role && r.holder.as_deref() == Some(max_h.as_str()))
                else {
                    break;
                };
                self.ips[i].holder = Some(min_h.clone());
                moves.push((self.ips[i].label(), max_h.clone(), min_h.clone()));
            }
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table() -> RoleTable {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab.toml"))
                .unwrap();
        RoleTable::new(&Config::parse(&text, Path::new("lab.toml")).unwrap())
    }

    #[test]
    fn orphans_go_to_the_fewest_roles_with_the_writer_counting_half() {
        let mut t = table();
        t.set_writer_holder(Some("db1".into()));
        let all = |_: &str| true;
        let made = t.assign_orphans(&all);
        // db1 has 0.5 (writer): the first reader goes to db2 (0), the next to db3 (0),
        // the third to db1 (0.5 < 1).
        let hosts: Vec<&str> = made.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(hosts, ["db2", "db3", "db1"]);
        assert_eq!(
            t.host_role_labels("db1"),
            ["reader(192.0.2.103)", "writer(192.0.2.100)"]
        );
    }

    #[test]
    fn balance_moves_one_ip_at_a_time_from_the_fullest_host() {
        let mut t = table();
        for r in t.ips.iter_mut().filter(|r| r.role == "reader") {
            r.holder = Some("db3".into());
        }
        let moves = t.balance(&|_: &str| true);
        assert_eq!(moves.len(), 2);
        for h in ["db1", "db2", "db3"] {
            assert_eq!(t.host_roles(h).len(), 1, "{h}");
        }
        // Nothing to do when balanced; ineligible hosts are skipped.
        assert!(t.balance(&|_: &str| true).is_empty());
    }

    #[test]
    fn preferred_host_wins_when_eligible() {
        let t = table();
        assert_eq!(
            t.eligible_host("writer", &|_: &str| true).as_deref(),
            Some("db1")
        );
        assert_eq!(
            t.eligible_host("writer", &|h: &str| h != "db1").as_deref(),
            Some("db2")
        );
        assert_eq!(t.eligible_host("writer", &|_: &str| false), None);
    }
}
